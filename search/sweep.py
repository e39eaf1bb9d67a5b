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
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import Field, ValidationInfo, field_validator
from rich.console import Console

from engine.config import Settings, model_names, repeated
from engine.pool import ModelPool, pool_for
from engine.progress import progress_bar
from engine.prompts import PromptFile, load_prompts
from engine.rewards import Reward, RewardSpec, started_reward
from engine.rewards.verifiable import VerifiableRewardSpec
from engine.seeds import derive_seed
from engine.storage import SUMMARY, RunDirectory, check_run_directory, read_jsonl
from engine.types import Prompt
from search import sweep_report
from search.registry import STRATEGIES, StrategySettings
from search.synthesize import (
    SAMPLES,
    LiveStats,
    RunJob,
    SearchRunConfig,
    SynthesizeConfig,
    check_system_turns,
    preflight,
    run_all,
)
from search.templates import load_templates

CELLS = "cells"
EVAL_SCORES = "eval_scores.jsonl"
"""A cell's evaluation scores, one line per prompt: {"prompt_id", "scores": {id: score}}."""


class SweepMethod(Settings):
    """One method of a sweep: a name and a strategy with its settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    """How tables, plots and the report call this method; unique within a sweep."""
    strategy: StrategySettings
    """The search strategy and its settings, as `strategy` of a synthesize config."""
    reuse_prefix: bool = False
    """Take each smaller budget's search as the first samples of the largest budget's
    search instead of a fresh one. Only best_of_n allows it (its search at budget b is
    exactly the first b samples of a larger one); it saves the smaller budgets'
    generations, but then the budgets' results are nested, not independent."""


class SweepConfig(SearchRunConfig):
    """An inference-scaling sweep: methods x budgets x seeds over one prompts file."""

    methods: list[SweepMethod] = Field(min_length=1)
    """The methods compared, each a name and a strategy."""
    budgets: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2, 4, 8], min_length=1
    )
    """Generations per prompt of each cell (every call of a policy model counts)."""
    eval_reward: RewardSpec | None = None
    """A reward that evaluates the answers `reward` selects, as inference-scaling papers
    select with one model and evaluate with another; any reward `reward` accepts. None:
    the selection reward evaluates too (every curve is then an oracle best-of-N)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Sweep seeds; every cell's search seed derives from one of them and its budget."""
    concurrency: int = Field(32, ge=1)
    """Prompt searches in flight at once, over all cells together."""
    top_k: int = Field(4, ge=1)
    """k of the 'mean top-k reward' quality measure (a search with fewer scored samples
    averages all it has)."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[SweepMethod], info: ValidationInfo) -> list[SweepMethod]:
        twice = repeated([m.name for m in methods])
        if twice:
            raise ValueError(f"method names must be unique; repeated: {', '.join(twice)}")
        models = model_names(info.data.get("models", []))
        for index, method in enumerate(methods):
            for model in method.strategy.models_used(models) if models else []:
                if model not in models:
                    raise ValueError(
                        f"methods[{index}] ({method.name}): no model named {model!r}; "
                        f"configured: {models}"
                    )
            try:
                method.strategy.check_pool(models) if models else None
            except ValueError as exc:
                raise ValueError(f"methods[{index}] ({method.name}): {exc}") from None
            if method.reuse_prefix and not method.strategy.prefix_reusable:
                reusable = " or ".join(k for k, (s, _) in STRATEGIES.items() if s.prefix_reusable)
                raise ValueError(
                    f"methods[{index}] ({method.name}): reuse_prefix needs a {reusable} "
                    f"strategy (got {method.strategy.kind}): other searches at a smaller "
                    "budget are not a prefix of a larger one"
                )
        return methods

    @field_validator("budgets", "seeds")
    @classmethod
    def _distinct(cls, values: list[int], info: ValidationInfo) -> list[int]:
        twice = repeated(values)
        if twice:
            raise ValueError(f"{info.field_name} must be distinct; repeated: {twice}")
        return values

    def evaluator(self) -> RewardSpec:
        """The reward that evaluates: `eval_reward`, else the selection reward."""
        return self.eval_reward or self.reward

    def evaluator_name(self) -> str | None:
        """The separate evaluation reward's kind, None when the selection reward evaluates."""
        return None if self.eval_reward is None else self.eval_reward.kind

    def method(self, name: str) -> SweepMethod:
        return next(m for m in self.methods if m.name == name)

    def cells(self) -> list[Cell]:
        """Every table row's cell: method x budget x seed, in config order."""
        return [
            Cell(m.name, b, s)
            for m in self.methods
            for b in sorted(self.budgets)
            for s in self.seeds
        ]

    def source(self, cell: Cell) -> Cell:
        """The cell whose search holds `cell`'s samples: itself, or for a method that
        reuses prefixes, the same seed's cell at the largest budget."""
        if self.method(cell.method).reuse_prefix:
            return Cell(cell.method, max(self.budgets), cell.seed)
        return cell

    def searches(self) -> list[Cell]:
        """The cells that run a search of their own (each once)."""
        return list(dict.fromkeys(self.source(c) for c in self.cells()))

    def cell_config(self, cell: Cell) -> SynthesizeConfig:
        """The synthesize config of a cell's own run directory."""
        data = self.model_dump(
            mode="json", exclude={"methods", "budgets", "seeds", "top_k", "eval_reward"}
        )
        data.update(
            strategy=self.method(cell.method).strategy.model_dump(mode="json"),
            budget={"generations": cell.budget},
            seed=cell_seed(cell.seed, cell.budget),
        )
        return SynthesizeConfig.model_validate(data)

    def models_used(self) -> list[str]:
        names = self.model_names()
        used = {model for m in self.methods for model in m.strategy.models_used(names)}
        return [n for n in names if n in used]


