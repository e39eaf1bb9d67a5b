"""An interrupted `multisample select` resumes from its last committed round with nothing
lost or counted twice: the process (and its Ray workers) is SIGKILLed mid-run, twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from multisample.bandits.adaptation import dpo_file, sft_file
from multisample.bandits.select.state import ANSWERS, ROUNDS, STATE, SelectState
from multisample.engine.storage import SUMMARY, read_jsonl
from tests.reliability.helpers import sweep_session

pytestmark = pytest.mark.engine

ROUNDS_TOTAL = 9
BATCH = 3
CANDIDATES = ["plain", "terse", "hot"]
CONFIG = {
    # One engine, three candidates: variants share it, so each start takes ~20 s.
    "models": [{"name": "smollm2", "model": "embedded:smollm2-135m-instruct"}],
    "candidates": [
        {"name": "plain", "model": "smollm2"},
        {"name": "terse", "model": "smollm2", "system_prompt": "Answer in one word only."},
        {"name": "hot", "model": "smollm2", "sampling": {"temperature": 1.5}},
    ],
    "limit": 8,
    "batch": BATCH,
    "rounds": ROUNDS_TOTAL,
    "sampling": {"temperature": 0.8, "max_tokens": 12},
}


def start(config: Path, out: Path, resume: bool) -> subprocess.Popen[bytes]:
    multisample = Path(sys.executable).with_name("multisample")
    command = [multisample, "select", config, "--name", "run", "--output-dir", out]
    return subprocess.Popen(
        [*command, *(["--resume"] if resume else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session: the kill takes its Ray workers too
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def kill_session(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its session (Ray's GCS, raylet, workers),
    until none of them is alive: a zombie counts as dead (PID 1 may never reap orphans)."""
    sweep_session(process.pid)
    process.wait()


def committed_round(run: Path) -> int:
    try:
        return json.loads((run / STATE).read_bytes())["round"]
    except (OSError, ValueError):
        return 0


def kill_after_round(process: subprocess.Popen[bytes], run: Path, round_: int) -> int:
    while committed_round(run) < round_:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.2)
    kill_session(process)
    return committed_round(run)


def test_killed_select_resumes_with_nothing_lost_or_counted_twice(tmp_path: Path) -> None:
    config = tmp_path / "select.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"

    first = kill_after_round(start(config, tmp_path, resume=False), run, 2)
    second = kill_after_round(start(config, tmp_path, resume=True), run, first + 2)
    assert 2 <= first < second < ROUNDS_TOTAL, "the kills must land mid-run"
    # The state file each kill left is whole and valid.
    SelectState.parse(run / STATE, CANDIDATES, "co_ucb")

    final = start(config, tmp_path, resume=True)
    _, stderr = final.communicate()
    assert final.returncode == 0, stderr.decode()

    summary = json.loads((run / SUMMARY).read_text())
    assert summary["status"] == "complete"
    assert summary["rounds"] == ROUNDS_TOTAL
    rows = list(read_jsonl(run / ROUNDS))
    answers = list(read_jsonl(run / ANSWERS))
    assert [r["round"] for r in rows] == list(range(1, ROUNDS_TOTAL + 1))
    assert len(answers) == ROUNDS_TOTAL * BATCH == summary["queries"]
    assert max(Counter((a["round"], a["query_id"]) for a in answers).values()) == 1
    # Queries run through the 8 prompts in order, then reshuffled passes: no query of a
    # pass is skipped or repeated across the kills.
    ids = [a["query_id"] for a in answers]
    assert len(set(ids[:8])) == 8 and len(set(ids[8:16])) == 8

    # Counted once: the state's totals are the history's sums.
    wins = [[0] * 3 for _ in CANDIDATES]
    for r in rows:
        i, j = CANDIDATES.index(r["first"]), CANDIDATES.index(r["second"])
        wins[i][j] += r["first_wins"]
        wins[j][i] += r["second_wins"]
    assert summary["wins"] == wins
    assert summary["ties"] == sum(r["ties"] for r in rows)
    strict = [a for a in answers if a["preferred"] is not None]
    for name in CANDIDATES:
        mine = sum(name in (a["first"], a["second"]) for a in strict)
        assert len(list(read_jsonl(run / sft_file(name)))) == mine
        assert len(list(read_jsonl(run / dpo_file(name)))) == mine

    # Every line of every file parses (no torn line survived the repair).
    for file in [*run.glob("*.jsonl"), *run.glob("adaptation/*.jsonl")]:
        for line in file.read_bytes().splitlines():
            json.loads(line)
