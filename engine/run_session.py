"""What every job does between its checks and its results, written once: the run
directory checked before any engine starts, the pool (the given one, or the config's own,
started here) and the reward started, both closed on the way out however the job ends;
and the checks and helpers that need the started pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console

from multisample.engine.config import RunConfig
from multisample.engine.pool import ModelPool, pool_for
from multisample.engine.prompts import PromptFile, PromptsError
from multisample.engine.rewards.base import BaseRewardSpec, Reward, started_reward
from multisample.engine.storage import check_run_directory


class Session(NamedTuple):
    """What a job runs on: the started pool, and its reward when it has one."""

    pool: ModelPool
    reward: Reward | None


@asynccontextmanager
async def running(
    config: RunConfig,
    path: Path,
    resume: bool,
    *,
    console: Console,
    pool: ModelPool | None = None,
    reward: BaseRewardSpec | None = None,
    exclude: set[str] | None = None,
) -> AsyncIterator[Session]:
    """Refuse a run directory that cannot be used as asked (engine.storage, `exclude`
    naming the fields a resume may change) before the engines' minute of starting; then
    the pool (`pool`, started and left running, or the config's own) and `reward` (if
    any), started, and closed on the way out."""
    check_run_directory(path, config, resume, exclude)
    async with AsyncExitStack() as stack:
        started = await stack.enter_async_context(pool_for(config, config.sampling, console, pool))
        scorer = None
        if reward is not None:
            scorer = await stack.enter_async_context(started_reward(reward, started))
        yield Session(started, scorer)


PREFLIGHT_BATCH = 256
"""Prompts whose tokens are counted at once: enough to keep an engine busy, few enough
that a file of a million prompts is not a million tasks."""


async def preflight(pool: ModelPool, prompts: PromptFile, models: list[str]) -> None:
    """Every prompt must fit every model's context window, with room for a response."""
    for model in models:
        window = await pool.context_length(model)
        if window is None:
            continue
        for start in range(0, len(prompts.prompts), PREFLIGHT_BATCH):
            batch = prompts.prompts[start : start + PREFLIGHT_BATCH]
            counts = await asyncio.gather(
                *(pool.count_tokens(model, p.conversation()) for p in batch)
            )
            for prompt, count in zip(batch, counts, strict=True):
                if count is not None and count >= window:
                    raise PromptsError(
                        f"{prompts.where(prompt.id)}: prompt {prompt.id!r} is {count} tokens, "
                        f"but model {model!r} has a context window of {window}"
                    )


async def run_all(searches: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run every coroutine at once (a search per prompt: the engines see all their
    requests); the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for search in searches:
                group.create_task(search)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
