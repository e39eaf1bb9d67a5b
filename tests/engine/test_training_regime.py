"""The adaptation regime of the Co-UCB authors, on SmolLM2 with TRL (tiny updates): one
AdamW carried across updates (its moments and step count go on), at a constant rate, on
a LoRA or on every weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multisample.bandits.select.config import AdaptSettings
from multisample.engine.training import OPTIMIZER, Example, train_adapter
from multisample.engine.types import Message
from tests.bandits.test_select_adapt_live import greedy_from_scratch
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.train

EXAMPLES = [
    Example((Message("user", f"Say the word {w}."),), w) for w in ("sea", "sky", "sun", "oak")
]


def steps_taken(folder: Path) -> set[float]:
    import torch

    state = torch.load(folder / OPTIMIZER, weights_only=True)["state"]
    return {float(entry["step"]) for entry in state.values()}


def test_a_carried_optimizer_goes_on_across_updates_at_a_constant_rate(tmp_path: Path) -> None:
    from multisample.engine.embedded import prepare

    base = prepare("smollm2-135m-instruct")
    settings = AdaptSettings(max_steps=2, batch_size=2, rank=4)  # constant, carried: defaults
    first = train_adapter(
        base, EXAMPLES, [], settings, tmp_path / "v1", progress=False, carry_optimizer=True
    )
    second = train_adapter(
        base,
        EXAMPLES,
        [],
        settings,
        tmp_path / "v2",
        seed=1,
        start_from=tmp_path / "v1",
        progress=False,
        carry_optimizer=True,
    )
    assert steps_taken(tmp_path / "v1") == {2.0}
    assert steps_taken(tmp_path / "v2") == {4.0}  # the second update went on from the first's
    rates = [e["learning_rate"] for r in (first, second) for e in r.loss_curve]
    assert rates == [settings.learning_rate] * 4  # constant, in and across updates

    fresh = train_adapter(
        base,
        EXAMPLES,
        [],
        settings.model_copy(update={"schedule": "linear"}),
        tmp_path / "v2-fresh",
        start_from=tmp_path / "v1",
        progress=False,
    )
    assert not (tmp_path / "v2-fresh" / OPTIMIZER).exists()
    assert fresh.loss_curve[-1]["learning_rate"] < settings.learning_rate  # decays to zero


@pytest.mark.engine
async def test_full_fine_tuning_trains_every_weight_and_the_engine_serves_it_in_place(
    pool: Any, tmp_path: Path
) -> None:
    """Two full updates (the second going on from the first, optimizer and all), then
    the session's SmolLM2 engine loads the last in place of its weights, and back."""
    import torch
    from safetensors.torch import load_file

    from multisample.engine.embedded import prepare

    base = prepare("smollm2-135m-instruct")
    # A large rate, so that two steps visibly change greedy answers.
    settings = AdaptSettings(weights="full", max_steps=1, batch_size=2, learning_rate=1e-3)
    for version, start_from in ((1, None), (2, tmp_path / "v1")):
        train_adapter(
            base,
            EXAMPLES,
            [],
            settings,
            tmp_path / f"v{version}",
            seed=version,
            start_from=start_from,
            progress=False,
            carry_optimizer=True,
            full=True,
        )
    assert not (tmp_path / "v1" / "adapter_config.json").exists()  # a model, no LoRA
    original = load_file(str(next(base.glob("*.safetensors"))))
    first, second = (load_file(str(tmp_path / v / "model.safetensors")) for v in ("v1", "v2"))
    assert set(first) == set(original)  # the base's tensor names: an engine loads it in place
    assert all(t.dtype == torch.float32 for t in first.values())  # small steps not rounded
    # Every weight trains (not a few layers), and v2 went on from v1, optimizer and all.
    assert all(not first[name].equal(original[name].float()) for name in original)
    assert any(not second[name].equal(first[name]) for name in first)
    assert steps_taken(tmp_path / "v2") == {2.0}

    before = await greedy_from_scratch(pool, CHAT_MODEL, base)
    try:
        after = await greedy_from_scratch(pool, CHAT_MODEL, tmp_path / "v2")
    finally:
        await pool.load_weights(CHAT_MODEL, base)
    assert after != before
    assert await greedy_from_scratch(pool, CHAT_MODEL, base) == before  # put back exactly
