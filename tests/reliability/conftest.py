"""The fault tests' ledger: what each test injected and what came of it.

When MULTISAMPLE_RELIABILITY_LEDGER names a file, every test that uses `ledger` appends
one JSON line per entry to it, with its outcome (benchmarks/reliability.py runs these
tests so and prints the counts). Without it, the entries are dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

LEDGER_ENV = "MULTISAMPLE_RELIABILITY_LEDGER"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_OUTCOME] = report.outcome
    return report


_OUTCOME = pytest.StashKey[str]()


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """`ledger(scenario=..., **counts)` records one entry for the report."""
    entries: list[dict[str, Any]] = []
    yield lambda **entry: entries.append(entry)
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    outcome = request.node.stash.get(_OUTCOME, "error")
    with open(path, "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps({"test": request.node.nodeid, "outcome": outcome, **entry}))
            handle.write("\n")
