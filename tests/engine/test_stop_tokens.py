"""Stop strings that are one token: the engine stops at the token, the text is the one the
string would have given (the real SmolLM2 tokenizer; no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from multisample.engine.backends.vllm_actor import VLLMEngineActor, cut_at_stop
from multisample.engine.config import VLLMModelSpec


@pytest.fixture(scope="module")
def actor(embedded_models: dict[str, Path]) -> VLLMEngineActor:
    from transformers import AutoTokenizer

    actor = VLLMEngineActor(VLLMModelSpec(name="m", model="embedded:smollm2-135m-instruct"))
    actor.tokenizer = AutoTokenizer.from_pretrained(embedded_models["smollm2-135m-instruct"])
    return actor


def test_only_a_stop_string_that_is_one_token_becomes_a_stop_token(
    actor: VLLMEngineActor,
) -> None:
    stops = ["\n\n", "\nInstruction:", "Step", " Step"]
    found = actor.stop_tokens(stops)
    assert sorted(found.values()) == ["\n\n", " Step", "Step"]
    for token, stop in found.items():
        assert actor.tokenizer.decode([token]) == stop
    assert actor.stop_tokens([]) == {}
    assert actor.stop_tokens(["\n\n"]) == {k: v for k, v in found.items() if v == "\n\n"}


@pytest.mark.parametrize(
    ("before", "cut"),
    [
        ("2 + 3 = 5", "2 + 3 = 5"),  # the token alone: nothing to cut
        ("2 + 3 = 5\n", "2 + 3 = 5"),  # a newline, then the token of two: "\n\n\n"
        ("", ""),
    ],
)
def test_a_stop_token_leaves_the_text_a_stop_string_would(before: str, cut: str) -> None:
    assert cut_at_stop(before, "\n\n") == cut
