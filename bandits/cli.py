"""`multisample select`, added to the engine's command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from bandits.select import HumanPreference, SelectConfig, run_select
from engine.cli import OutputDir, Resume, RunName, fail, guarded, run_directory
from engine.config import load_config


def register(app: typer.Typer, config_kinds: dict[str, type[BaseModel]]) -> None:
    config_kinds["select"] = SelectConfig
    app.command("select")(select_command)


def select_command(
    config: Annotated[
        Path, typer.Argument(help="YAML config (see `multisample config schema select`).")
    ],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    rounds: Annotated[int | None, typer.Option(help="Play at most this many rounds.")] = None,
    interactive: Annotated[
        bool,
        typer.Option("--interactive", help="Judge the answers yourself (feedback kind 'human')."),
    ] = False,
) -> None:
    """Learn online which candidate model is best, from pairwise preferences.

    Each round a bandit policy picks two candidates and both answer a batch of queries.
    A reward model, or you with --interactive, prefers one answer per query.
    The state is saved after every round: --resume continues a stopped run.
    """
    if resume and name is None:
        fail("--resume needs --name of the run to continue")

    def body() -> dict[str, Any]:
        settings = load_config(config, SelectConfig)
        if rounds is not None:
            settings = settings.model_copy(update={"rounds": rounds})
        if interactive:
            settings = settings.model_copy(update={"feedback": HumanPreference()})
        run_path = run_directory(config, output_dir or settings.output_dir, name)
        summary = asyncio.run(run_select(settings, run_path, resume=resume))
        summary["run_dir"] = str(run_path)
        return summary

    print_summary(guarded(body))


def print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]run:[/] {summary['run_dir']} ({summary['status']})")
    console.print(
        f"{summary['rounds']} rounds, {summary['queries']} queries ({summary['policy']}); "
        f"current best: [bold]{summary['best']}[/]"
    )
    names = summary["candidates"]
    table = Table("wins of \\ over", *names, "queries")
    for name, row in zip(names, summary["wins"], strict=True):
        table.add_row(name, *map(str, row), str(summary["queries_per_candidate"][name]))
    console.print(table)
    if summary["cumulative_regret"] is not None:
        regret = summary["cumulative_regret"]
        console.print(
            f"true best: {summary['true_best']}; cumulative regret strong "
            f"{regret['strong']:.1f}, weak {regret['weak']:.1f}"
        )
