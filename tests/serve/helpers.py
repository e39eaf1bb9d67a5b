"""What the gateway's tests share: a serve config over the fake OpenAI endpoint, and a
reward that tells its answers apart."""

from __future__ import annotations

from typing import Any

from tests.engine.fake_openai import FakeOpenAIServer

HERE = "tests.serve.helpers"


def length_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """A score that differs between the fake server's answers (their seeds differ)."""
    return [len(r) % 7 / 7 for r in responses]


def serve_config(server: FakeOpenAIServer, output_dir: str, **overrides: Any) -> dict[str, Any]:
    """Two endpoint models, a best-of-4 route, a selection route judged by a reward and
    one judged by the client, on a free port."""
    reward = {"kind": "callable", "path": f"{HERE}:length_reward"}
    config: dict[str, Any] = {
        "models": [
            {"name": "a", "backend": "openai", "base_url": server.base_url, "model": "serve-a"},
            {"name": "b", "backend": "openai", "base_url": server.base_url, "model": "serve-b"},
        ],
        "routes": [
            {
                "name": "bo4",
                "strategy": {"kind": "best_of_n", "model": "a"},
                "budget": {"generations": 4},
                "reward": reward,
            }
        ],
        "selections": [
            {
                "name": "auto",
                "candidates": [{"name": "a", "model": "a"}, {"name": "bo4", "route": "bo4"}],
                "feedback": {"kind": "reward", "reward": reward},
            },
            {
                "name": "duel",
                "candidates": [{"name": "a", "model": "a"}, {"name": "b", "model": "b"}],
                "feedback": {"kind": "client"},
            },
        ],
        "port": 0,
        "output_dir": output_dir,
    }
    config.update(overrides)
    return config
