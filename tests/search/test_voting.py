"""Majority voting and weighted best-of-N: tallies, ties, samples without an answer, and
the vote as a strategy's choice on the toy pool."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from multisample.engine.config import BudgetConfig
from multisample.engine.rewards.base import Reward
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.search.base import SampleRecord, SearchContext
from multisample.search.registry import run_strategy
from multisample.search.voting import (
    MajoritySettings,
    WeightedBestOfNSettings,
    tally,
    voted,
    winner,
)
from tests.search.toy import ToyPool

PROMPT = Prompt(id="q", prompt="How many?", reference="12")


def samples(*items: tuple[str, float | None]) -> list[SampleRecord]:
    return [SampleRecord(i, text, reward) for i, (text, reward) in enumerate(items)]


def test_a_tally_counts_canonical_answers_and_skips_samples_without_one() -> None:
    assert tally(["1,000", "1000", None, "12", "1000.0"]) == {"1000": 3.0, "12": 1.0}
    assert tally(["a", "b", "a"], [0.5, 0.9, 0.25]) == {"a": 0.75, "b": 0.9}
    assert tally([None, None]) == {}


def test_a_tie_goes_to_the_answer_reached_first() -> None:
    assert winner({"7": 2.0, "9": 2.0}) == "7"
    assert winner({"9": 2.0, "7": 2.0}) == "9"
    assert winner({}) is None


def test_majority_answers_with_the_first_sample_of_the_most_common_answer() -> None:
    found = samples(
        ("The answer is 9.", 0.9),
        ("The answer is 12.", 0.1),
        ("I give up", 1.0),  # no answer: no vote, whatever its reward
        ("So \\boxed{12}", 0.2),
        ("The answer is 9", 0.3),
        ("The answer is 12.0", 0.0),
    )
    assert voted(found, PROMPT, weighted=False) == 1  # 12 has three votes, 9 two
    assert MajoritySettings().choose(found, PROMPT) == 1
    # Weighted: 9 sums 1.2, 12 sums 0.3.
    assert voted(found, PROMPT, weighted=True) == 0
    assert WeightedBestOfNSettings().choose(found, PROMPT) == 0


def test_a_vote_with_no_answer_chooses_nothing_and_ties_are_stable() -> None:
    assert voted(samples(("hmm", 1.0), ("no idea", 0.5)), PROMPT, weighted=False) is None
    tie = samples(("answer: 3", 0.5), ("answer: 4", 0.5), ("answer: 4", 0.5), ("answer: 3", 0.5))
    assert voted(tie, PROMPT, weighted=False) == 0
    assert voted(list(reversed(tie)), PROMPT, weighted=True) == 0  # by id, not by order given


def test_weights_can_outvote_a_majority_reached_first() -> None:
    found = samples(("answer: 12", 0.1), ("answer: 9", 0.9), ("answer: 12", 0.1))
    assert voted(found, PROMPT, weighted=False) == 0  # 12: two votes
    assert voted(found, PROMPT, weighted=True) == 1  # 9: 0.9 against 0.2


def test_a_vote_reads_answers_as_the_prompt_says() -> None:
    found = samples(("The answer is 9", 0.5), ("The answer is 9. Check: 12", 0.5), ("12", 0.5))
    assert voted(found, PROMPT, weighted=False) == 0  # "the answer is" first: 9, 9, 12
    last = PROMPT.model_copy(update={"extract": ("last_number",)})
    assert voted(found, last, weighted=False) == 1  # the last number: 9, 12, 12


def test_a_weighted_vote_counts_only_scored_samples() -> None:
    found = samples(("answer: 3", None), ("answer: 3", None), ("answer: 4", 0.1))
    assert voted(found, PROMPT, weighted=True) == 2


class AnswerPool(ToyPool):
    """Answers 'The answer is A' with A from a fixed cycle, one per request in order."""

    def __init__(self, cycle: Sequence[str]) -> None:
        super().__init__(("a",))
        self.cycle = list(cycle)
        self.made = 0

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        texts = []
        for _ in requests:
            texts.append(f"The answer is {self.cycle[self.made % len(self.cycle)]}.")
            self.made += 1
        return [
            Generation(t, model, 10, 5, "stop", r.seed, 0.001)
            for t, r in zip(texts, requests, strict=True)
        ]


class LengthReward(Reward):
    name = "length"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        return [len(r) / 100 for r in responses]


@pytest.mark.parametrize(
    ("settings", "selected"),
    [(MajoritySettings(), 0), (WeightedBestOfNSettings(), 0)],
)
async def test_a_voting_search_records_its_choice(
    settings: MajoritySettings, selected: int
) -> None:
    pool = AnswerPool(["12", "100", "12", "7"])
    ctx = SearchContext(pool, LengthReward(), SamplingSettings(), BudgetConfig(generations=4))  # type: ignore[arg-type]
    result = await run_strategy(PROMPT, ctx, settings)
    assert result.selected == selected
    records = result.sample_records()
    assert [r["selected"] for r in records] == [True, False, False, False]
    assert [r["answer"] for r in records] == ["12", "100", "12", "7"]
    # Best-of-N would have answered with the longest: "100".
    assert result.best() is not None and result.best().id == 1  # type: ignore[union-attr]
