"""engine.locks with a second process as the other holder: refused at once without waiting,
waited for with it, and no stale lock after the holder is SIGKILLed."""

from __future__ import annotations

import os
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
import sys
from pathlib import Path
from multisample.engine.locks import lock
fd = lock(Path(sys.argv[1]), wait=False)
print("held" if fd is not None else "refused", flush=True)
sys.stdin.read()  # hold it until killed (or until the test's process is gone)
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A lock file held by another process until it is killed."""
    path = tmp_path / ".lock"
    command = [sys.executable, "-c", HOLDER, str(path)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:  # leaving it closes the pipes and waits for the holder's end
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            yield path, holder
        finally:
            holder.kill()


def test_no_lock_file_is_not_held(tmp_path: Path) -> None:
    assert not locked_elsewhere(tmp_path / ".lock")
    assert not (tmp_path / ".lock").exists()  # asking created nothing


def test_refused_at_once_while_held_and_free_after_sigkill(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, holder = held
    assert locked_elsewhere(path)
    assert lock(path, wait=False) is None  # one that waited would never return: pytest's timeout
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not locked_elsewhere(path)
    fd = lock(path, wait=False)
    assert fd is not None
    unlock(fd)


def blocked_on(path: Path) -> bool:
    """Does the kernel list this process as waiting for the flock of `path`? (/proc/locks
    marks a blocked waiter's line with '->'; its fields: pid, then major:minor:inode.)"""
    inode, pid = str(path.stat().st_ino), str(os.getpid())
    lines = Path("/proc/locks").read_text().splitlines()
    return any(
        f[1:3] == ["->", "FLOCK"] and f[5] == pid and f[6].rsplit(":", 1)[1] == inode
        for f in map(str.split, lines)
    )


def test_holding_waits_for_the_other_holder(held: tuple[Path, subprocess.Popen[str]]) -> None:
    path, holder = held
    got: list[float] = []

    def wait_for_it() -> None:
        with holding(path):
            got.append(time.perf_counter())

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    while not blocked_on(path):  # until the waiter really waits in the kernel
        assert not got, "holding took a lock another process holds"
        os.sched_yield()  # (reading /proc/locks lets the waiter's thread run)
    assert not got  # still waiting
    released = time.perf_counter()
    holder.kill()
    waiter.join()
    assert got and got[0] >= released
    assert not locked_elsewhere(path)  # and let go after the block
