"""`multisample synthesize`: a strategy over a prompts file, into a run directory.

Many prompts' searches run at once (bounded by `concurrency`), so every engine always
has many requests in flight. Every generation is journaled as it is made
(engine/journal.py) and each finished prompt is committed to disk at once; a failure
stops the run with everything finished so far kept, and `--resume` continues it,
replaying the unfinished searches from the journal up to where they stopped.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field
from rich.console import Console

from engine.budget import estimate_flops
from engine.config import BudgetConfig, ConfigError, RunConfig
from engine.journal import Journal
from engine.pool import ModelPool, pool_for
from engine.progress import progress_bar
from engine.prompts import PromptFile, PromptsError, load_prompts
from engine.rewards import RewardSpec, started_reward
from engine.rewards.base import Reward
from engine.rewards.verifiable import VerifiableRewardSpec
from engine.storage import RunDirectory, check_run_directory, read_jsonl
from engine.types import Prompt
from search.base import SearchContext, SearchResult
from search.best_of_n import BestOfNSettings
from search.dataset_card import write_card
from search.pairs import PairSettings, as_text_format, is_conversational, pair_records
from search.registry import StrategySettings, run_strategy
from search.templates import load_templates

logger = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
PAIRS = "pairs.jsonl"
PROMPTS = "prompts.jsonl"
"""Each committed prompt as it was read (its turns, reference, constraints, metadata):
what `multisample export` builds its conversations from."""


class SearchRunConfig(RunConfig):
    """What synthesize and sweep configs share beyond every run's settings: the reward,
    the prompt templates and how many searches run at once."""

    reward: RewardSpec = Field(default_factory=lambda: VerifiableRewardSpec(kind="verifiable"))
    """How responses are scored."""
    templates: dict[str, str] = Field(default_factory=dict)
    """Template files replacing the built-in ones, by name: refine, aggregate, feedback,
    corrector (see search/templates/)."""
    concurrency: int = Field(16, ge=1)
    """Prompts searched at once."""


class SynthesizeConfig(SearchRunConfig):
    """A synthesis run: models, reward, strategy, budget, prompts and outputs."""

    strategy: StrategySettings = Field(default_factory=BestOfNSettings)
    """The search strategy and its settings; `kind` names it."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    """What each prompt's search may spend."""
    pairs: PairSettings = Field(default_factory=PairSettings)
    """How DPO preference pairs are built from each prompt's samples."""
    seed: int = 0
    """Base seed: every generation's seed derives from it, the prompt id and its index."""


@dataclass
class LiveStats:
    """Live figures for the progress bar."""

    started: float = field(default_factory=time.perf_counter)
    generations: int = 0
    completion_tokens: int = 0
    best: list[float] = field(default_factory=list)

    def add(self, result: SearchResult) -> None:
        self.generations += int(result.spend["generations"])
        self.completion_tokens += sum(c.completion_tokens for c in result.candidates)
        best = result.best()
        if best is not None and best.reward is not None:
            self.best.append(best.reward)

    def line(self) -> str:
        rate = self.completion_tokens / max(time.perf_counter() - self.started, 1e-9)
        best = f"{statistics.fmean(self.best):.3f}" if self.best else "-"
        return f"{self.generations} gens | {rate:,.0f} tok/s | mean best {best}"


def check_models(config: SynthesizeConfig) -> None:
    """Model names a strategy or judge refers to must exist in the pool (before any start)."""
    names = config.model_names()
    for model in config.strategy.models_used(names):
        if model not in names:
            raise ConfigError(f"strategy: no model named {model!r}; configured: {names}")
    try:
        config.strategy.check_pool(names)
    except ValueError as exc:
        raise ConfigError(f"strategy: {exc}") from None


def check_system_turns(config: RunConfig, prompts: PromptFile, models: list[str]) -> None:
    """A prompt with a system turn of its own cannot go to a model whose spec has a
    system prompt: the conversation would hold two (checked before any engine starts)."""
    own = next((p for p in prompts.prompts if p.has_system_turn), None)
    if own is None:
        return
    for name in models:
        if config.model(name).system_prompt:
            raise PromptsError(
                f"{prompts.where(own.id)}: prompt {own.id!r} has a system turn of its own, and "
                f"model {name!r} has a system_prompt: a conversation takes one; drop either"
            )


