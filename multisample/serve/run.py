"""`multisample serve`: start the pool, the routes' rewards and the selection routes, then
answer HTTP until SIGTERM (or SIGINT), and close the run directory on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console

from multisample.bandits.select.config import RewardPreference
from multisample.engine.config import ConfigError
from multisample.engine.pool import ModelPool, pool_for
from multisample.engine.rewards.base import started_reward
from multisample.engine.storage import SUMMARY, check_run_directory, write_atomic
from multisample.serve.app import Server, build_app
from multisample.serve.config import RESUMABLE, ServeConfig
from multisample.serve.gateway import Gateway
from multisample.serve.metrics import Metrics
from multisample.serve.selection import SelectionRoute
from multisample.serve.traffic import Traffic

SERVER = "server.json"
"""Where a running server says where it listens ({url, host, port, pid})."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_S = 300
"""Longest wait on SIGTERM for the requests in flight to finish."""


@asynccontextmanager
async def serving(
    config: ServeConfig,
    path: Path,
    resume: bool = False,
    *,
    console: Console | None = None,
    pool: ModelPool | None = None,
) -> AsyncIterator[Server]:
    """The HTTP server's endpoints over a started pool (`pool`, left running, or the
    config's own), the routes' rewards started, the selection routes restored; on the way
    out every directory of the run is closed."""
    console = console or Console(stderr=True)
    check_address(config.host, config.port)  # both before the engines' minute of starting
    check_run_directory(path, config, resume, set(RESUMABLE))
    async with AsyncExitStack() as stack:
        started = await stack.enter_async_context(pool_for(config, config.sampling, console, pool))
        rewards = {
            route.name: await stack.enter_async_context(started_reward(route.reward, started))
            for route in config.routes
        }
        traffic = Traffic(path, config, resume)
        selections: dict[str, SelectionRoute] = {}
        for spec in config.selections:
            arbiter = None
            if isinstance(spec.feedback, RewardPreference):
                arbiter = await stack.enter_async_context(
                    started_reward(spec.feedback.reward, started)
                )
            selection = SelectionRoute(
                spec,
                config.select_config(spec),
                started,
                traffic.selection_path(spec.name),
                resume,
                arbiter,
            )
            await selection.restore()
            selections[spec.name] = selection
        gateway = Gateway(config, started, traffic, rewards, selections)
        server = Server(config, gateway, Metrics())
        try:
            yield server
        finally:
            for selection in selections.values():
                await selection.close()
            traffic.close({"status": "stopped", **gateway.summary()})


class ServeError(ConfigError):
    """The server cannot listen where its config says (the port is taken, the host is
    not this machine's)."""


def check_address(host: str, port: int) -> None:
    """Refuse an address the server could not listen on, before the engines start (the
    port may still be taken between this check and the server's start: then uvicorn's
    own error stops it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, protocol, _, address = infos[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling when it listens, and leaving the process's signals alone
    unless asked (a server inside a notebook or a test does not own them)."""

    def __init__(
        self,
        config: uvicorn.Config,
        listening: Callable[[str, int], None],
        stopping: Callable[[], None],
        signals: bool,
    ) -> None:
        super().__init__(config)
        self.listening = listening
        self.stopping = stopping
        self.signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM or SIGINT stops the server gracefully (a second one at once); unlike
        uvicorn's own handling, the signal is not raised again afterwards, so the run
        directory is closed and the command exits 0."""
        if not self.signals:
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self.stopping()
        self.handle_exit(sig, frame)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.listening(host, port)


@asynccontextmanager
async def listening(
    config: ServeConfig,
    path: Path,
    resume: bool = False,
    *,
    console: Console | None = None,
    pool: ModelPool | None = None,
    signals: bool = False,
) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The server listening: its URL, and the task that ends when it stops (on SIGTERM
    or SIGINT with `signals`; on leaving the context in any case, after the requests in
    flight have finished)."""
    console = console or Console(stderr=True)
    async with serving(config, path, resume, console=console, pool=pool) as server:
        ready = asyncio.Event()
        where: list[str] = []

        def listening(host: str, port: int) -> None:
            url = f"http://{host}:{port}"
            document = {"url": url, "host": host, "port": port, "pid": os.getpid()}
            write_atomic(path / SERVER, json.dumps(document) + "\n")
            console.print(f"serving on {url} (run directory {path})", highlight=False)
            where.append(url)
            ready.set()

        settings = uvicorn.Config(
            build_app(server),
            host=config.host,
            port=config.port,
            log_level="warning",
            timeout_graceful_shutdown=DRAIN_S,
            lifespan="off",
        )

        def stopping() -> None:
            console.print("stopping: the requests in flight finish first", highlight=False)

        front = _Uvicorn(settings, listening, stopping, signals)
        task = asyncio.create_task(front.serve())
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not ready.is_set():
            with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
                await task
            raise ServeError(f"cannot listen on {config.host}:{config.port} (see above)")
        try:
            yield where[0], task
        finally:
            front.should_exit = True
            await task


async def serve(
    config: ServeConfig,
    path: Path,
    resume: bool = False,
    *,
    console: Console | None = None,
    pool: ModelPool | None = None,
) -> dict[str, Any]:
    """Answer requests until SIGTERM or SIGINT; the requests in flight then finish, and
    the run directory is closed. Returns the run's summary."""
    async with listening(config, path, resume, console=console, pool=pool, signals=True) as (
        _,
        stopped,
    ):
        await asyncio.shield(stopped)
    return json.loads((path / SUMMARY).read_text(encoding="utf-8"))
