"""The adaptation regime of the Co-UCB authors, on SmolLM2 with TRL (tiny updates): one
AdamW carried across updates (its moments and step count go on), at a constant rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from multisample.bandits.select.config import AdaptSettings
from multisample.engine.training import OPTIMIZER, Example, train_adapter
from multisample.engine.types import Message

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
