"""`multisample models` (the embedded default models) and `multisample config` (schemas and
checks of config files): the commands that set up and inspect, and run nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from multisample.cli.common import Overrides, fail, guarded
from multisample.engine.config import ConfigError, PoolConfig
from multisample.engine.config_files import read_config, validate_config
from multisample.engine.terminal import STDERR, shown
from multisample.jobs.registry import JOBS

models_app = typer.Typer(help="Prepare and list the embedded default models.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and check configuration files.", no_args_is_help=True)

CONFIG_KINDS: dict[str, type[BaseModel]] = {
    "pool": PoolConfig,
    **{name: job.config for name, job in JOBS.items()},
}
"""Config models by name, for `config schema` and `config check`; command plugins
(the `multisample.commands` entry points) may add theirs."""


@models_app.command("prepare")
def models_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to prepare (default: all embedded).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Cache directory (default: $MULTISAMPLE_CACHE or ~/.cache/multisample)."),
    ] = None,
) -> None:
    """Convert the PyPI-shipped GGUF models into folders vLLM loads (idempotent)."""
    from multisample.engine.embedded import EMBEDDED, prepare

    def body() -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=STDERR,
        ) as progress:
            for name in names or list(EMBEDDED):
                folder = prepare(name, cache, progress)
                progress.console.print(f"{name}: {shown(folder)}")

    guarded(body)


@models_app.command("list")
def models_list(
    cache: Annotated[Path | None, typer.Option(help="Cache directory.")] = None,
) -> None:
    """Show the embedded models, their prompt format and where they are prepared."""
    from multisample.engine.embedded import EMBEDDED, MANIFEST_NAME, model_dir

    table = Table("name", "format", "config value", "prepared at")
    for name, spec in EMBEDDED.items():
        folder = model_dir(name, cache)
        where = str(folder) if (folder / MANIFEST_NAME).exists() else "[dim]not prepared[/]"
        table.add_row(name, spec.prompt_format, spec.reference, where)
    Console().print(table)


@config_app.command("schema")
def config_schema(
    kind: Annotated[str, typer.Argument(help="Which config (synthesize, pool, ...).")] = "",
) -> None:
    """Print the JSON schema of a config file (default: the synthesize config)."""
    kind = kind or "synthesize"
    if kind not in CONFIG_KINDS:
        fail(f"unknown config kind {kind!r}; known: {', '.join(CONFIG_KINDS)}")
    typer.echo(json.dumps(CONFIG_KINDS[kind].model_json_schema(), indent=2))


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The YAML config file.")],
    kind: Annotated[
        str | None,
        typer.Option(help="Which config kind the file is (default: guessed from its fields)."),
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Validate a config file; print every problem with its line and field."""
    if kind is not None and kind not in CONFIG_KINDS:
        fail(f"unknown config kind {kind!r}; known: {', '.join(CONFIG_KINDS)}")
    text, data, applied = guarded(lambda: read_config(path, overrides or ()))
    guess = ""
    if kind is None:
        kind, evidence = guess_config_kind(data, CONFIG_KINDS)
        shown = ", ".join(evidence[:3]) + (", ..." if len(evidence) > 3 else "")
        because = f"its field(s) {shown}" if evidence else "no field of another kind"
        guess = f" (checked as a {kind} config, guessed from {because}; --kind to choose)"
    try:
        validate_config(path, CONFIG_KINDS[kind], text, data, applied)
    except ConfigError as exc:
        fail(f"{exc}{guess}")
    typer.echo(f"{path}: ok{guess}")


def guess_config_kind(
    data: dict[str, Any], kinds: dict[str, type[BaseModel]], default: str = "synthesize"
) -> tuple[str, list[str]]:
    """The config kind whose own fields (those no other kind has) the data uses most, and
    those fields; `default` (or the first kind) with none when no kind's own field is there."""
    fields = {kind: set(model.model_fields) for kind, model in kinds.items()}
    best, evidence = (default if default in kinds else next(iter(kinds))), []
    for kind, own in fields.items():
        others = set().union(*(f for k, f in fields.items() if k != kind))
        used = [key for key in data if key in own - others]
        if len(used) > len(evidence):
            best, evidence = kind, used
    return best, evidence
