"""Beam search and DVTS against hand-worked trees on a scripted pool: which partial
solutions are kept, how often each is extended, what is charged, what is answered."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from multisample.engine.arithmetic import Problem
from multisample.engine.config import BudgetConfig, ConfigError
from multisample.engine.rewards.base import Reward
from multisample.engine.rewards.process import ArithmeticStepsReward
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.search.base import SearchContext
from multisample.search.registry import run_strategy
from multisample.search.steps import BeamSearchSettings, DVTSSettings
from multisample.search.sweep.config import SweepConfig
from multisample.search.synthesize.config import SynthesizeConfig
from tests.search.toy import ToyPool

SEP = "\n"
PROMPT = Prompt(id="q", prompt="Solve it.")


class ScriptedSteps(ToyPool):
    """Each request continuing `prefix` gets the next step of SCRIPT[prefix]. A step
    ending with "." ends its solution (the model stopped); any other stops at the
    separator when the request stops there. 10 prompt and 5 completion tokens a call."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__(("m",))
        self.script = {prefix: list(steps) for prefix, steps in script.items()}
        self.requests: list[tuple[str, bool]] = []  # (prefix, stops at the separator)

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        made = []
        for request in requests:
            step = self.script[request.prefix].pop(0)
            stops = SEP in request.sampling.stop
            self.requests.append((request.prefix, stops))
            cut = SEP if stops and not step.endswith(".") else None
            made.append(Generation(step, model, 10, 5, "stop", request.seed, 0.0, stop_reason=cut))
        return made


class StepScores(Reward):
    """A partial or whole solution scores its last step's number in SCORES."""

    name = "steps"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        return [SCORES[r.rstrip(SEP).split(SEP)[-1]] for r in responses]


SCORES = {
    "A": 0.9, "B": 0.1, "C": 0.5, "D": 0.7,
    "A1": 0.2, "A2.": 0.8, "D1": 0.6, "D2": 0.3, "C2.": 0.6,
    "D1a.": 0.4, "D1b.": 0.95, "D2a.": 0.5, "A1x.": 0.3,
    "A1.": 0.4, "D1b": 0.35, "D1b1.": 0.3, "D1b2.": 0.2, "B1.": 0.1,
}  # fmt: skip


def context(
    pool: ScriptedSteps, generations: int | None, tokens: int | None = None
) -> SearchContext:
    budget = BudgetConfig(generations=generations, tokens=tokens)
    return SearchContext(pool, StepScores(), SamplingSettings(), budget)  # type: ignore[arg-type]


BEAM = {
    "": ["A", "B", "C", "D"],
    "A\n": ["A1", "A2."],
    "D\n": ["D1", "D2"],
    "D\nD1\n": ["D1a.", "D1b."],
    "D\nD2\n": ["D2a."],
}
"""The hand-worked beam search below: 4 calls, then 4, then 3."""


async def test_beam_search_keeps_the_best_and_extends_them_round_robin() -> None:
    # N = 4, M = 2, 3 rounds. Round 1: A .9, B .1, C .5, D .7 -> keep ceil(4/2) = 2: A, D.
    # Round 2: A -> A1, A2. (finished); D -> D1, D2. Three to finish: keep 2, D1 and D2.
    # Round 3 (the last: written to the end): D1 twice, D2 once.
    pool = ScriptedSteps(BEAM)
    settings = BeamSearchSettings(beam_width=2, max_steps=3, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, 4), settings)
    texts = [c.text for c in result.candidates]
    assert texts == [
        "A\n", "B\n", "C\n", "D\n",
        "A\nA1\n", "A\nA2.", "D\nD1\n", "D\nD2\n",
        "D\nD1\nD1a.", "D\nD1\nD1b.", "D\nD2\nD2a.",
    ]  # fmt: skip
    assert [c.partial for c in result.candidates] == [True] * 5 + [False, True, True] + [False] * 3
    assert [c.parents for c in result.candidates][4:] == [(0,), (0,), (3,), (3,), (6,), (6,), (7,)]
    # The last round does not stop at the separator; every other does.
    assert [stops for _, stops in pool.requests] == [True] * 8 + [False] * 3
    # N solutions finished: 4 generations; every step call's tokens charged.
    assert result.spend["generations"] == 4
    assert result.spend["tokens"] == 15 * 11
    assert result.selected == 9  # D1b. (.95), the best finished solution
    assert {c.id for c in result.scored()} == {5, 8, 9, 10}


