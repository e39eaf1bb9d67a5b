"""multisample's public Python API.

    import multisample

    with multisample.Pool("configs/demo.yaml") as pool:          # engines start once
        run = multisample.synthesize_sync(prompts=["Name three primes."], pool=pool,
                                          strategy={"kind": "toa"})
        run.samples, run.pairs, run.summary, run.to_dataset("pairs")

`synthesize`, `sweep` and `select` are coroutine functions; their `_sync` twins (and
`run_sync` for any coroutine) work in scripts and in notebooks, where an event loop
already runs. They run the same jobs as the command line (multisample.jobs).

The package's parts are installed under this name: `multisample.engine`,
`multisample.search` and `multisample.bandits` (the engine, the strategies, the bandits),
`multisample.jobs` (the jobs every face runs), `multisample.api` and `multisample.cli` (two
faces of them). The names below load on first use, so importing one part (say
`multisample.engine.rewards.constraints`) does not start the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and editors
    from multisample.api.loop import run_sync
    from multisample.api.pool import Pool, PoolNotStartedError
    from multisample.api.runs import (
        select,
        select_sync,
        serve,
        serve_sync,
        serving,
        sweep,
        sweep_sync,
        synthesize,
        synthesize_sync,
    )
    from multisample.bandits.select.config import SelectConfig
    from multisample.engine.config import ConfigError, PoolConfig
    from multisample.engine.prompts import PromptsError
    from multisample.engine.types import Prompt, SamplingSettings
    from multisample.jobs.results import RunResult, SelectResult, ServeResult, SweepResult
    from multisample.search.sweep.config import SweepConfig
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.serve.config import ServeConfig

_PUBLIC = {
    "ConfigError": "multisample.engine.config",
    "Pool": "multisample.api.pool",
    "PoolConfig": "multisample.engine.config",
    "PoolNotStartedError": "multisample.api.pool",
    "Prompt": "multisample.engine.types",
    "PromptsError": "multisample.engine.prompts",
    "RunResult": "multisample.jobs.results",
    "SamplingSettings": "multisample.engine.types",
    "SelectConfig": "multisample.bandits.select.config",
    "SelectResult": "multisample.jobs.results",
    "SweepConfig": "multisample.search.sweep.config",
    "SweepResult": "multisample.jobs.results",
    "SynthesizeConfig": "multisample.search.synthesize.config",
    "run_sync": "multisample.api.loop",
    "select": "multisample.api.runs",
    "select_sync": "multisample.api.runs",
    "serve": "multisample.api.runs",
    "serve_sync": "multisample.api.runs",
    "ServeConfig": "multisample.serve.config",
    "ServeResult": "multisample.jobs.results",
    "serving": "multisample.api.runs",
    "sweep": "multisample.api.runs",
    "sweep_sync": "multisample.api.runs",
    "synthesize": "multisample.api.runs",
    "synthesize_sync": "multisample.api.runs",
}
"""Each public name and the module that defines it."""

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from multisample.version import package_version

        value: Any = package_version()
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        raise AttributeError(f"module 'multisample' has no attribute {name!r}")
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
