"""The UCB index (Auer et al. 2002), shared by TOA's tree search (search.toa) and the
bandit policies (bandits.formulas): one formula, so a change to it changes both."""

from __future__ import annotations

from typing import Any

import numpy as np


def ucb(mean: Any, count: Any, total: Any, unseen: float = np.inf, scale: float = 1.0) -> Any:
    """`mean + scale * sqrt(2 ln(total) / count)`, with `total` taken as at least 1, and
    `mean + unseen` where count == 0. Arrays broadcast (any leading axes); scalars give a
    numpy scalar. `total` must be at least `count` wherever count > 0, so the logarithm is
    never negative there."""
    count = np.asarray(count)
    seen = count > 0
    # The where below discards the bonus of unseen entries; compute it without warnings.
    bonus = np.sqrt(2.0 * np.log(np.maximum(total, 1)) / np.where(seen, count, 1))
    return mean + np.where(seen, scale * bonus, unseen)
