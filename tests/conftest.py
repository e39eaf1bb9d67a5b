"""Shared fixtures. Real engines are expensive to start (20-60 s each on two cores), so
the model pool starts once per test session and every integration test shares it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings

from multisample.engine.config import PoolConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# No Hypothesis deadline: on a loaded machine an example may take longer than the
# default 200 ms without anything being wrong. `make fuzz` selects the "fuzz" profile.
settings.register_profile("default", deadline=None)
settings.register_profile("fuzz", deadline=None, max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CHAT_MODEL = "smollm2"
BASE_MODEL = "gemma3"


def embedded_pool_config(**overrides: object) -> PoolConfig:
    """Both embedded models: SmolLM2 (chat) and Gemma-3-270M (base)."""
    return PoolConfig.model_validate(
        {
            "models": [
                {"name": CHAT_MODEL, "model": "embedded:smollm2-135m-instruct"},
                {"name": BASE_MODEL, "model": "embedded:gemma3-270m", "prompt_format": "base"},
            ],
            **overrides,
        }
    )


def lone_engine_cores() -> str:
    """The cores a pool binds its engine to when that engine is its only one
    (engine.cpu_binding): for a test that starts a reward's engine without a pool, so that
    it runs as in one (its model in the engine-core process, actors.bound_engine_env)."""
    from multisample.engine.cpu_binding import partition_cores

    return ",".join(map(str, partition_cores(sorted(os.sched_getaffinity(0)), [1])[0]))


@pytest.fixture(scope="session")
def embedded_models() -> dict[str, Path]:
    """The embedded models, prepared in the user's cache (a no-op once done)."""
    from multisample.engine.embedded import EMBEDDED, prepare

    return {name: prepare(name) for name in EMBEDDED}


@pytest.fixture(scope="session")
async def pool(embedded_models: dict[str, Path]) -> AsyncIterator[object]:
    """Both embedded models on vLLM in Ray actors, started once for the session."""
    from multisample.engine.pool import ModelPool

    async with ModelPool(embedded_pool_config()) as started:
        yield started
