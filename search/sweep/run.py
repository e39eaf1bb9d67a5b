"""`multisample sweep`: methods x budgets x seeds over one prompts file, quality vs compute.

Each (method, budget, seed) cell is a synthesize run directory of its own,
`<sweep>/cells/<method>-b<budget>-s<seed>/`, so every prompt is committed as soon as its
search ends and `--resume` continues a cell where it stopped. All cells' prompts share
one model pool and one concurrency gate: while the last prompts of a cell finish, the
next cells' prompts already fill the engines, which never idle at a cell boundary.
The longest searches (most generation rounds in sequence) start first, and short ones
fill the tail.

Every cell is a fresh search: its seed derives from the sweep seed and the budget, so a
larger budget is never a replay of a smaller one's samples. All methods at one budget
and seed share that seed (common random numbers for the paired comparison). A best_of_n
method may instead take its smaller budgets as prefixes of its largest search
(`reuse_prefix: true`).

With `eval_reward`, a second reward evaluates what the selection reward (`reward`)
picked: once every search is done, the evaluation reward (started once per sweep) scores
every scored sample, prompt by prompt, into `cells/<cell>/eval_scores.jsonl` beside the
cell's samples (so `--resume` continues it too). Without it, the selection reward
evaluates, and the best reward is an oracle best-of-N.

Outputs, next to `cells/`: `table.csv` / `table.parquet` (one row per method x budget x
seed), `units.csv` / `units.parquet` (one row per prompt of each cell), `curves.csv`
(per method x budget, with 95% intervals over prompts), `plots/`, `report.md`, and
`summary.json` written last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console

from multisample.engine.pool import ModelPool
from multisample.engine.progress import progress_bar
from multisample.engine.prompts import PromptFile, load_prompts, refuse_two_system_turns
from multisample.engine.rewards.base import Reward, started_reward
from multisample.engine.run_session import preflight, run_all, running
from multisample.engine.storage import RunDirectory, check_run_directory
from multisample.engine.traps import check_reward_inputs
from multisample.engine.types import Prompt
from multisample.search.steps import check_separators
from multisample.search.sweep.config import Cell, SweepConfig, cell_path
from multisample.search.sweep.evaluation import evaluate_cells, searches_done
from multisample.search.sweep.outputs import write_outputs
from multisample.search.synthesize.job import LiveStats, RunJob
from multisample.search.templates import load_templates


async def sweep(
    config: SweepConfig,
    path: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """Run every cell's search not yet done, then write the tables, plots and report;
    return the summary. A resumed sweep whose searches are all done starts no engine and
    only rebuilds its outputs.

    `pool`, when given, must be started and hold the config's models; it is left running.
    """
    prompts = load_prompts(config.prompts, config.limit)
    models = config.models_used()
    refuse_two_system_turns(prompts, {m: config.model(m).system_prompt for m in models}, "model")
    check_reward_inputs(config.reward, prompts, "reward")
    check_separators(
        [(f"methods[{i}].strategy", m.strategy) for i, m in enumerate(config.methods)],
        config.reward,
        prompts,
    )
    if config.eval_reward is not None:
        check_reward_inputs(config.eval_reward, prompts, "eval_reward")
    templates = load_templates(config.templates)
    console = console or Console(stderr=True)
    # Refused before any engine starts: a new sweep over an existing one, another config.
    if check_run_directory(path, config, resume) and searches_done(config, path):
        sweep_dir = RunDirectory.open(path, config, resume=True)
        console.print("every cell is done: rebuilding the tables, plots and report")
        return write_outputs(config, path, sweep_dir, prompts, None)
    # The selection reward is started (and closed) around the searches alone: an
    # evaluation reward's engine then starts with the selection reward's gone.
    async with running(config, path, resume, console=console, pool=pool) as (started, _):
        return await _run(config, prompts, templates, path, resume, console, started)


async def _run(
    config: SweepConfig,
    prompts: PromptFile,
    templates: dict[str, str],
    path: Path,
    resume: bool,
    console: Console,
    pool: ModelPool,
) -> dict[str, Any]:
    async with started_reward(config.reward, pool) as reward:
        await preflight(pool, prompts, config.models_used())
        # Only now, with engines up and inputs checked, does the sweep directory appear.
        sweep_dir = RunDirectory.open(path, config, resume)
        jobs = _open_jobs(config, prompts, templates, path, resume, pool, reward)
        open_jobs = {c: j for c, j in jobs.items() if j.todo}
        if len(open_jobs) < len(jobs) or any(j.done for j in jobs.values()):
            console.print(
                f"resuming: {len(jobs) - len(open_jobs)} of {len(jobs)} cells done, "
                f"{sum(len(j.todo) for j in open_jobs.values())} searches to go"
            )
        stats, search_s = await _search_cells(config, open_jobs, len(jobs), console, pool)
        missing = reward.missing_scores()
    eval_missing = await evaluate_cells(config, path, prompts, pool, console)
    session = {
        "search_wall_s": round(search_s, 2),
        "completion_tokens": stats.completion_tokens,
        "completion_tokens_per_s": round(stats.completion_tokens / search_s, 1)
        if search_s
        else None,
        "missing_scores": missing,
    }
    if eval_missing is not None:
        session["eval_missing_scores"] = eval_missing
    return write_outputs(config, path, sweep_dir, prompts, session)


def _open_jobs(
    config: SweepConfig,
    prompts: PromptFile,
    templates: dict[str, str],
    path: Path,
    resume: bool,
    pool: ModelPool,
    reward: Reward,
) -> dict[Cell, RunJob]:
    """Every search cell's run, opened (or reopened to resume); a cell whose prompts were
    all committed but whose summary was not gets its summary now."""
    jobs = {
        cell: RunJob.open(
            config.cell_config(cell),
            prompts,
            templates,
            cell_path(path, cell),
            resume,
            pool,
            reward,
            lock=False,  # the sweep's directory is held: one lock for all its cells
        )
        for cell in config.searches()
    }
    for job in jobs.values():
        if not job.todo and not job.run.is_complete():
            job.finish(pool)
    return jobs


def _longest_first(config: SweepConfig, cells: Iterable[Cell], pool: ModelPool) -> list[Cell]:
    """Longest searches first (most generation rounds one after another, then the largest
    budget): they start early and the short ones fill the tail."""

    def rounds(cell: Cell) -> float:
        return config.method(cell.method).strategy.sequential_rounds(cell.budget, pool.names)

    return sorted(cells, key=lambda c: (-rounds(c), -c.budget, c))


async def _search_cells(
    config: SweepConfig,
    open_jobs: dict[Cell, RunJob],
    cells: int,
    console: Console,
    pool: ModelPool,
) -> tuple[LiveStats, float]:
    """Run every open cell's remaining searches side by side, `config.concurrency` at a
    time, finishing each cell as its last search ends; the live figures and the seconds
    it took. `cells` counts all cells, the finished ones included."""
    stats = LiveStats()
    started = time.perf_counter()
    gate = asyncio.Semaphore(config.concurrency)
    left = {cell: len(job.todo) for cell, job in open_jobs.items()}
    finished = cells - len(open_jobs)
    with progress_bar(console) as bar:
        task = bar.add_task("sweep", total=sum(left.values()), line="")

        async def one(cell: Cell, prompt: Prompt) -> None:
            nonlocal finished
            job = open_jobs[cell]
            stats.add(await job.search(prompt, gate))
            left[cell] -= 1
            if not left[cell]:
                job.finish(pool)
                finished += 1
            bar.update(task, advance=1, line=f"{finished}/{cells} cells | {stats.line()}")

        order = _longest_first(config, open_jobs, pool)
        await run_all(one(cell, p) for cell in order for p in open_jobs[cell].todo)
    return stats, time.perf_counter() - started
