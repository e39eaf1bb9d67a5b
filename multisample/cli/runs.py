"""`multisample synthesize`, `sweep` and `select`: the jobs of multisample.jobs, each run
from a config file with the options that place a run, and its summary printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from multisample.bandits.select.config import HumanPreference
from multisample.cli.common import OutputDir, Overrides, Resume, RunName, run_job
from multisample.engine.terminal import shown
from multisample.jobs.registry import JOBS


def synthesize_command(
    config: Annotated[Path, typer.Argument(help="YAML config (see `multisample config schema`).")],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
) -> None:
    """Run a search strategy over a prompts file; write samples, DPO pairs and trees."""
    updates = {} if limit is None else {"limit": limit}
    summary = run_job(JOBS["synthesize"], config, name, output_dir, resume, overrides, updates)
    print_synthesize_summary(summary)


def sweep_command(
    config: Annotated[Path, typer.Argument(help="YAML sweep config (`config schema sweep`).")],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
) -> None:
    """Methods x budgets x seeds over one prompts file: quality against compute."""
    summary = run_job(JOBS["sweep"], config, name, output_dir, resume, overrides)
    console = Console()
    console.print(f"[bold]sweep:[/] {shown(summary['run_dir'])}")
    console.print(
        f"{summary['cells']} cells ({len(summary['methods'])} methods x "
        f"{len(summary['budgets'])} budgets x {len(summary['seeds'])} seeds), "
        f"{summary['prompts']} prompts each"
    )
    console.print("best reward at each budget (lead over the runner-up, paired t-test):")
    for lead in summary["best_per_budget"].get("best_reward", []):
        line = f"  {lead['budget']:>4} generations: {lead['method']} {lead['mean']:.3f}"
        if lead["runner_up"] is not None and lead["p_value"] is not None:
            verdict = "significant" if lead["significant"] else "not significant"
            line += (
                f" ({lead['lead']:+.3f} over {lead['runner_up']}, "
                f"p = {lead['p_value']:.2g}, {verdict})"
            )
        console.print(line, soft_wrap=True)
    console.print(f"report: {shown(Path(summary['run_dir']) / 'report.md')}")


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
    updates: dict[str, Any] = {} if rounds is None else {"rounds": rounds}
    if interactive:
        updates["feedback"] = HumanPreference()
    summary = run_job(JOBS["select"], config, name, output_dir, resume, overrides, updates)
    print_select_summary(summary)


def print_synthesize_summary(summary: dict[str, Any]) -> None:
    console = Console()
    first, best = summary["mean_reward_first_sample"], summary["mean_reward_best"]
    console.print(f"[bold]run:[/] {shown(summary['run_dir'])}")
    console.print(
        f"{summary['prompts']} prompts, {summary['samples']} samples, {summary['pairs']} DPO pairs "
        f"({shown(summary['strategy'])})"
    )
    if first is not None and best is not None:
        console.print(
            f"mean reward: first sample {first:.3f} -> best of the search {best:.3f} "
            f"({best - first:+.3f})"
        )
    rate = summary["this_session"]["completion_tokens_per_s"]
    if rate:
        console.print(f"generated {rate:,.0f} tokens/s")


def print_select_summary(summary: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]run:[/] {shown(summary['run_dir'])} ({summary['status']})")
    console.print(
        f"{summary['rounds']} rounds, {summary['queries']} queries ({summary['policy']}); "
        f"current best: [bold]{shown(summary['best'])}[/]"
    )
    names = summary["candidates"]
    table = Table("wins of \\ over", *map(shown, names), "queries")
    for name, row in zip(names, summary["wins"], strict=True):
        table.add_row(shown(name), *map(str, row), str(summary["queries_per_candidate"][name]))
    console.print(table)
    if summary["cumulative_regret"] is not None:
        regret = summary["cumulative_regret"]
        console.print(
            f"true best: {shown(summary['true_best'])}; cumulative regret strong "
            f"{regret['strong']:.1f}, weak {regret['weak']:.1f}"
        )


def serve_command(
    config: Annotated[Path, typer.Argument(help="YAML serve config (`config schema serve`).")],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
    host: Annotated[str | None, typer.Option(help="Listen here (config's host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen on this port; 0: a free one.")] = None,
) -> None:
    """Answer OpenAI-compatible requests with pool models, routes and selection routes
    until SIGTERM or ctrl-C; the traffic is a run directory."""
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    summary = run_job(JOBS["serve"], config, name, output_dir, resume, overrides, updates)
    console = Console()
    console.print(f"[bold]served:[/] {shown(summary['run_dir'])}")
    for model, count in summary["requests"].items():
        console.print(f"  {shown(model)}: {count} request(s)")
