"""`synthesize` with an OpenAI-compatible endpoint as the pool's model: the whole path
(pool, backend, strategy, reward, run directory) over real HTTP on loopback, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import SAMPLES
from multisample.search.synthesize.run import synthesize
from tests.engine.fake_openai import FakeOpenAIServer, server

__all__ = ["server"]  # the module-scoped loopback server fixture


async def test_synthesize_through_an_endpoint_model(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = SynthesizeConfig.model_validate(
        {
            "models": [
                {
                    "name": "remote",
                    "backend": "openai",
                    "model": "served-synthesize",
                    "base_url": server.base_url,
                    "backoff_s": 0.01,
                }
            ],
            "limit": 2,
            "budget": {"generations": 3},
            "strategy": {"kind": "best_of_n"},
        }
    )
    summary = await synthesize(config, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / SAMPLES).read_text().splitlines()]
    assert summary["prompts"] == 2 and summary["samples"] == 6
    assert {r["model"] for r in rows} == {"remote"}
    sent = server.requests["served-synthesize"]
    assert sorted(r.payload["seed"] for r in sent) == sorted(r["seed"] for r in rows)
    assert summary["spend_per_model"]["remote"]["prompt_tokens"] == sum(
        r["prompt_tokens"] for r in rows
    )
