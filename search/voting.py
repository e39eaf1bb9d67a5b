"""Self-consistency (majority voting) and weighted best-of-N: one model samples N answers
as best-of-N does, and the search answers with the final answer most samples reach
(Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning"), or whose
samples' rewards sum highest (weighted best-of-N, as in search-and-learn; Li et al. 2023).

Answers are read from the samples with the prompt's extractors (engine.answers) and
compared by their canonical form, so "1,000", "1000" and "1000.0" are one answer. A sample
with no answer to read does not vote. A tie goes to the answer reached first (its first
sample has the lowest id), so the choice never depends on timing; the search answers with
that answer's first sample (`selected` in its records), and with none when no sample has
an answer. Weighted best-of-N sums the reward as given: meant for rewards in [0, 1] (a
process reward's, a judge's), where a higher sum is more support. Both are prefix-reusable:
the vote over a larger search's first b samples is the vote at budget b, so one large-N
run gives the whole curve (search.sweep).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from multisample.engine.answers import EXTRACTORS, canonical, extract_answer
from multisample.engine.types import Prompt
from multisample.search.base import Sample
from multisample.search.best_of_n import BestOfNSettings


class MajoritySettings(BestOfNSettings):
    kind: Literal["majority"] = "majority"  # type: ignore[assignment]

    def choose(self, samples: Sequence[Sample], prompt: Prompt) -> int | None:
        return voted(samples, prompt, weighted=False)


class WeightedBestOfNSettings(BestOfNSettings):
    kind: Literal["weighted_best_of_n"] = "weighted_best_of_n"  # type: ignore[assignment]

    def choose(self, samples: Sequence[Sample], prompt: Prompt) -> int | None:
        return voted(samples, prompt, weighted=True)


def tally(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Each answer's canonical form and its votes (or the sum of its samples' weights),
    in the order the answers are first reached; None (no answer) does not vote."""
    totals: dict[str, float] = defaultdict(float)
    for index, answer in enumerate(answers):
        if answer is not None:
            totals[canonical(answer)] += 1.0 if weights is None else weights[index]
    return dict(totals)


def winner(totals: dict[str, float]) -> str | None:
    """The answer with the most votes; on a tie, the one reached first."""
    return max(totals, key=totals.__getitem__) if totals else None  # max keeps the first


def voted(samples: Sequence[Sample], prompt: Prompt, weighted: bool) -> int | None:
    """The id of the first sample (by id) with the winning answer, None when none has
    one. A weighted vote counts only scored samples (a missing score is no weight)."""
    ordered = sorted((s for s in samples if not s.partial), key=lambda s: s.id)
    if weighted:
        ordered = [s for s in ordered if s.reward is not None]
    extractors = prompt.extract or EXTRACTORS
    answers = [extract_answer(s.text, extractors) for s in ordered]
    weights = [s.reward or 0.0 for s in ordered] if weighted else None
    best = winner(tally(answers, weights))
    return next(
        (
            s.id
            for s, a in zip(ordered, answers, strict=True)
            if a is not None and canonical(a) == best
        ),
        None,
    )