async def preflight(pool: ModelPool, prompts: PromptFile, models: list[str]) -> None:
    """Every prompt must fit every model's context window, with room for a response."""
    for model in models:
        window = await pool.context_length(model)
        if window is None:
            continue
        counts = await asyncio.gather(
            *(pool.count_tokens(model, p.conversation()) for p in prompts.prompts)
        )
        for prompt, count in zip(prompts.prompts, counts, strict=True):
            if count is not None and count >= window:
                raise PromptsError(
                    f"{prompts.where(prompt.id)}: prompt {prompt.id!r} is {count} tokens, "
                    f"but model {model!r} has a context window of {window}"
                )


def system_prompts(config: RunConfig) -> dict[str, str | None]:
    """Each model name's system prompt (an adapter's is its base model's)."""
    return {name: config.model(name).system_prompt for name in config.model_names()}


def with_metadata(prompt: Prompt, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` with the prompt's metadata (the prompts file's unmapped columns), if any."""
    if not prompt.metadata:
        return records
    return [{**record, "metadata": prompt.metadata} for record in records]


def prompt_record(prompt: Prompt) -> dict[str, Any]:
    """A prompts.jsonl record: the prompt as read, its id as `prompt_id` (as every record
    of a run directory names it)."""
    record = prompt.model_dump(mode="json")
    return {"prompt_id": record.pop("id"), **record}


def tree_path(prompt_id: str) -> str:
    """Relative path of a prompt's tree; ids may hold any character, file names may not."""
    return f"trees/{quote(prompt_id, safe='')}.json"


def summarize(
    run: RunDirectory,
    config: SynthesizeConfig,
    parameters: Callable[[str], float | None],
    wall_s: float,
    gen_tokens: int,
) -> dict[str, Any]:
    """Figures over every prompt on disk (so a resumed run's summary covers all of it)."""
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    spend: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(int))
    for record in run.records(SAMPLES):
        by_prompt[record["prompt_id"]].append(record)
        model = spend[record["model"]]
        model["generations"] += 1
        model["prompt_tokens"] += record["prompt_tokens"]
        model["completion_tokens"] += record["completion_tokens"]
        model["flops"] += estimate_flops(
            parameters(record["model"]), record["prompt_tokens"] + record["completion_tokens"]
        )
    scored = {pid: [r for r in rows if r["reward"] is not None] for pid, rows in by_prompt.items()}
    first = [min(rows, key=lambda r: r["id"])["reward"] for rows in scored.values() if rows]
    best = [max(r["reward"] for r in rows) for rows in scored.values() if rows]
    every = [r["reward"] for rows in scored.values() for r in rows]
    pairs = run.records(PAIRS)
    return {
        "status": "complete",
        "strategy": config.strategy.kind,
        "prompts": len(by_prompt),
        "samples": sum(len(rows) for rows in by_prompt.values()),
        "pairs": len(pairs),
        "mean_reward_first_sample": statistics.fmean(first) if first else None,
        "mean_reward_best": statistics.fmean(best) if best else None,
        "mean_reward_all": statistics.fmean(every) if every else None,
        "spend_per_model": {m: dict(v) for m, v in sorted(spend.items())},
        "this_session": {
            "wall_s": round(wall_s, 2),
            "completion_tokens": gen_tokens,
            "completion_tokens_per_s": round(gen_tokens / wall_s, 1) if wall_s else None,
        },
    }


async def run_all(searches: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run every coroutine at once; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for search in searches:
                group.create_task(search)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


@dataclass
class RunJob:
    """The searches of one run directory: a synthesize run is one job, each cell of a
    sweep is another. `search` runs one prompt and commits it at once; `finish` writes
    the summary over every prompt on disk."""

    config: SynthesizeConfig
    run: RunDirectory
    ctx: SearchContext
    todo: list[Prompt]
    """Prompts not yet committed, in file order."""
    done: int
    """Prompts committed before this session (a resumed run)."""
    stats: LiveStats = field(default_factory=LiveStats)
    events_at_start: dict[str, dict[str, int]] = field(default_factory=dict)
    """The pool's fault counters when the job opened (engine restarts, retries)."""
    text_pairs: bool = False
    """The run's pairs.jsonl is in the older text format (a run resumed from before pairs
    carried the conversation): keep writing that, so the file never mixes formats."""

    @cached_property
    def system_prompts(self) -> dict[str, str | None]:
        """Each model name's system prompt, for the pairs' prompts (once per run)."""
        return system_prompts(self.config)

    @classmethod
    def open(
        cls,
        config: SynthesizeConfig,
        prompts: PromptFile,
        templates: dict[str, str],
        run_path: Path,
        resume: bool,
        pool: ModelPool,
        reward: Reward,
    ) -> RunJob:
        """Create (or reopen, to resume) the run directory and list what is left to do."""
        run = RunDirectory.open(run_path, config, resume)
        done = run.completed()
        todo = [p for p in prompts.prompts if p.id not in done]
        journal = Journal.open(run.path, done)
        ctx = SearchContext(
            pool, reward, config.sampling, config.budget, config.seed, templates, journal
        )
        first_pair = next(iter(read_jsonl(run.path / PAIRS)), None)
        text_pairs = first_pair is not None and not is_conversational(first_pair)
        if text_pairs:
            logger.info("%s: resuming in the run's older (text) pairs format", run.path / PAIRS)
        return cls(
            config, run, ctx, todo, len(done), events_at_start=pool.events(), text_pairs=text_pairs
        )

    def pairs(self, prompt: Prompt, result: SearchResult) -> list[dict[str, Any]]:
        """The prompt's pair records, in the run's format."""
        records = pair_records(
            prompt,
            result.candidates,
            self.config.pairs,
            self.config.seed,
            self.system_prompts,
        )
        return [as_text_format(r) for r in records] if self.text_pairs else records

    async def search(self, prompt: Prompt, gate: asyncio.Semaphore) -> SearchResult:
        """Search one prompt once `gate` lets it in, then commit its records."""
        async with gate:
            result = await run_strategy(prompt, self.ctx, self.config.strategy)
        self.run.commit_prompt(
            prompt.id,
            {
                SAMPLES: with_metadata(prompt, result.sample_records()),
                PAIRS: with_metadata(prompt, self.pairs(prompt, result)),
                PROMPTS: [prompt_record(prompt)],
            },
            {tree_path(prompt.id): result.tree_document()},
        )
        if self.ctx.journal is not None:
            self.ctx.journal.complete(prompt.id)
        self.stats.add(result)
        return result

    def finish(self, pool: ModelPool, missing_scores: int | None = None) -> dict[str, Any]:
        """Write summary.json (last: it marks the run directory complete); return it.
        `missing_scores`: this session's stand-in scores (Reward.missing_scores), when the
        job had the reward to itself."""
        wall = time.perf_counter() - self.stats.started
        journal = self.ctx.journal
        # What the engines made this session; replayed generations were made before.
        tokens = (
            self.stats.completion_tokens if journal is None else journal.counts.completion_tokens
        )
        summary = summarize(self.run, self.config, pool.parameters, wall, tokens)
        session = summary["this_session"]
        if journal is not None:
            session["generations"] = journal.counts.generations
            session["generations_replayed"] = journal.counts.replayed
            journal.remove()  # every prompt is committed
        session["events"] = pool.events_since(self.events_at_start)
        if missing_scores is not None:
            session["missing_scores"] = missing_scores
        # The card before the summary: a complete run (summary.json) always has one.
        write_card(self.run.path, self.config, summary)
        self.run.write_summary(summary)
        return summary


async def synthesize(
    config: SynthesizeConfig,
    run_path: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """Run the strategy over every prompt not yet done; return the summary.

    `pool`, when given, must be started and hold the config's models; it is left running
    (sweeps and tests share one). Otherwise the config's pool is started and stopped here.
    """
    check_models(config)
    prompts = load_prompts(config.prompts, config.limit)
    check_system_turns(config, prompts, config.strategy.models_used(config.model_names()))
    templates = load_templates(config.templates)
    check_run_directory(run_path, config, resume)  # before the engines' minute of starting
    console = console or Console(stderr=True)
    async with pool_for(config, config.sampling, console, pool) as started:
        return await _run(config, prompts, templates, run_path, resume, console, started)


async def _run(
    config: SynthesizeConfig,
    prompts: PromptFile,
    templates: dict[str, str],
    run_path: Path,
    resume: bool,
    console: Console,
    pool: ModelPool,
) -> dict[str, Any]:
    async with started_reward(config.reward, pool) as reward:
        await preflight(pool, prompts, config.strategy.models_used(pool.names))
        # Only now, with engines up and inputs checked, does the run directory appear.
        job = RunJob.open(config, prompts, templates, run_path, resume, pool, reward)
        if job.done:
            console.print(f"resuming: {job.done} prompts done, {len(job.todo)} to go")
        gate = asyncio.Semaphore(config.concurrency)

        with progress_bar(console) as bar:
            task = bar.add_task(config.strategy.kind, total=len(job.todo), line="")

            async def one(prompt: Prompt) -> None:
                await job.search(prompt, gate)
                bar.update(task, advance=1, line=job.stats.line())

            await run_all(one(prompt) for prompt in job.todo)
    return job.finish(pool, reward.missing_scores())
