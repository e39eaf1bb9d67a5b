"""The jobs that make a run directory, each defined once for every face: its config class,
the stem of a new run's name, its traps, its run coroutine and how its result is read back.
A face (multisample.cli, multisample.api) only parses its input and presents the result."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from multisample.bandits.select.config import SelectConfig
from multisample.bandits.select.traps import select_traps
from multisample.engine.config import PoolConfig
from multisample.search.sweep.config import SweepConfig
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.traps import sweep_traps, synthesize_traps
from multisample.serve.config import RESUMABLE, ServeConfig, serve_traps

RunCoroutine = Callable[..., Coroutine[Any, Any, dict[str, Any]]]
"""`run(config, path, *, resume, console, pool, **extra) -> summary`."""


@dataclass(frozen=True)
class Imported:
    """The function `module:name`, imported when it is first called. The jobs' run
    modules and result readers import scipy, pandas and Ray: half of the 2.4 s that
    `multisample --help` took here, and nothing that parsing a command line or checking
    a config needs."""

    target: str

    def resolve(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return functools.reduce(getattr, name.split("."), importlib.import_module(module))  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class Job:
    """A job that makes a run directory."""

    name: str
    """Its command, and its config's kind (`multisample config schema NAME`)."""
    config: type[PoolConfig]
    stem: Callable[[Any], str]
    """The stem of a new run's name when its config was given in code (a run made from a
    config file is named after the file): `<stem>-<UTC time>`."""
    traps: Callable[[Any], list[str]]
    """Warnings about a config that runs but does not do what was meant; raises
    ConfigError for one that cannot work. Called before any engine starts."""
    run: Imported
    """Its RunCoroutine."""
    result: Imported
    """Reads the finished run directory back (what the API returns): (Path) -> result."""
    resumable: frozenset[str] = frozenset()
    """Fields a resume may change: they only say when to stop."""


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            "synthesize",
            SynthesizeConfig,
            lambda config: config.strategy.kind,
            synthesize_traps,
            Imported("multisample.search.synthesize.run:synthesize"),
            Imported("multisample.jobs.results:RunResult.load"),
        ),
        Job(
            "sweep",
            SweepConfig,
            lambda config: "sweep",
            sweep_traps,
            Imported("multisample.search.sweep.run:sweep"),
            Imported("multisample.jobs.results:SweepResult.load"),
        ),
        Job(
            "select",
            SelectConfig,
            lambda config: "select",
            select_traps,
            Imported("multisample.bandits.select.loop:run_select"),
            Imported("multisample.jobs.results:SelectResult.load"),
            resumable=frozenset({"rounds"}),
        ),
        Job(
            "serve",
            ServeConfig,
            lambda config: "serve",
            serve_traps,
            Imported("multisample.serve.run:serve"),
            Imported("multisample.jobs.results:ServeResult.load"),
            resumable=RESUMABLE,
        ),
    )
}
"""Every job that makes a run directory, by name."""
