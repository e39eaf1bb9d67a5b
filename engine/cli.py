"""The `multisample` command.

The engine owns the command and its engine-level subcommands (models, config). The
packages that stand on the engine (search, bandits) add their own subcommands through
the `multisample.commands` entry-point group, so the engine never imports them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.backends.base import BackendError
from engine.config import ConfigError, PoolConfig, load_config
from engine.rewards.base import RewardError
from engine.storage import RunDirectoryError

app = typer.Typer(
    name="multisample",
    help="Test-time compute and multi-agent sampling over a pool of models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare and list the embedded default models.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and check configuration files.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

stderr = Console(stderr=True)
CONFIG_KINDS: dict[str, type[BaseModel]] = {"pool": PoolConfig}
"""Config models by name, for `config schema` and `config check`; plugins add theirs."""

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a user-facing error (no traceback) and exit non-zero."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: reported in one line, without a traceback."""
    from engine.embedded import EmbeddedModelError
    from engine.model_folders import ModelFolderError

    return (
        ConfigError,
        BackendError,
        RewardError,
        RunDirectoryError,
        EmbeddedModelError,
        ModelFolderError,
    )


# The options every run command shares (synthesize, sweep, select).
RunName = Annotated[
    str | None, typer.Option("--name", help="Run name (default: config name + UTC time).")
]
OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", help="Parent of the run directory (default: the config's)."),
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Continue the run --name where it stopped; nothing is redone."),
]


def run_directory(config: Path, output_dir: str | Path, name: str | None) -> Path:
    """Where a run of `config` goes: --name, or the config's name and the UTC time."""
    return Path(output_dir) / (name or f"{config.stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}")


def guarded(function: Callable[[], T]) -> T:
    """Run a command body; report user errors cleanly and keep Ctrl-C quiet."""
    try:
        return function()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept (use --resume to continue)", code=130)
    except OSError as exc:
        fail(f"{getattr(exc, 'filename', None) or ''}: {exc.strerror or exc}".lstrip(": "))


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
    from engine.embedded import EMBEDDED, prepare

    def body() -> None:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=stderr,
        ) as progress:
            for name in names or list(EMBEDDED):
                folder = prepare(name, cache, progress)
                progress.console.print(f"{name}: {folder}")

    guarded(body)


@models_app.command("list")
def models_list(
    cache: Annotated[Path | None, typer.Option(help="Cache directory.")] = None,
) -> None:
    """Show the embedded models, their prompt format and where they are prepared."""
    from engine.embedded import EMBEDDED, MANIFEST_NAME, model_dir

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
    kind = kind or ("synthesize" if "synthesize" in CONFIG_KINDS else "pool")
    if kind not in CONFIG_KINDS:
        fail(f"unknown config kind {kind!r}; known: {', '.join(CONFIG_KINDS)}")
    typer.echo(json.dumps(CONFIG_KINDS[kind].model_json_schema(), indent=2))


@config_app.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The YAML config file.")],
    kind: Annotated[str, typer.Option(help="Which config kind the file is.")] = "synthesize",
) -> None:
    """Validate a config file; print every problem with its line and field."""
    if kind not in CONFIG_KINDS:
        fail(f"unknown config kind {kind!r}; known: {', '.join(CONFIG_KINDS)}")
    guarded(lambda: load_config(path, CONFIG_KINDS[kind]))
    typer.echo(f"{path}: ok")


def _load_plugins() -> None:
    for entry in entry_points(group="multisample.commands"):
        entry.load()(app, CONFIG_KINDS)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    _load_plugins()
    app()
