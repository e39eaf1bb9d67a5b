"""The library's own event loop: one daemon thread per process on which every `Pool`
lives and every run executes.

A started pool holds objects bound to the loop that started it (HTTP clients, Ray actor
handles, semaphores), so all of them start, run and close on this one loop: `await`
from any other loop (a script's `asyncio.run`, Jupyter's) hands the coroutine over and
waits for it, and `run_sync` does the same from plain synchronous code, which is what a
notebook needs, where a loop is already running and `asyncio.run` fails.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_at_exit: list[Callable[[], Awaitable[None]]] = []
"""Closers (of started pools) to run on the loop when the interpreter exits."""

EXIT_TIMEOUT_S = 60.0
"""How long interpreter exit waits for started pools to close."""

WAKE_S = 0.2
"""How often `run_sync`'s wait wakes up. Python runs a signal's handler in the main
thread, but the kernel may deliver a terminal's Ctrl-C to any thread (Ray's, the
library loop's), and then nothing interrupts the main thread's wait: it must wake up
to notice."""


def library_loop() -> asyncio.AbstractEventLoop:
    """The library's loop, started on first use in a daemon thread."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="multisample-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def on_library_loop() -> bool:
    """Whether the caller runs on the library's loop."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


async def run_here(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the library's loop, from whichever loop the caller is on.
    Cancelling the caller cancels it there too."""
    if on_library_loop():
        return await coro
    future = asyncio.run_coroutine_threadsafe(coro, library_loop())
    return await asyncio.wrap_future(future)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the library's loop and wait for its result: the synchronous form of
    every `await multisample....` call. Works where a loop is already running (Jupyter),
    since the caller's loop is not used. Ctrl-C (a notebook's interrupt) cancels the
    coroutine and waits for it to unwind, so a run directory is left resumable."""
    if on_library_loop():
        coro.close()
        raise RuntimeError(
            "run_sync was called on multisample's own event loop (it would wait for itself); "
            "await the coroutine instead"
        )
    unwound = threading.Event()

    async def tracked() -> T:
        try:
            return await coro
        finally:
            unwound.set()

    future = asyncio.run_coroutine_threadsafe(tracked(), library_loop())
    try:
        while not future.done():
            concurrent.futures.wait([future], timeout=WAKE_S)
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        unwound.wait(EXIT_TIMEOUT_S)
        raise


def close_at_exit(closer: Callable[[], Awaitable[None]]) -> None:
    """Run `closer` on the library's loop when the interpreter exits (a pool a notebook
    never closed), unless `forget_at_exit` takes it back first."""
    with _lock:
        _at_exit.append(closer)


def forget_at_exit(closer: Callable[[], Awaitable[None]]) -> None:
    with _lock:
        if closer in _at_exit:
            _at_exit.remove(closer)


@atexit.register
def _shutdown() -> None:
    """Close what is still open, then stop the loop (its thread is a daemon: it would
    otherwise die mid-close when the interpreter exits)."""
    with _lock:
        loop, closers = _loop, list(_at_exit)
        _at_exit.clear()
    if loop is None or loop.is_closed():
        return

    async def close_all() -> None:
        await asyncio.gather(*(closer() for closer in closers), return_exceptions=True)

    if closers and loop.is_running():
        future = asyncio.run_coroutine_threadsafe(close_all(), loop)
        try:
            future.result(EXIT_TIMEOUT_S)
        except Exception:  # exiting anyway: an engine that does not close is Ray's to reap
            future.cancel()
    loop.call_soon_threadsafe(loop.stop)
