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
from bandits.select.config import STDIN, CandidateSpec, RewardPreference
from engine.cli import OutputDir, Overrides, Resume, RunName, guarded, run_target
from engine.config import load_config
from engine.prompts import load_prompts
from engine.terminal import STDERR
from engine.traps import check_judge_templates, judges_generating, unconstrained_prompts, warn


def register(app: typer.Typer, config_kinds: dict[str, type[BaseModel]]) -> None:
    config_kinds["select"] = SelectConfig
    app.command("select")(select_command)


def select_command(
    config: Annotated[
        Path, typer.Argument(help="YAML config (see `multisample config schema select`).")
    ],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
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

    def body() -> dict[str, Any]:
        settings = load_config(config, SelectConfig, overrides or ())
        if rounds is not None:
            settings = settings.model_copy(update={"rounds": rounds})
        if interactive:
            settings = settings.model_copy(update={"feedback": HumanPreference()})
        run_path, resuming = run_target(config, output_dir, settings.output_dir, name, resume)
        warn(select_traps(settings))
        summary = asyncio.run(run_select(settings, run_path, resume=resuming, console=STDERR))
        summary["run_dir"] = str(run_path)
        return summary

    print_summary(guarded(body))


def select_traps(config: SelectConfig) -> list[str]:
    """Warnings about a select config that runs but does not do what was meant (a judge
    template that cannot work is a ConfigError), made before any engine starts."""
    if not isinstance(config.feedback, RewardPreference):
        return []
    reward, field = config.feedback.reward, "feedback.reward"
    check_judge_templates(reward, field)
    messages = []
    if config.prompts != STDIN:
        prompts = load_prompts(config.prompts, config.limit).prompts
        messages += unconstrained_prompts(reward, prompts, field)
    implicit = [CandidateSpec(name=n, model=n) for n in config.model_names()]
    if config.candidates == implicit:  # left out: every pool model is a candidate
        models = [c.model for c in config.candidates]
        messages += judges_generating(reward, field, models, "candidates")
    return messages


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
