"""engine/budget.py rules test_budget.py leaves unpinned; each test killed surviving
mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

from multisample.engine.budget import Budget
from multisample.engine.config import BudgetConfig


def test_reservations_of_concurrent_calls_add_up() -> None:
    # Two calls in flight hold 2 + 3 generations: 10 - 5 remain, not 10 - 3.
    budget = Budget(BudgetConfig(generations=10))
    budget.reserve(2)
    budget.reserve(3)
    assert (budget.reserved, budget.remaining_generations()) == (5, 5)
    assert budget.can_generate(5) and not budget.can_generate(6)
