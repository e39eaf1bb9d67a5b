"""The `multisample` command: its global options, and every command in its place. A
package of your own adds commands through the `multisample.commands` entry-point group
(`register(app, config_kinds)`)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from multisample.cli.common import bare_resume_as_empty, fail
from multisample.cli.data import export_command, train_command
from multisample.cli.runs import (
    select_command,
    serve_command,
    sweep_command,
    synthesize_command,
)
from multisample.cli.setup import CONFIG_KINDS, config_app, models_app
from multisample.cli.show import show_command
from multisample.engine.terminal import LEVELS, STDERR, configure_logging, log_level
from multisample.version import package_version


class _Command(TyperGroup):
    """The root command. `--resume` takes the run directory (`--resume RUN_DIR`), and
    alone (last, or before another option) it still means "the run --name": given no
    value there, it is handed the empty string, which the run commands read that way."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_resume_as_empty(args))


app = typer.Typer(
    name="multisample",
    cls=_Command,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("synthesize")(synthesize_command)
app.command("sweep")(sweep_command)
app.command("select")(select_command)
app.command("serve")(serve_command)
app.command("show")(show_command)
app.command("train")(train_command)
app.command("export")(export_command)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")


def print_version(value: bool) -> None:
    if value:
        typer.echo(f"multisample {package_version()}")
        raise typer.Exit()


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


def load_plugins() -> None:
    """Add the commands of the installed packages' `multisample.commands` entry points."""
    for entry in entry_points(group="multisample.commands"):
        entry.load()(app, CONFIG_KINDS)
