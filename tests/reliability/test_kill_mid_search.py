"""Fault 1b: the process is killed (SIGKILL, whole process group) mid-search, at 30%, 60%
and 90% of a run's generations; `--resume` finishes it from the journal.

The records must equal an uninterrupted run's (every field but latency), the resumed
session must make exactly the generations that were not on disk at the kill (none made
twice), and what the kill lost must be at most the model calls that can be in flight.
The endpoint on loopback counts every request it is sent, so the generations made in
all are counted, not estimated. The same against the real engine is the reliability
benchmark's (benchmarks/reliability.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from multisample.engine.journal import JOURNAL
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.run import synthesize
from tests.engine.fake_openai import FakeOpenAIServer, server
from tests.reliability.helpers import (
    PAIRS,
    PROGRESS,
    SAMPLES,
    SUMMARY,
    all_but_latency,
    compare_records,
    kill_session,
    pair_key,
    read_strict,
    sample_key,
    start_cli,
    write_config,
)
from tests.reliability.test_kill_resume import endpoint_settings

__all__ = ["server"]

PROMPTS = 9
BUDGET = 12
CONCURRENCY = 2
DELAY_S = {"a": 0.02, "b": 0.1}
"""Model b answers later, so that model a's calls are back (and journaled) while b's are
still in flight."""
STRATEGIES: dict[str, dict[str, Any]] = {
    "toa": {"kind": "toa", "plays_in_flight": 2},
    "ensemble": {"kind": "ensemble"},
}
FRACTIONS = (0.3, 0.6, 0.9)
"""Where the run is killed, as fractions of an uninterrupted run's generations."""
IN_FLIGHT = {"toa": CONCURRENCY * 2, "ensemble": CONCURRENCY * BUDGET}
"""Generations that can be in flight at once: TOA's plays of the searches running, one
generation a call; the ensemble's batches (each model's share is one call)."""


def settings_for(server: FakeOpenAIServer, kind: str, tmp_path: Path) -> dict[str, Any]:
    models = [f"mid-{kind}-{tmp_path.name}-{m}" for m in "ab"]
    settings = endpoint_settings(server, models[0], output_dir=str(tmp_path))
    settings.update(
        models=[
            {**settings["models"][0], "name": name, "model": model}
            for name, model in zip(("a", "b"), models, strict=True)
        ],
        limit=PROMPTS,
        strategy=STRATEGIES[kind],
        budget={"generations": BUDGET},
        concurrency=CONCURRENCY,
    )
    for spec in settings["models"]:
        server.delay_s[spec["model"]] = DELAY_S[spec["name"]]
    return settings


def served(server: FakeOpenAIServer, settings: dict[str, Any], answered: bool = False) -> int:
    """Requests the models were sent (`answered`: and have answered)."""
    with server.lock:
        sent = sum(len(server.requests[m["model"]]) for m in settings["models"])
        return sent - (
            sum(server.in_flight[m["model"]] for m in settings["models"]) if answered else 0
        )


def complete_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file as a resume reads it: a torn last line dropped."""
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def on_disk(run: Path) -> tuple[int, int]:
    """Generations a resume finds: of committed prompts, and in the journal of the rest."""
    done = {r["prompt_id"] for r in complete_lines(run / PROGRESS)}
    committed = sum(1 for r in complete_lines(run / SAMPLES) if r["prompt_id"] in done)
    journaled = 0
    for path in sorted((run / JOURNAL).glob("*.jsonl")):
        lines = complete_lines(path)
        if lines and lines[0]["prompt_id"] not in done:
            journaled += sum(1 for line in lines if line["kind"] == "generation")
    return committed, journaled


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_sigkill_mid_search_loses_only_the_calls_in_flight(
    server: FakeOpenAIServer, tmp_path: Path, ledger: Any, kind: str
) -> None:
    settings = settings_for(server, kind, tmp_path)
    config = write_config(tmp_path / "config.yaml", settings)
    await synthesize(SynthesizeConfig.model_validate(settings), tmp_path / "reference")
    uninterrupted = served(server, settings)
    assert uninterrupted == PROMPTS * BUDGET

    run = tmp_path / "killed"
    log = tmp_path / "killed.log"
    args = ["synthesize", config, "--name", "killed", "--output-dir", tmp_path]
    lost_at: list[int] = []  # generations made but not on disk, at each kill
    journaled_at: list[int] = []  # generations of unfinished searches in the journal
    for attempt, fraction in enumerate(FRACTIONS):
        process = start_cli(*args, *(["--resume"] if attempt else []), log=log)
        slow = settings["models"][1]["model"]  # model b's
        try:
            while served(server, settings, answered=True) < uninterrupted * (1 + fraction):
                assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
                await asyncio.sleep(0.01)
            # From here model b answers nothing: the run cannot finish, and the kill finds
            # b's calls in flight while a's are back. The kill waits for a's answers to be
            # journaled too: the server counts an answer as sent a moment before the run
            # has read and journaled it.
            server.hold(slow)
            while server.in_flight[slow] == 0 or on_disk(run)[1] == 0:
                assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
                await asyncio.sleep(0.01)
        finally:
            kill_session(process)
            server.release(slow)
        assert not (run / SUMMARY).exists(), "the run finished before the kill"
        committed, journaled = on_disk(run)
        made = served(server, settings) - uninterrupted
        lost_at.append(made - (committed + journaled) - sum(lost_at))
        journaled_at.append(journaled)
    made_before = served(server, settings) - uninterrupted
    resumed = start_cli(*args, "--resume", log=log)
    assert resumed.wait() == 0, log.read_text(encoding="utf-8")[-3000:]
    made = served(server, settings) - uninterrupted
    summary = json.loads((run / SUMMARY).read_text(encoding="utf-8"))

    samples = compare_records(
        read_strict(run / SAMPLES),
        read_strict(tmp_path / "reference" / SAMPLES),
        sample_key,
        all_but_latency,
    )
    pairs = compare_records(
        read_strict(run / PAIRS), read_strict(tmp_path / "reference" / PAIRS), pair_key, dict
    )
    ledger(
        scenario=f"sigkill_mid_search_{kind}",
        faults={f"sigkill at {f:.0%} of the generations": 1 for f in FRACTIONS},
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected + pairs.expected,
        records_lost=samples.lost + pairs.lost,
        records_duplicated=samples.duplicated + pairs.duplicated,
        records_differing=samples.differing + pairs.differing,
        generations_uninterrupted=uninterrupted,
        generations_made=made,
        generations_lost_in_flight=sum(lost_at),
    )
    assert samples.equal, samples
    assert pairs.equal, pairs
    # Every generation made more than once was lost at a kill: none on disk was made again.
    assert made == uninterrupted + sum(lost_at)
    assert summary["this_session"]["generations"] == made - made_before
    assert summary["this_session"]["generations_replayed"] == journaled_at[-1]
    # Each kill lost at most what can be in flight (each kill found journaled searches,
    # which the last resume replayed: generations_replayed above).
    assert all(0 <= lost <= IN_FLIGHT[kind] for lost in lost_at), lost_at
    assert not (run / JOURNAL).exists()
