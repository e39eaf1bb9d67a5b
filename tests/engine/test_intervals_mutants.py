"""engine/intervals.py at the edges test_intervals.py leaves open; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import pytest

from engine.intervals import sign_test_p_value


@pytest.mark.parametrize(("wins", "losses"), [(-1, 2), (2, -1), (-3, -3)])
def test_a_negative_count_on_either_side_is_refused_by_name(wins: int, losses: int) -> None:
    # Checked before scipy sees the counts: the message gives both.
    with pytest.raises(ValueError, match=rf"^counts must be >= 0 \(got {wins}, {losses}\)$"):
        sign_test_p_value(wins, losses)
