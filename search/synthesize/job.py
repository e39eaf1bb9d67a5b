"""The searches of one run directory (`RunJob`): a synthesize run is one, each cell of a
sweep another. A prompt's search runs once the concurrency gate lets it in, and its
records are committed as soon as it ends; the summary (and the dataset card) is written
over every prompt on disk when the last one is done."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from multisample.engine.journal import Journal
from multisample.engine.pool import ModelPool
from multisample.engine.prompts import PromptFile
from multisample.engine.rewards.base import Reward
from multisample.engine.storage import RunDirectory, read_jsonl
from multisample.engine.types import Prompt
from multisample.search.base import SearchContext, SearchResult
from multisample.search.pairs import as_text_format, is_conversational, pair_records
from multisample.search.registry import run_strategy
from multisample.search.synthesize.card import write_card
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import (
    PAIRS,
    PROMPTS,
    SAMPLES,
    SynthesizeRun,
    prompt_record,
    summarize,
    tree_path,
    with_metadata,
)

logger = logging.getLogger(__name__)


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
        return self.config.system_prompts()

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
        *,
        lock: bool = True,
    ) -> RunJob:
        """Create (or reopen, to resume) the run directory and list what is left to do;
        `lock=False` for a sweep's cell (the sweep's directory is held already)."""
        run = SynthesizeRun.open(run_path, config, resume, lock=lock)
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
        summary = summarize(self.run, self.config.strategy.kind, pool.parameters, wall, tokens)
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
