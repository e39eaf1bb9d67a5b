"""`synthesize`, `sweep` and `select` from Python: the jobs of multisample.jobs, with configs
and prompts from code, a shared `Pool`, and the results returned as well as written.

Each is a coroutine function (`await multisample.synthesize(...)`) with a synchronous
twin (`multisample.synthesize_sync(...)`) that works in a notebook too. Everything the
command line checks before engines start is checked here first, in the same words; a
run refused then leaves nothing behind (not even the prompts file it was given).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from rich.console import Console

from multisample.api.configs import ConfigSource, run_config
from multisample.api.loop import run_here, run_sync
from multisample.api.pool import Pool
from multisample.engine.storage import check_run_directory
from multisample.engine.traps import warn
from multisample.jobs.inputs import (
    PromptsSource,
    is_file_source,
    prompt_records,
    prompts_path,
    prompts_text,
    write_prompts,
)
from multisample.jobs.registry import JOBS, Job
from multisample.jobs.results import RunResult, SelectResult, ServeResult, SweepResult
from multisample.jobs.targets import API, Target, locate
from multisample.serve.run import listening

P = ParamSpec("P")
T = TypeVar("T")


def prepare(
    job: Job,
    config: ConfigSource,
    prompts: PromptsSource | None,
    pool: Pool | None,
    run_dir: str | Path | None,
    name: str | None,
    resume: bool,
    overrides: Sequence[str],
    settings: Mapping[str, Any],
) -> Target:
    """Everything checked before engines start, and the prompts given in memory written
    as the run's own file."""
    if pool is not None and not isinstance(pool, Pool):
        raise TypeError(f"pool: expected a multisample.Pool, got {type(pool).__name__}")
    settings = dict(settings)
    if prompts is not None and is_file_source(prompts):
        settings["prompts"] = str(prompts)
    run = run_config(job.config, config, settings, overrides, pool.config if pool else None)
    # A run made from a config file is named after the file, as on the command line.
    from_file = isinstance(config, str | os.PathLike)
    stem = Path(config).stem if from_file else job.stem(run)
    given = None if run_dir is None else Path(run_dir)
    path = locate(Path(run.output_dir), stem, name=name, run_dir=given, resume=resume, labels=API)
    text = None
    if prompts is not None and not is_file_source(prompts):
        text = prompts_text(prompt_records(prompts))
        run = run.model_copy(update={"prompts": str(prompts_path(path))})
    check_run_directory(path, run, resume, set(job.resumable))
    target = Target(job, run, path, resume)
    if text is not None:
        file = prompts_path(path)
        target.created = [folder for folder in reversed(file.parents) if not folder.exists()]
        if write_prompts(path, text, resume):
            target.wrote.append(file)
    return target


async def _run(
    job: Job,
    config: ConfigSource,
    prompts: PromptsSource | None,
    pool: Pool | None,
    run_dir: str | Path | None,
    name: str | None,
    resume: bool,
    overrides: Sequence[str],
    console: Console | None,
    settings: Mapping[str, Any],
    **extra: Any,
) -> Any:
    model_pool = pool.model_pool if isinstance(pool, Pool) else None  # refuses one not started
    target = prepare(job, config, prompts, pool, run_dir, name, resume, overrides, settings)
    await run_here(target.launch(console=console, pool=model_pool, **extra))
    return job.result(target.path)


async def synthesize(
    config: ConfigSource = None,
    *,
    prompts: PromptsSource | None = None,
    pool: Pool | None = None,
    run_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    **settings: Any,
) -> RunResult:
    """Run a search strategy over the prompts; return the samples, pairs and summary.

    `config`: a SynthesizeConfig, a dict of its settings or a YAML path; keyword
    `settings` (strategy=, budget=, reward=, limit=, ...) replace its top-level fields and
    `overrides` ("budget.generations=8", as `--set`) nested ones. `prompts`: in-memory
    prompts (texts, dicts, `Prompt`s, a `datasets.Dataset`), kept as the run's
    inputs/prompts.jsonl, or a prompts file's path. `pool`: a started `Pool` (its models
    are the config's when it names none); without one the config's models start and stop
    here. The run goes to `run_dir`, or `name` under the config's `output_dir`, or a new
    `<strategy>-<UTC time>` there (`<file>-<UTC time>` for a config file); `resume=True`
    continues it."""
    job = JOBS["synthesize"]
    return await _run(
        job, config, prompts, pool, run_dir, name, resume, overrides, console, settings
    )


