"""The `multisample` command.

The engine owns the command and its engine-level subcommands (models, config). The
packages that stand on the engine (search, bandits) add their own subcommands through
the `multisample.commands` entry-point group, so the engine never imports them.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from engine.backends.base import BackendError
from engine.config import ConfigError, PoolConfig, read_config, validate_config
from engine.rewards.base import RewardError
from engine.storage import CONFIG, RunDirectoryError
from engine.terminal import LEVELS, STDERR, configure_logging, log_level


class _Command(TyperGroup):
    """The root command. `--resume` takes the run directory (`--resume RUN_DIR`), and
    alone (last, or before another option) it still means "the run --name": given no
    value there, it is handed the empty string, which the run commands read that way."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_resume_as_empty(args))


def bare_resume_as_empty(args: list[str]) -> list[str]:
    """`--resume` followed by nothing or by another option becomes `--resume=`."""
    rewritten = []
    for index, arg in enumerate(args):
        if arg == "--":
            return rewritten + args[index:]
        follows = args[index + 1] if index + 1 < len(args) else None
        bare = arg == "--resume" and (follows is None or follows.startswith("-"))
        rewritten.append("--resume=" if bare else arg)
    return rewritten


app = typer.Typer(
    name="multisample",
    cls=_Command,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare and list the embedded default models.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and check configuration files.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

stderr = STDERR
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
    str | None,
    typer.Option(
        "--name",
        help="Run name: a folder name under the output directory, not a path "
        "(default: config name + UTC time).",
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", help="Parent of the run directory (default: the config's)."),
]
Resume = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="RUN_DIR",
        help="Continue a stopped run where it stopped (nothing finished is redone): the "
        "run directory the command printed, or alone with --name.",
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="PATH=VALUE",
        help="Override a config value before it is checked, e.g. budget.generations=8 or "
        "models.smollm2.max_model_len=4096 (a list entry by index or name); VALUE is "
        "YAML. Repeatable.",
    ),
]


def check_run_name(name: str) -> None:
    """A run name is a folder name: where it goes is --output-dir's business."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if not name or name in {".", ".."} or any(s in name for s in separators):
        fail(
            f"--name {name!r}: a run name is a folder name, not a path; "
            "give the parent folder with --output-dir"
        )


def run_directory(config: Path, output_dir: str | Path, name: str | None) -> Path:
    """Where a new run of `config` goes: --name, or the config's name and the UTC time."""
    if name is not None:
        check_run_name(name)
    return Path(output_dir) / (name or f"{config.stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}")


def run_target(
    config: Path,
    output_dir: Path | None,
    default_output_dir: str | Path,
    name: str | None,
    resume: str | None,
) -> tuple[Path, bool]:
    """The run directory a command writes and whether it resumes it, from --output-dir,
    --name and --resume (None: not given; "": given alone; else the run directory, or a
    run's name under the output directory)."""
    parent = Path(output_dir if output_dir is not None else default_output_dir)
    if not resume:
        if resume == "" and name is None:
            fail("--resume needs --name of the run to continue, or its directory: --resume RUN_DIR")
        return run_directory(config, parent, name), resume == ""
    given = Path(resume)
    path = given if given.is_dir() or len(given.parts) != 1 else parent / given
    if not (path / CONFIG).is_file():
        fail(f"--resume {resume}: not a run directory (no {path / CONFIG})")
    if name is not None and name != path.name:
        fail(f"--resume {resume} names another run than --name {name}; give one of them")
    if output_dir is not None and output_dir.resolve() != path.resolve().parent:
        fail(f"--resume {resume} is not under --output-dir {output_dir}; give one of them")
    return path, True


def guarded(function: Callable[[], T]) -> T:
    """Run a command body; report user errors cleanly and keep Ctrl-C quiet."""
    try:
        return function()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept (continue with --resume RUN_DIR)", code=130)
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


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"multisample {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed package's version, or the checkout's pyproject.toml's when run from
    a source tree that is not installed."""
    try:
        return version("multisample")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


@app.callback()
def global_options(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More log detail: -v shows progress notes and the engines' (Ray, vLLM) "
            "messages, -vv debug records.",
        ),
    ] = 0,
    level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help=f"Log level ({', '.join(LEVELS)}); overrides -v. Default: WARNING.",
            case_sensitive=False,
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Test-time compute and multi-agent sampling over a pool of models.

    Logs go to standard error, above the progress bar; these options precede the command.
    """
    if level is not None and level.upper() not in LEVELS:
        fail(f"--log-level {level}: not a level; one of {', '.join(LEVELS)}")
    configure_logging(log_level(verbose, level), STDERR)


def _load_plugins() -> None:
    for entry in entry_points(group="multisample.commands"):
        entry.load()(app, CONFIG_KINDS)


def main() -> None:
    _load_plugins()
    app()
