"""The classifier reward model path (vLLM's pooling runner) on a tiny classifier that the
test builds itself: vLLM's scores must equal the transformers model's own logits."""

from __future__ import annotations

from pathlib import Path

import pytest

from multisample.engine.rewards.classifier import (
    ClassifierActor,
    ClassifierReward,
    ClassifierRewardSpec,
    HostedEngine,
)
from multisample.engine.types import Prompt
from tests.conftest import lone_engine_cores

pytestmark = pytest.mark.engine

PROMPT = Prompt(id="p", prompt="Give me one word for happy.")
RESPONSES = ["Joyful.", "I do not know.", "Glad, cheerful, or content."]


@pytest.fixture(scope="module")
def tiny_classifier(
    tmp_path_factory: pytest.TempPathFactory, embedded_models: dict[str, Path]
) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(embedded_models["smollm2-135m-instruct"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # vLLM's CPU attention kernels need a head size of at least 32: two heads of 64.
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    folder = tmp_path_factory.mktemp("tiny-classifier")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reference_logits(folder: Path, prompt: str, responses: list[str]) -> list[float]:
    """What transformers computes for the same conversations."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = LlamaForSequenceClassification.from_pretrained(folder, torch_dtype=torch.float32)
    scores = []
    for response in responses:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            tokenize=False,
        )
        ids = tokenizer.encode(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            scores.append(float(model(ids).logits[0, 0]))
    return scores


async def test_classifier_scores_match_transformers(tiny_classifier: Path) -> None:
    # The session's shared pool may already hold every CPU of the test cluster (it counted
    # only its own models); CPUs are logical, so this actor reserves none instead of
    # waiting for one. A run's own pool counts its reward (tests/engine/test_pool.py).
    spec = ClassifierRewardSpec(
        kind="classifier", model=str(tiny_classifier), dtype="float32", num_cpus=0
    )
    reward = ClassifierReward(
        spec, HostedEngine(ClassifierActor, spec, cpu_cores=lone_engine_cores())
    )
    try:
        scores = await reward.score(PROMPT, RESPONSES)
    finally:
        await reward.close()
    expected = reference_logits(tiny_classifier, PROMPT.prompt, RESPONSES)
    assert scores == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert len(set(scores)) == len(RESPONSES)  # a real function of the response
