"""Exclusive advisory file locks (flock), for one process at a time on a shared folder.

An flock belongs to an open file: the OS drops it when the process ends, however it ends
(a SIGKILLed holder leaves no stale lock), so there is nothing to clean up. The lock file
itself stays; it is only a handle. Two opens of the same file conflict even inside one
process, so a caller that may ask twice keeps track of what it holds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["holding", "lock", "locked_elsewhere", "unlock"]


def lock(path: Path, wait: bool, mode: int = 0o644) -> int | None:
    """Take the lock of ``path`` (created with ``mode`` if missing). Returns the file
    descriptor that holds it (give it to :func:`unlock`), or None when ``wait`` is False
    and another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:  # e.g. Ctrl-C while waiting
        os.close(fd)
        raise
    return fd


def unlock(fd: int) -> None:
    """Let go of a lock taken by :func:`lock` (closing its file drops the flock)."""
    os.close(fd)


def locked_elsewhere(path: Path) -> bool:
    """Does another holder have the lock of ``path``? Asked without creating anything: no
    lock file means no process ever held it. Opened for writing, as an exclusive lock
    needs on NFS (which answers EBADF to one asked through a read-only descriptor)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the lock, if the probe took it
    return False


@contextmanager
def holding(path: Path, mode: int = 0o644) -> Iterator[None]:
    """Hold the lock of ``path`` for the block, waiting for any other holder first."""
    fd = lock(path, wait=True, mode=mode)
    assert fd is not None  # a waiting lock is always taken
    try:
        yield
    finally:
        unlock(fd)
