"""A selection route whose model candidates adapt while it serves (select's collaborative
update, on the toy pool, trainer and merger of tests/bandits/test_select_adapt.py): each
committed round starts an update in the background, and the next requests are answered
by the new versions, without a restart."""

from __future__ import annotations

from pathlib import Path

from multisample.engine.rewards.combine import CallableReward
from multisample.engine.seeds import derive_seed
from multisample.engine.types import GenerationRequest, Prompt, SamplingSettings
from multisample.serve.config import ServeConfig
from multisample.serve.selection import SelectionRoute
from tests.bandits.test_select_adapt import REWARD, AdaptingPool, ToyTrainer, toy_merger, trained_on
from tests.engine.test_adapters import fake_base


def config(tmp_path: Path) -> ServeConfig:
    models = [
        {"name": name, "model": str(fake_base(tmp_path / "models" / name))} for name in ("a", "b")
    ]
    return ServeConfig.model_validate(
        {
            "models": models,
            "selections": [
                {
                    "name": "auto",
                    "candidates": [{"name": "a", "model": "a"}, {"name": "b", "model": "b"}],
                    "feedback": {"kind": "reward", "reward": {"kind": "callable", "path": REWARD}},
                    "adapt": {"steps": 1},
                }
            ],
        }
    )


async def test_a_served_duel_trains_both_candidates_and_the_next_request_meets_them(
    tmp_path: Path,
) -> None:
    settings = config(tmp_path)
    (spec,) = settings.selections
    pool = AdaptingPool(settings.model_names())
    trainer = ToyTrainer()
    route = SelectionRoute(
        spec,
        settings.select_config(spec),
        pool,  # type: ignore[arg-type]
        tmp_path / "run",
        False,
        CallableReward(REWARD),
        trainer,
        toy_merger,  # type: ignore[arg-type]
    )

    async def answer(name: str, query: Prompt, seed: int) -> tuple[str, str | None, int, int]:
        model = route.model_of(name)
        assert model is not None
        request = GenerationRequest(
            query.conversation(), SamplingSettings(), derive_seed(seed, name)
        )
        (made,) = await pool.generate(model, [request])
        return made.text, made.finish_reason, made.prompt_tokens, made.completion_tokens

    first, _, _, played = await route.play("r1", Prompt(id="r1", prompt="one"), 1, answer)
    assert played["candidates"] == ["a", "b"] and first[0][0].startswith(("a@v0|", "b@v0|"))
    assert route.training is not None
    await route.training  # the update the round started, in the background
    assert route.state.version("a") == route.state.version("b") == 1
    # Both trained on the preferred answer of the duel; the merged versions now answer.
    assert trained_on(tmp_path / "run", "a", 1) == trained_on(tmp_path / "run", "b", 1)
    assert sorted(pool.loads) == [("a", "v1"), ("b", "v1")]
    second, _, _, _ = await route.play("r2", Prompt(id="r2", prompt="two"), 2, answer)
    assert "@v1|" in second[0][0]
    await route.close()
