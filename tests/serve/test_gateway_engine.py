"""OpenAI's own client against the gateway on the embedded models (the session's vLLM
engines): a pass-through streamed token by token, a strategy route with its trace, and a
selection route whose reward arbiter picks the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from multisample.serve.config import ServeConfig
from multisample.serve.run import listening
from tests.conftest import CHAT_MODEL, embedded_pool_config

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "Write one sentence about the sea, in lowercase."}]


def config() -> ServeConfig:
    verifiable = {"kind": "verifiable"}
    return ServeConfig.model_validate(
        {
            "models": [m.model_dump() for m in embedded_pool_config().models],
            "sampling": {"max_tokens": 32, "temperature": 0.8},
            "routes": [
                {
                    "name": "bo2",
                    "strategy": {"kind": "best_of_n", "model": CHAT_MODEL},
                    "budget": {"generations": 2},
                    "reward": verifiable,
                }
            ],
            "selections": [
                {
                    "name": "auto",
                    "candidates": [
                        {"name": "chat", "model": CHAT_MODEL},
                        {"name": "bo2", "route": "bo2"},
                    ],
                    "feedback": {"kind": "reward", "reward": verifiable},
                }
            ],
            "port": 0,
        }
    )


async def test_the_openai_client_on_the_embedded_models(pool: Any, tmp_path: Path) -> None:
    async with listening(config(), tmp_path / "live", pool=pool) as (url, _):
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=None)
        stream = await client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, seed=3, max_tokens=24, stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
        text = "".join(p or "" for p in pieces)
        assert len([p for p in pieces if p]) > 3  # token by token, as the engine made them
        assert text.strip()

        routed = await client.chat.completions.create(
            model="bo2", messages=QUESTION, seed=5, extra_body={"multisample": {"trace": True}}
        )
        (search,) = routed.model_extra["multisample"]["trace"]["searches"]
        assert len(search["candidates"]) == 2
        chosen = search["candidates"][search["selected"]]
        assert routed.choices[0].message.content == chosen["text"]
        assert chosen["reward"] == max(c["reward"] for c in search["candidates"])
        spent = search["spend"]["tokens"]
        assert routed.usage.total_tokens == spent  # every internal call counted

        selected = await client.chat.completions.create(model="auto", messages=QUESTION, seed=7)
        assert selected.choices[0].message.content
        assert selected.usage.completion_tokens > 0
    rounds = (tmp_path / "live" / "selections" / "auto" / "rounds.jsonl").read_text()
    assert rounds.count("\n") == 1
