"""`synthesize`, `sweep` and `select` from Python: the commands' runs, with configs and
prompts from code, a shared `Pool`, and the results returned as well as written.

Each is a coroutine function (`await multisample.synthesize(...)`) with a synchronous
twin (`multisample.synthesize_sync(...)`) that works in a notebook too. Everything the
command line checks before engines start is checked here first, in the same words; a
run refused then leaves nothing behind (not even the prompts file it was given).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from rich.console import Console

from bandits.cli import select_traps
from bandits.select.config import SelectConfig
from bandits.select.loop import run_select
from engine.config import ConfigError, RunConfig
from engine.pool import ModelPool
from engine.prompts import load_prompts
from engine.storage import CONFIG, check_run_directory
from engine.traps import warn
from multisample.configs import ConfigSource, run_config
from multisample.inputs import (
    PromptsSource,
    is_file_source,
    prompt_records,
    prompts_path,
    prompts_text,
    write_prompts,
)
from multisample.loop import run_here, run_sync
from multisample.pool import Pool
from multisample.results import RunResult, SelectResult, SweepResult
from search.sweep import SweepConfig
from search.sweep import sweep as run_sweep
from search.synthesize import SynthesizeConfig
from search.synthesize import synthesize as run_synthesize
from search.traps import search_traps

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", bound=RunConfig)


@dataclass
class Target:
    """A run checked and ready to start: its config, its directory, whether it resumes,
    and what was written for it before it started (undone if it never starts)."""

    config: RunConfig
    path: Path
    resume: bool
    pool: ModelPool | None
    created: Path | None = None
    """The topmost folder made for the prompts file (none existed)."""
    wrote_prompts: bool = False

    def undo(self) -> None:
        """Remove what was written for a run that never opened its directory."""
        if (self.path / CONFIG).exists():
            return  # the run began: its files are its records (and --resume's)
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
        elif self.wrote_prompts:
            prompts_path(self.path).unlink(missing_ok=True)


def check_run_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ConfigError(
            f"name {name!r}: a run name is a folder name, not a path; give a path as run_dir"
        )


def run_path(
    output_dir: str, run_dir: str | Path | None, name: str | None, resume: bool, stem: str
) -> Path:
    """The run directory: `run_dir`; or `name` under the config's `output_dir`; or, for a
    new run, `<stem>-<UTC time>` there (as the command line names runs)."""
    if run_dir is not None and name is not None:
        raise ConfigError("give run_dir or name, not both")
    if run_dir is not None:
        return Path(run_dir)
    if name is not None:
        check_run_name(name)
        return Path(output_dir) / name
    if resume:
        raise ConfigError("resume=True needs the run to continue: its run_dir or name")
    base = Path(output_dir) / f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    path, number = base, 1
    while path.exists():  # two runs within a second
        number += 1
        path = base.with_name(f"{base.name}-{number}")
    return path


def prepare(
    kind: type[C],
    config: ConfigSource,
    prompts: PromptsSource | None,
    pool: Pool | None,
    run_dir: str | Path | None,
    name: str | None,
    resume: bool,
    overrides: Sequence[str],
    settings: Mapping[str, Any],
    stem: Callable[[C], str],
    exclude: set[str] | None = None,
) -> Target:
    """Everything checked before engines start, and the prompts file written."""
    if pool is not None and not isinstance(pool, Pool):
        raise TypeError(f"pool: expected a multisample.Pool, got {type(pool).__name__}")
    model_pool = pool.model_pool if pool is not None else None  # refuses one not started
    settings = dict(settings)
    if prompts is not None and is_file_source(prompts):
        settings["prompts"] = str(prompts)
    run = run_config(kind, config, settings, overrides, pool.config if pool else None)
    path = run_path(run.output_dir, run_dir, name, resume, stem(run))
    text = None
    if prompts is not None and not is_file_source(prompts):
        text = prompts_text(prompt_records(prompts))
        run = run.model_copy(update={"prompts": str(prompts_path(path))})
    check_run_directory(path, run, resume, exclude)
    target = Target(run, path, resume, model_pool)
    if text is not None:
        target.created = next(
            (p for p in reversed((path / "inputs", *path.parents)) if not p.exists()), None
        )
        target.wrote_prompts = write_prompts(path, text, resume)
    return target


async def execute(
    target: Target,
    traps: Callable[[], list[str]],
    run: Callable[[Target], Coroutine[Any, Any, object]],
) -> None:
    """Warn about the config's traps, then run on the library's loop; undo the prompts
    file of a run refused before it opened its directory."""
    try:
        warn(traps())
        await run_here(run(target))
    except BaseException:
        target.undo()
        raise


def _used_prompts(config: RunConfig) -> list[Any]:
    return load_prompts(config.prompts, config.limit).prompts


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
    here. The run goes to `run_dir`, or `name` (or a new `<strategy>-<time>`) under the
    config's `output_dir`; `resume=True` continues it."""
    target = prepare(
        SynthesizeConfig,
        config,
        prompts,
        pool,
        run_dir,
        name,
        resume,
        overrides,
        settings,
        lambda c: c.strategy.kind,
    )
    run = target.config
    assert isinstance(run, SynthesizeConfig)

    def traps() -> list[str]:
        return search_traps(run, [("strategy", run.strategy)], _used_prompts(run))

    async def go(t: Target) -> object:
        return await run_synthesize(run, t.path, resume=t.resume, console=console, pool=t.pool)

    await execute(target, traps, go)
    return RunResult.load(target.path)


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
    target = prepare(
        SweepConfig,
        config,
        prompts,
        pool,
        run_dir,
        name,
        resume,
        overrides,
        settings,
        lambda c: "sweep",
    )
    run = target.config
    assert isinstance(run, SweepConfig)

    def traps() -> list[str]:
        strategies = [(f"methods[{i}].strategy", m.strategy) for i, m in enumerate(run.methods)]
        return search_traps(run, strategies, _used_prompts(run))

    async def go(t: Target) -> object:
        return await run_sweep(run, t.path, resume=t.resume, console=console, pool=t.pool)

    await execute(target, traps, go)
    return SweepResult.load(target.path)


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
    target = prepare(
        SelectConfig,
        config,
        prompts,
        pool,
        run_dir,
        name,
        resume,
        overrides,
        settings,
        lambda c: "select",
        exclude={"rounds"},  # a resumed run may raise it to play on
    )
    run = target.config
    assert isinstance(run, SelectConfig)

    async def go(t: Target) -> object:
        return await run_select(run, t.path, resume=t.resume, console=console, pool=t.pool, ask=ask)

    await execute(target, lambda: select_traps(run), go)
    return SelectResult.load(target.path)


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