@dataclass(frozen=True, order=True)
class Cell:
    method: str
    budget: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-b{self.budget}-s{self.seed}"


def cell_seed(seed: int, budget: int) -> int:
    """The search seed of a cell: fresh for every budget (a larger budget does not replay
    a smaller one's samples), shared by the methods at one budget and seed."""
    return derive_seed("sweep", seed, budget)


def cell_path(path: Path, cell: Cell) -> Path:
    return path / CELLS / cell.name


def searches_done(config: SweepConfig, path: Path) -> bool:
    """Is every cell's search complete on disk (its summary written), and evaluated when
    the sweep has an `eval_reward`?"""
    return all((cell_path(path, c) / SUMMARY).exists() for c in config.searches()) and not any(
        unevaluated(config, cell_path(path, c)) for c in config.searches()
    )


def unevaluated(config: SweepConfig, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """A cell's scored samples by prompt, of the prompts the evaluation reward has not
    scored yet (none without an `eval_reward`)."""
    if config.eval_reward is None:
        return {}
    done = {r["prompt_id"] for r in read_jsonl(folder / EVAL_SCORES)}
    todo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_jsonl(folder / SAMPLES):
        if sample["prompt_id"] not in done and sample["reward"] is not None:
            todo[sample["prompt_id"]].append(sample)
    return dict(todo)


def evaluation_scores(folder: Path) -> dict[str, dict[int, float]]:
    """A cell's evaluation scores: prompt id -> sample id -> score."""
    return {
        r["prompt_id"]: {int(i): float(v) for i, v in r["scores"].items()}
        for r in read_jsonl(folder / EVAL_SCORES)
    }


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk; a torn last line (a kill mid-write) is
    cut first, so the new line never joins it."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
    with path.open("ab") as handle:
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


async def evaluate_cells(
    config: SweepConfig, path: Path, prompts: PromptFile, pool: ModelPool, console: Console
) -> int | None:
    """Score every searched prompt's scored samples with the evaluation reward (started
    once for the whole sweep), one line per prompt; the stand-in scores it gave
    (Reward.missing_scores), or None without an `eval_reward`."""
    if config.eval_reward is None:
        return None
    by_id = {p.id: p for p in prompts.prompts}
    todo = {c: unevaluated(config, cell_path(path, c)) for c in config.searches()}
    async with started_reward(config.eval_reward, pool) as evaluator:
        gate = asyncio.Semaphore(config.concurrency)

        async def one(folder: Path, prompt_id: str, samples: list[dict[str, Any]]) -> None:
            async with gate:
                scores = await evaluator.score(by_id[prompt_id], [s["text"] for s in samples])
            record = {
                "prompt_id": prompt_id,
                "scores": {str(s["id"]): v for s, v in zip(samples, scores, strict=True)},
            }
            _append_line(folder / EVAL_SCORES, record)

        left = sum(len(t) for t in todo.values())
        if left:
            console.print(f"evaluating {left} searches with {config.eval_reward.kind}")
        await run_all(
            one(cell_path(path, cell), prompt_id, samples)
            for cell, cells_todo in todo.items()
            for prompt_id, samples in cells_todo.items()
        )
        return evaluator.missing_scores()


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
    check_system_turns(config, prompts, config.models_used())
    templates = load_templates(config.templates)
    console = console or Console(stderr=True)
    # Refused before any engine starts: a new sweep over an existing one, another config.
    if check_run_directory(path, config, resume) and searches_done(config, path):
        sweep_dir = RunDirectory.open(path, config, resume=True)
        console.print("every cell is done: rebuilding the tables, plots and report")
        return write_outputs(config, path, sweep_dir, prompts, None)
    async with pool_for(config, config.sampling, console, pool) as started:
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


def load_units(config: SweepConfig, path: Path) -> pd.DataFrame:
    """One row per (method, budget, seed, prompt) from the cells on disk; with an
    `eval_reward`, quality is its score of what the selection reward picked."""
    verifiable = isinstance(config.evaluator(), VerifiableRewardSpec)
    evaluated = config.eval_reward is not None
    rows = []
    cache: dict[Cell, tuple[list[dict[str, Any]], dict[str, float]]] = {}
    for cell in config.cells():
        source = config.source(cell)
        if source not in cache:
            folder = cell_path(path, source)
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            samples = list(read_jsonl(folder / SAMPLES))
            if evaluated:
                scores = evaluation_scores(folder)
                for sample in samples:
                    sample["eval_reward"] = scores.get(sample["prompt_id"], {}).get(sample["id"])
            cache[source] = (samples, flops_per_token(summary))
        samples, rates = cache[source]
        first = cell.budget if source != cell else None
        strategy = config.method(cell.method).strategy.kind
        for row in sweep_report.prompt_rows(
            samples, rates, config.top_k, verifiable, first, evaluated
        ):
            rows.append(
                {
                    "method": cell.method,
                    "strategy": strategy,
                    "budget": cell.budget,
                    "seed": cell.seed,
                    **row,
                }
            )
    units = pd.DataFrame(rows)
    per_model = sorted({k for r in rows for k in r if k.startswith(("tokens_", "flops_"))})
    units[per_model] = units[per_model].fillna(0)  # a model a method never called
    tokens = [c for c in per_model if c.startswith("tokens_")]
    units[tokens] = units[tokens].astype(int)
    first = ["method", "strategy", "budget", "seed", "prompt_id", "generations"]
    first += ["prompt_tokens", "completion_tokens", "tokens", *tokens, "flops"]
    first += [c for c in per_model if c.startswith("flops_")]
    units = units[first + [c for c in units.columns if c not in first]]
    # Methods keep the config's order in every table and plot.
    units["method"] = pd.Categorical(units["method"], [m.name for m in config.methods])
    return units


def flops_per_token(summary: dict[str, Any]) -> dict[str, float]:
    """2 x parameters of each model a run used, from its summary (0 when unknown)."""
    rates = {}
    for model, spend in summary["spend_per_model"].items():
        tokens = spend["prompt_tokens"] + spend["completion_tokens"]
        rates[model] = spend.get("flops", 0.0) / tokens if tokens else 0.0
    return rates


def describe_method(method: SweepMethod) -> str:
    settings = method.strategy.model_dump(exclude={"kind"}, exclude_defaults=True)
    parts = [method.strategy.kind, *(f"{k}={v}" for k, v in settings.items())]
    if method.reuse_prefix:
        parts.append("smaller budgets are prefixes of the largest")
    return f"{method.name} ({', '.join(parts)})"


def write_outputs(
    config: SweepConfig,
    path: Path,
    sweep_dir: RunDirectory,
    prompts: PromptFile,
    session: dict[str, Any] | None,
) -> dict[str, Any]:
    """Tables, plots and report from the cells on disk; summary.json last."""
    units = load_units(config, path)
    labels = sweep_report.quality_labels(
        config.top_k,
        isinstance(config.evaluator(), VerifiableRewardSpec),
        config.evaluator_name(),
    )
    table = sweep_report.cell_table(units)
    curve = sweep_report.curves(units, list(labels))
    files = sweep_report.write_table(table, path / "table")
    files += sweep_report.write_table(units, path / "units")
    curve.to_csv(path / "curves.csv", index=False)
    plots = sweep_report.write_plots(curve, labels, path / "plots")
    found = {q: sweep_report.leads(units, q) for q in labels}
    report = sweep_report.markdown_report(
        f"Sweep {path.name}",
        _facts(config, prompts, session),
        curve,
        found,
        labels,
        [str(p.relative_to(path)) for p in plots if p.name != "overview.png"],
    )
    (path / "report.md").write_text(report, encoding="utf-8")
    summary = {
        "status": "complete",
        "cells": len(table),
        "searches": len(config.searches()),
        "prompts": len(prompts.prompts),
        "methods": [m.name for m in config.methods],
        "budgets": sorted(config.budgets),
        "seeds": config.seeds,
        "selection_reward": config.reward.kind,
        "evaluation_reward": config.evaluator().kind,
        "evaluated_separately": config.eval_reward is not None,
        "best_per_budget": {q: [lead_document(lead) for lead in rows] for q, rows in found.items()},
        "outputs": sorted(
            str(p.relative_to(path))
            for p in [*files, *plots, path / "curves.csv", path / "report.md"]
        ),
        "this_session": session,
    }
    sweep_dir.write_summary(summary)
    return summary


def _facts(config: SweepConfig, prompts: PromptFile, session: dict[str, Any] | None) -> list[str]:
    """The report's opening lines: what was swept, and this session's throughput."""
    facts = [
        f"{len(prompts.prompts)} prompts ({config.prompts}) x {len(config.seeds)} seed(s) "
        f"{config.seeds}; budgets {sorted(config.budgets)} generations per prompt",
        "methods: " + "; ".join(describe_method(m) for m in config.methods),
        f"selection reward: {config.reward.kind}; evaluation reward: "
        + (
            f"{config.eval_reward.kind} (separate: quality is its score of the selected answers)"
            if config.eval_reward is not None
            else f"{config.reward.kind} (the same: the best reward is an oracle best-of-N)"
        )
        + f"; sampling: temperature {config.sampling.temperature}, "
        f"max_tokens {config.sampling.max_tokens}",
    ]
    if session is not None:
        facts.append(
            f"searches of this session: {session['search_wall_s']:.0f} s, "
            f"{session['completion_tokens']:,} generated tokens "
            f"({session['completion_tokens_per_s'] or 0:,.0f} tokens/s)"
        )
    return facts


def lead_document(lead: sweep_report.Lead) -> dict[str, Any]:
    """One budget's best method in summary.json."""
    return {
        "budget": lead.budget,
        "method": lead.leader,
        "mean": lead.leader_mean,
        "runner_up": lead.runner_up,
        "lead": lead.lead,
        "prompts": lead.prompts,
        "p_value": lead.p_value,
        "significant": lead.significant,
    }
