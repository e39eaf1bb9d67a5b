"""`multisample select` as a user runs it, in a process of its own: start it, watch the
rounds it commits, and SIGKILL it with everything it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from multisample.bandits.select.state import STATE
from tests.reliability.helpers import sweep_session


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


def kill_when(process: subprocess.Popen[bytes], happened: Callable[[], bool]) -> None:
    """Kill the run once `happened()` (read from the files it writes); it must live until
    then."""
    while not happened():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.1)
    kill_session(process)
