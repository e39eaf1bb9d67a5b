"""`multisample synthesize`: a strategy over a prompts file, into a run directory.

Many prompts' searches run at once (bounded by `concurrency`), so every engine always
has many requests in flight. Every generation is journaled as it is made
(engine/journal.py) and each finished prompt is committed to disk at once; a failure
stops the run with everything finished so far kept, and `--resume` continues it,
replaying the unfinished searches from the journal up to where they stopped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console

from multisample.engine.pool import ModelPool
from multisample.engine.progress import progress_bar
from multisample.engine.prompts import load_prompts, refuse_two_system_turns
from multisample.engine.run_session import preflight, run_all, running
from multisample.engine.traps import check_reward_inputs
from multisample.engine.types import Prompt
from multisample.search.steps import check_separators
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.job import RunJob
from multisample.search.templates import load_templates


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
    config.check_models()
    prompts = load_prompts(config.prompts, config.limit)
    models = config.strategy.models_used(config.model_names())
    refuse_two_system_turns(prompts, {m: config.model(m).system_prompt for m in models}, "model")
    check_reward_inputs(config.reward, prompts, "reward")
    check_separators([("strategy", config.strategy)], config.reward, prompts)
    templates = load_templates(config.templates)
    console = console or Console(stderr=True)
    session = running(config, run_path, resume, console=console, pool=pool, reward=config.reward)
    async with session as (started, reward):
        assert reward is not None
        await preflight(started, prompts, config.strategy.models_used(started.names))
        # Only now, with engines up and inputs checked, does the run directory appear.
        job = RunJob.open(config, prompts, templates, run_path, resume, started, reward)
        if job.done:
            console.print(f"resuming: {job.done} prompts done, {len(job.todo)} to go")
        gate = asyncio.Semaphore(config.concurrency)
        with progress_bar(console) as bar:
            task = bar.add_task(config.strategy.kind, total=len(job.todo), line="")

            async def one(prompt: Prompt) -> None:
                await job.search(prompt, gate)
                bar.update(task, advance=1, line=job.stats.line())

            await run_all(one(prompt) for prompt in job.todo)
    return job.finish(started, reward.missing_scores())
