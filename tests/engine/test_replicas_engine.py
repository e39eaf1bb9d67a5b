"""Replicas on the real embedded engines: a best-of-N run on two replicas of SmolLM2 writes
the records a one-replica run writes (each request carries its seed, so which replica
answered changes nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multisample.engine.backends.vllm import VLLMBackend
from multisample.engine.pool import ModelPool
from tests.engine.test_replicas import _records, _without_timing

pytestmark = pytest.mark.engine


async def best_of_n(replicas: int, run: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.search.synthesize.run import synthesize

    config = SynthesizeConfig.model_validate(
        {
            "models": [
                {
                    "name": "smol",
                    "model": "embedded:smollm2-135m-instruct",
                    "replicas": replicas,
                    # float32: batches of other shapes (a batch split over replicas) give
                    # the same tokens; bf16 may flip one in the last bits.
                    "dtype": "float32",
                    "max_model_len": 1024,
                    # The session's shared pool may hold every CPU of the test cluster;
                    # CPUs are logical, so these actors reserve none (test_adapters.py).
                    "num_cpus": 0,
                }
            ],
            "limit": 3,
            "budget": {"generations": 6},
            "sampling": {"temperature": 0.8, "max_tokens": 32},
            "strategy": {"kind": "best_of_n"},
            "concurrency": 3,
        }
    )
    async with ModelPool(config, config.sampling) as pool:
        backend = pool.backends["smol"]
        assert isinstance(backend, VLLMBackend)
        assert len({r.info["pid"] for r in backend.replicas}) == replicas
        await synthesize(config, run, pool=pool)
    return _records(run)


@pytest.mark.usefixtures("embedded_models")
async def test_two_replicas_write_the_records_of_one(tmp_path: Path) -> None:
    one = await best_of_n(1, tmp_path / "one")
    two = await best_of_n(2, tmp_path / "two")
    assert len(one[0]) == 18
    assert _without_timing(one) == _without_timing(two)
