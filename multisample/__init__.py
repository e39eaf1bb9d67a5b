"""multisample's public Python API.

    import multisample

    with multisample.Pool("configs/demo.yaml") as pool:          # engines start once
        run = multisample.synthesize_sync(prompts=["Name three primes."], pool=pool,
                                          strategy={"kind": "toa"})
        run.samples, run.pairs, run.summary, run.to_dataset("pairs")

`synthesize`, `sweep` and `select` are coroutine functions; their `_sync` twins (and
`run_sync` for any coroutine) work in scripts and in notebooks, where an event loop
already runs. This package is a thin layer over the internal packages `engine`, `search`
and `bandits` (the command line's own code): it adds no run logic of its own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _check_internal_packages() -> None:
    """multisample's internal packages have generic top-level names: a user's own
    `search.py` (or `engine/`, `bandits/`) before them on sys.path would be imported
    instead, and fail far from the cause. Say so at once."""
    home = Path(__file__).resolve().parent.parent
    for name in ("engine", "search", "bandits"):
        spec = importlib.util.find_spec(name)
        origin = None if spec is None else spec.origin
        if origin is None or Path(origin).resolve() == home / name / "__init__.py":
            continue
        raise ImportError(
            f"multisample: {origin} shadows multisample's internal package {name!r} "
            f"(installed at {home / name}); rename your module or folder {name!r}"
        )


_check_internal_packages()

# ruff: noqa: E402 (the check above must run before these imports)
from bandits.select.config import SelectConfig
from engine.cli import package_version
from engine.config import ConfigError, PoolConfig
from engine.prompts import PromptsError
from engine.types import Prompt, SamplingSettings
from multisample.loop import run_sync
from multisample.pool import Pool, PoolNotStartedError
from multisample.results import RunResult, SelectResult, SweepResult
from multisample.runs import select, select_sync, sweep, sweep_sync, synthesize, synthesize_sync
from search.sweep import SweepConfig
from search.synthesize import SynthesizeConfig

__version__ = package_version()

__all__ = [
    "ConfigError",
    "Pool",
    "PoolConfig",
    "PoolNotStartedError",
    "Prompt",
    "PromptsError",
    "RunResult",
    "SamplingSettings",
    "SelectConfig",
    "SelectResult",
    "SweepConfig",
    "SweepResult",
    "SynthesizeConfig",
    "__version__",
    "run_sync",
    "select",
    "select_sync",
    "sweep",
    "sweep_sync",
    "synthesize",
    "synthesize_sync",
]
