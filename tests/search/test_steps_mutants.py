"""search/steps.py rules test_steps.py leaves unpinned; each test killed surviving
mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from multisample.engine.arithmetic import Problem
from multisample.engine.config import BudgetConfig, ConfigError
from multisample.engine.prompts import PromptFile
from multisample.engine.rewards.correct import CorrectRewardSpec
from multisample.engine.rewards.process import ArithmeticStepsReward, ArithmeticStepsSpec
from multisample.engine.types import (
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    SamplingSettings,
)
from multisample.search.base import SearchContext
from multisample.search.registry import run_strategy
from multisample.search.steps import (
    DEFAULT_SEPARATOR,
    BeamSearchSettings,
    DVTSSettings,
    _best,
    check_separators,
)
from tests.search.test_steps import BEAM, PROMPT, SEP, ScriptedSteps, context


class RecordingSteps(ScriptedSteps):
    """ScriptedSteps that also keeps the turns of every request."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__(script)
        self.turns: list[tuple[Message, ...]] = []

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.turns += [tuple(r.messages) for r in requests]
        return await super().generate(model, requests)


async def test_each_step_call_is_the_users_turn_and_its_candidates_say_where_they_are() -> None:
    pool = RecordingSteps(BEAM)
    settings = BeamSearchSettings(beam_width=2, max_steps=3, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, 4), settings)
    assert set(pool.turns) == {(Message("user", PROMPT.prompt),)}
    assert [c.step for c in result.candidates] == [0] * 4 + [1] * 4 + [2] * 3
    assert [c.depth for c in result.candidates] == [1] * 4 + [2] * 4 + [3] * 3
    assert {c.model for c in result.candidates} == {"m"}
    assert {r["strategy"] for r in result.sample_records()} == {"beam_search"}


async def test_without_a_separator_of_its_own_a_search_takes_the_rewards() -> None:
    problem = Problem(7, (("+", 5), ("*", 3)))
    pool = ScriptedSteps({"": ["7 + 5 = 12", "7 + 5 = 12."], "7 + 5 = 12\n": ["12 * 3 = 36."]})
    ctx = SearchContext(
        pool, ArithmeticStepsReward(SEP, "last"), SamplingSettings(), BudgetConfig(generations=2)
    )  # type: ignore[arg-type]
    await run_strategy(problem.prompt("p"), ctx, BeamSearchSettings(beam_width=2, max_steps=3))
    assert pool.requests[0] == ("", True)  # stopped at the reward's "\n"


def test_the_separator_is_the_searchs_else_the_rewards_else_search_and_learns() -> None:
    reward = ArithmeticStepsReward(";", "last")
    assert BeamSearchSettings().step_separator(reward) == ";"
    assert BeamSearchSettings(separator="|").step_separator(reward) == "|"
    assert BeamSearchSettings().step_separator(SimpleNamespace()) == DEFAULT_SEPARATOR


def test_only_a_separator_of_its_own_that_differs_from_the_process_rewards_is_refused() -> None:
    steps = ArithmeticStepsSpec(kind="arithmetic_steps", separator="\n")
    BeamSearchSettings().check_run(steps, None)  # the reward's own
    BeamSearchSettings(separator="\n").check_run(steps, None)
    BeamSearchSettings(separator="|").check_run(CorrectRewardSpec(kind="correct"), None)
    with pytest.raises(ValueError) as info:
        BeamSearchSettings(separator="|").check_run(steps, None)
    assert str(info.value) == (
        "separator '|' is not the reward's ('\\n'): the process reward would score other "
        "steps than the search takes"
    )


def test_a_separator_the_worked_examples_never_use_names_the_strategy_field() -> None:
    shown = Prompt(
        id="p1",
        prompt="7 + 5?",
        history=(Message("user", "1 + 1?"), Message("assistant", "1 + 1 = 2; The answer is 2")),
    )
    prompts = PromptFile(Path("tasks.jsonl"), [shown], {"p1": 3})
    reward = ArithmeticStepsReward(";", "last")
    check_separators([("strategy", BeamSearchSettings())], reward, prompts)  # ";" occurs
    with pytest.raises(ConfigError) as info:
        check_separators([("methods[1].strategy", DVTSSettings(separator="\n"))], reward, prompts)
    assert str(info.value).startswith("tasks.jsonl:3: methods[1].strategy.separator '\\n'")


def test_an_unscored_candidate_ranks_as_zero() -> None:
    unscored, scored = SimpleNamespace(id=0, reward=None), SimpleNamespace(id=1, reward=0.5)
    assert _best([unscored, scored], 1) == [scored]  # type: ignore[list-item]


async def test_solutions_finished_in_earlier_rounds_still_count() -> None:
    # N = 4, M = 2. Round 1 keeps A and D. Round 2: A1. and A2. finish (2 to go), D -> D1,
    # D2; D1 kept. Round 3: D1 -> D1a. (3 finished) and D1b. Round 4: D1b once, for the
    # last one; counting only round 3's finish would ask for 3 more.
    pool = ScriptedSteps(
        {
            "": ["A", "B", "C", "D"],
            "A\n": ["A1.", "A2."],
            "D\n": ["D1", "D2"],
            "D\nD1\n": ["D1a.", "D1b"],
            "D\nD1\nD1b\n": ["D1b1.", "D1b2."],
        }
    )
    settings = BeamSearchSettings(beam_width=2, max_steps=5, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, 4), settings)
    assert [c.text for c in result.candidates][-1] == "D\nD1\nD1b\nD1b1."
    assert len(result.candidates) == 11


async def test_under_a_token_limit_alone_a_search_grows_m_solutions_and_stops_at_the_limit() -> (
    None
):
    # No generation limit: N = M = 2. Round 1 generates 2 x 5 tokens, past the limit of 8.
    pool = ScriptedSteps({"": ["A", "B"], "A\n": ["A1."], "B\n": ["B1."]})
    settings = BeamSearchSettings(beam_width=2, max_steps=3, separator=SEP)
    result = await run_strategy(PROMPT, context(pool, None, tokens=8), settings)
    assert [c.text for c in result.candidates] == ["A\n", "B\n"]


async def test_a_search_whose_kept_solutions_run_out_stops_short() -> None:
    # Four times the same first step, filtered to one: it is extended twice (M = 2), both
    # finish, and nothing is left to extend though two solutions are still wanted.
    pool = ScriptedSteps({"": ["A", "A", "A", "A"], "A\n": ["A1.", "A2."]})
    settings = BeamSearchSettings(beam_width=2, max_steps=5, separator=SEP, filter_duplicates=True)
    result = await run_strategy(PROMPT, context(pool, 4), settings)
    assert [c.text for c in result.candidates] == ["A\n"] * 4 + ["A\nA1.", "A\nA2."]
