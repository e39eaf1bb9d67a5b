"""Rules every registered reward keeps: one score per response, in order; each distinct
response scored once; bad input refused with a clear error; close() idempotent. Run over
`REWARDS`, so a new reward is checked as soon as it is registered."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import TypeAdapter

from multisample.engine.registry import kind_of
from multisample.engine.rewards.base import Reward, RewardError
from multisample.engine.rewards.registry import REWARDS, RewardSpec
from multisample.engine.types import GenerationRequest, Prompt
from multisample.search.synthesize.config import SynthesizeConfig

PROMPT = Prompt(
    id="p",
    prompt="List two fruits in lowercase, without commas.",
    reference="7",
    constraints=({"kind": "all_lowercase"}, {"kind": "no_commas"}),
    metadata={"arithmetic": {"start": 3, "operations": [["+", 4]]}},  # for the step checker
)
RESPONSES = ["apple and pear", "Apple, Pear", "APPLE PEAR", "a pear and an apple", "3 + 4 = 7"]
HERE = "tests.engine.test_reward_contract"


def length_score(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    return [float(len(r)) for r in responses]


def one_score_too_few(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    return [1.0] * (len(responses) - 1)


def not_a_number(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    return [math.nan] * len(responses)


@dataclass
class JudgeTopTokens:
    top_logprobs: list[dict[str, float]]


class FakeJudgePool:
    """What a judge uses of a pool: its model names and `generate`. The 'judge' model
    rates an answer by the length of its prompt (so answers get different ratings)."""

    names: ClassVar[list[str]] = ["judge"]

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Any]:
        assert model in self.names
        digits = [str(len(r.messages[-1].content) % 10) for r in requests]
        return [JudgeTopTokens([{digit: 0.0}]) for digit in digits]


CHEAP: dict[str, dict[str, Any]] = {
    "verifiable": {"kind": "verifiable"},
    "judge": {"kind": "judge", "model": "judge"},
    "embedding": {"kind": "embedding"},  # the embedded MiniLM, on the CPU
    "callable": {"kind": "callable", "path": f"{HERE}:length_score"},
    "correct": {"kind": "correct"},
    "arithmetic_steps": {"kind": "arithmetic_steps"},
    "step_judge": {"kind": "step_judge", "model": "judge"},
    "weighted": {
        "kind": "weighted",
        "components": [
            {"weight": 0.5, "reward": {"kind": "verifiable"}},
            {"weight": 2.0, "reward": {"kind": "callable", "path": f"{HERE}:length_score"}},
        ],
    },
}
"""A spec of each reward that builds without an engine."""

NEEDS_AN_ENGINE = {
    "classifier": "a vLLM pooling engine: tests/engine/test_classifier.py (marked engine)",
    "prm": "a vLLM engine: tests/engine/test_process_rewards.py (marked engine)",
}

BAD: dict[str, tuple[dict[str, Any], Prompt, str]] = {
    "verifiable": (
        {"kind": "verifiable"},
        PROMPT.model_copy(update={"constraints": ({"kind": "no_such_kind"},)}),
        "unknown constraint kind 'no_such_kind'",
    ),
    "judge": ({"kind": "judge", "model": "nobody"}, PROMPT, "no pool model named 'nobody'"),
    "embedding": (
        {"kind": "embedding", "model": "/no/such/model"},
        PROMPT,
        "cannot load model /no/such/model",
    ),
    "correct": (
        {"kind": "correct"},
        PROMPT.model_copy(update={"reference": None}),
        "prompt 'p' has no reference answer",
    ),
    "arithmetic_steps": (
        {"kind": "arithmetic_steps"},
        PROMPT.model_copy(update={"metadata": {}}),
        "prompt 'p' is no generated arithmetic problem",
    ),
    "step_judge": ({"kind": "step_judge", "model": "nobody"}, PROMPT, "no pool model named"),
    "callable": (
        {"kind": "callable", "path": f"{HERE}:one_score_too_few"},
        PROMPT,
        "returned 1 scores for 2 responses",
    ),
    "weighted": (
        {
            "kind": "weighted",
            "components": [
                {"weight": 1.0, "reward": {"kind": "callable", "path": f"{HERE}:not_a_number"}}
            ],
        },
        PROMPT,
        "non-finite score",
    ),
}
"""A spec and prompt of each reward that must fail, and what its error says."""


def cheap_spec(kind: str) -> dict[str, Any]:
    if kind in NEEDS_AN_ENGINE:
        pytest.skip(f"{kind} needs {NEEDS_AN_ENGINE[kind]}")
    assert kind in CHEAP, f"add a spec of the new reward {kind!r} to CHEAP (or NEEDS_AN_ENGINE)"
    return CHEAP[kind]


def build(spec: dict[str, Any]) -> Reward:
    return TypeAdapter(RewardSpec).validate_python(spec).build(FakeJudgePool())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(REWARDS))
def test_every_reward_is_in_the_config_union_and_its_schema(kind: str) -> None:
    spec_cls = REWARDS[kind]
    assert kind_of(spec_cls) == kind
    union = TypeAdapter(RewardSpec).json_schema()
    assert union["discriminator"]["mapping"][kind].endswith(f"/{spec_cls.__name__}")
    assert union["$defs"][spec_cls.__name__]["description"]  # what `config schema` shows
    config = SynthesizeConfig.model_json_schema()
    assert spec_cls.__name__ in config["$defs"]


@pytest.mark.parametrize("kind", sorted(REWARDS))
async def test_every_reward_scores_a_batch_one_per_response_in_order(kind: str) -> None:
    reward = build(cheap_spec(kind))
    await reward.start()
    batch = await reward.score(PROMPT, RESPONSES)
    assert len(batch) == len(RESPONSES) and all(isinstance(s, float) for s in batch)
    assert len(set(batch)) > 1, "the responses should score differently, to check the order"
    alone = build(cheap_spec(kind))
    one_at_a_time = [(await alone.score(PROMPT, [r]))[0] for r in RESPONSES]
    assert one_at_a_time == pytest.approx(batch, rel=1e-5)  # batched encodes round apart
    await reward.close()
    await alone.close()


@pytest.mark.parametrize("kind", sorted(REWARDS))
async def test_every_reward_scores_each_distinct_response_once(kind: str) -> None:
    reward = build(cheap_spec(kind))
    first = await reward.score(PROMPT, [RESPONSES[0], RESPONSES[1], RESPONSES[0]])
    assert reward.calls == 2
    assert first[0] == first[2]
    assert await reward.score(PROMPT, RESPONSES[:2]) == first[:2]
    assert reward.calls == 2
    await reward.close()


@pytest.mark.parametrize("kind", sorted(REWARDS))
async def test_every_reward_refuses_bad_input_with_a_clear_error(kind: str) -> None:
    cheap_spec(kind)  # skips a reward that needs an engine
    assert kind in BAD, f"add a failing spec of the new reward {kind!r} to BAD"
    spec, prompt, message = BAD[kind]
    with pytest.raises((RewardError, ValueError), match=message):
        reward = build(spec)
        await reward.start()
        await reward.score(prompt, RESPONSES[:2])


@pytest.mark.parametrize("kind", sorted(REWARDS))
async def test_every_reward_closes_twice_without_error(kind: str) -> None:
    reward = build(cheap_spec(kind))
    await reward.start()
    await reward.score(PROMPT, RESPONSES[:1])
    await reward.close()
    await reward.close()


def test_a_run_without_model_rewards_never_imports_their_libraries() -> None:
    code = (
        "import sys, search.synthesize, search.sweep, bandits.select, engine.rewards\n"
        "print(sorted({'sentence_transformers', 'vllm', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
