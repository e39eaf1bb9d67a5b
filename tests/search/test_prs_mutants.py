"""PRS's budget rules that test_prs.py leaves unpinned; each test killed surviving mutants
of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

from multisample.search.prs import PRSSettings


def test_sequential_rounds_are_samples_feedback_refinements_from_3_generations() -> None:
    # B >= 3: first layer, feedback, refinements; B = 2 has no feedback: two rounds.
    settings = PRSSettings()
    assert [settings.sequential_rounds(b, ["m"]) for b in (2, 3, 4, 16)] == [2, 3, 3, 3]