async def test_dvts_grows_independent_subtrees_each_keeping_its_best() -> None:
    # N = 4, M = 2: two subtrees of width 2. Round 1: subtree 1 writes A .9 and B .1 and
    # keeps A; subtree 2 writes C .5 and D .7 and keeps D. Round 2: A -> A1, A2. (one
    # finished, A1 kept); D -> D1 .6, D2 .3 (D1 kept). Round 3, the last: A1 once, D1 twice.
    pool = ScriptedSteps(
        {
            "": ["A", "B", "C", "D"],
            "A\n": ["A1", "A2."],  # subtree 1: A2. finishes; A1 goes on alone
            "D\n": ["D1", "D2"],  # subtree 2: D1 .6 kept
            "A\nA1\n": ["A1x."],
            "D\nD1\n": ["D1a.", "D1b."],
        }
    )
    settings = DVTSSettings(beam_width=2, max_steps=3, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, 4), settings)
    texts = [c.text for c in result.candidates]
    assert texts == [
        "A\n", "B\n", "C\n", "D\n",
        "A\nA1\n", "A\nA2.", "D\nD1\n", "D\nD2\n",
        "A\nA1\nA1x.", "D\nD1\nD1a.", "D\nD1\nD1b.",
    ]  # fmt: skip
    # Each subtree extended only its own best: B and C were never extended.
    prefixes = [prefix for prefix, _ in pool.requests]
    assert "B\n" not in prefixes and "C\n" not in prefixes
    assert result.spend["generations"] == 4
    assert result.selected == 10  # D1b.


async def test_a_search_that_finishes_early_stops_early() -> None:
    pool = ScriptedSteps({"": ["A2.", "C2."]})
    settings = BeamSearchSettings(beam_width=2, max_steps=40, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, 2), settings)
    assert [c.text for c in result.candidates] == ["A2.", "C2."]
    assert result.spend["generations"] == 2 and result.selected == 0


async def test_a_solution_that_stops_early_loses_to_one_that_reaches_the_answer() -> None:
    # 7 -> 12 -> 36. Round 1: one solution stops after its first (right) step; the other
    # goes on from the same step and finishes with the answer. The partial step is judged
    # unfinished (right so far, 1); the early stop finished (the answer not reached, 0).
    problem = Problem(7, (("+", 5), ("*", 3)))
    pool = ScriptedSteps({"": ["7 + 5 = 12.", "7 + 5 = 12"], "7 + 5 = 12\n": ["12 * 3 = 36."]})
    ctx = SearchContext(
        pool, ArithmeticStepsReward(SEP, "last"), SamplingSettings(), BudgetConfig(generations=2)
    )  # type: ignore[arg-type]
    settings = BeamSearchSettings(beam_width=2, max_steps=3, separator=SEP)
    result = await run_strategy(problem.prompt("p"), ctx, settings)
    assert [(c.text, c.partial, c.reward) for c in result.candidates] == [
        ("7 + 5 = 12.", False, 0.0),
        ("7 + 5 = 12\n", True, 1.0),
        ("7 + 5 = 12\n12 * 3 = 36.", False, 1.0),
    ]
    assert result.selected == 2


@pytest.mark.parametrize("first", [["A", "A", "C", "D"], ["A", "A", "D", "C"]])
async def test_duplicates_can_be_filtered(first: list[str]) -> None:
    # A twice counts once: the two kept are A and D (.7 over C's .5), not A and A, in
    # whichever order D and C come.
    script = {"": first, "A\n": ["A2.", "A2."], "D\n": ["C2.", "C2."]}
    kept = await run_strategy(
        PROMPT,
        context(ScriptedSteps(script), 4),
        BeamSearchSettings(beam_width=2, max_steps=3, separator=SEP, filter_duplicates=True),
    )
    assert [c.text for c in kept.candidates][4:] == ["A\nA2.", "A\nA2.", "D\nC2.", "D\nC2."]


def test_a_separator_must_match_the_process_reward_and_a_budget_is_checked() -> None:
    base = {"models": [{"name": "m", "model": "/m"}]}
    with pytest.raises(ConfigError, match="is not the reward's"):
        SynthesizeConfig.model_validate(
            {
                **base,
                "reward": {"kind": "arithmetic_steps"},
                "strategy": {"kind": "beam_search", "separator": "\n\n"},
            }
        ).check_models()
    with pytest.raises(ValidationError, match="is not the reward's"):
        SweepConfig.model_validate(
            {
                **base,
                "reward": {"kind": "arithmetic_steps"},
                "methods": [{"name": "b", "strategy": {"kind": "dvts", "separator": "\n\n"}}],
            }
        )
    with pytest.raises(ValidationError, match="separator"):
        BeamSearchSettings(separator="")