async def sweep(
    config: ConfigSource = None,
    *,
    prompts: PromptsSource | None = None,
    pool: Pool | None = None,
    run_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    **settings: Any,
) -> SweepResult:
    """Run methods x budgets x seeds over the prompts; return the summary, the tables and
    the report. Arguments as `synthesize`'s (the config a SweepConfig: `methods=`,
    `budgets=`, `seeds=`, ...)."""
    job = JOBS["sweep"]
    return await _run(
        job, config, prompts, pool, run_dir, name, resume, overrides, console, settings
    )


async def select(
    config: ConfigSource = None,
    *,
    prompts: PromptsSource | None = None,
    pool: Pool | None = None,
    run_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    ask: Callable[[str], str] | None = None,
    **settings: Any,
) -> SelectResult:
    """Play bandit rounds over the prompts (the queries); return the summary, each
    round and every answer. Arguments as `synthesize`'s (the config a SelectConfig:
    `candidates=`, `policy=`, `rounds=`, `batch=`, `feedback=`, ...); with human
    feedback, `ask(question) -> reply` replaces the terminal."""
    job = JOBS["select"]
    return await _run(
        job, config, prompts, pool, run_dir, name, resume, overrides, console, settings, ask=ask
    )


async def serve(
    config: ConfigSource = None,
    *,
    pool: Pool | None = None,
    run_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    **settings: Any,
) -> ServeResult:
    """Answer OpenAI-compatible requests until SIGTERM or SIGINT (in the main thread);
    return the run's summary. The config a ServeConfig (`routes=`, `selections=`,
    `host=`, `port=`, ...); other arguments as `synthesize`'s. To serve inside a
    program and stop when it says, use `serving`."""
    job = JOBS["serve"]
    return await _run(job, config, None, pool, run_dir, name, resume, overrides, console, settings)


@asynccontextmanager
async def serving(
    config: ConfigSource = None,
    *,
    pool: Pool | None = None,
    run_dir: str | Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    console: Console | None = None,
    **settings: Any,
) -> AsyncIterator[str]:
    """The gateway listening while the block runs: `async with multisample.serving(cfg,
    pool=pool, port=0) as url:` gives its URL (an OpenAI client's base_url is url +
    "/v1"); leaving the block lets the requests in flight finish, then closes the run
    directory. Arguments as `serve`'s."""
    model_pool = pool.model_pool if isinstance(pool, Pool) else None
    target = prepare(JOBS["serve"], config, None, pool, run_dir, name, resume, overrides, settings)
    warn(target.job.traps(target.config))
    async with listening(
        target.config,
        target.path,
        resume,
        console=console,
        pool=model_pool,  # type: ignore[arg-type]
    ) as (url, _):
        yield url


def sync_twin(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """`function` as a plain call that runs it on the library's loop (`run_sync`)."""

    @functools.wraps(function)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(function(*args, **kwargs))

    twin.__name__ = twin.__qualname__ = f"{function.__name__}_sync"
    twin.__doc__ = (
        f"`{function.__name__}` for synchronous code (scripts, notebook cells): the same "
        f"arguments, run on multisample's own event loop.\n\n{function.__doc__}"
    )
    return twin


synthesize_sync = sync_twin(synthesize)
sweep_sync = sync_twin(sweep)
select_sync = sync_twin(select)
serve_sync = sync_twin(serve)
