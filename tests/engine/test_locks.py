"""engine.locks with a second process as the other holder: refused at once without waiting,
waited for with it, and no stale lock after the holder is SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from multisample.engine.locks import holding, lock, locked_elsewhere, unlock

HOLDER = """
import sys, time
from pathlib import Path
from multisample.engine.locks import lock
fd = lock(Path(sys.argv[1]), wait=False)
print("held" if fd is not None else "refused", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A lock file held by another process (for 60 s unless killed)."""
    path = tmp_path / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "60"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    yield path, holder
    holder.kill()
    holder.wait()


def test_no_lock_file_is_not_held(tmp_path: Path) -> None:
    assert not locked_elsewhere(tmp_path / ".lock")
    assert not (tmp_path / ".lock").exists()  # asking created nothing


def test_refused_at_once_while_held_and_free_after_sigkill(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, holder = held
    assert locked_elsewhere(path)
    start = time.perf_counter()
    assert lock(path, wait=False) is None
    assert time.perf_counter() - start < 1
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not locked_elsewhere(path)
    fd = lock(path, wait=False)
    assert fd is not None
    unlock(fd)


def test_holding_waits_for_the_other_holder(held: tuple[Path, subprocess.Popen[str]]) -> None:
    path, holder = held
    got: list[float] = []

    def wait_for_it() -> None:
        with holding(path):
            got.append(time.perf_counter())

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.5)
    assert not got  # still waiting
    released = time.perf_counter()
    holder.kill()
    waiter.join(timeout=10)
    assert got and got[0] >= released
    assert not locked_elsewhere(path)  # and let go after the block
