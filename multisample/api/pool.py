"""`Pool`: the models of a config, started once and shared by every run of a process.

Starting engines is the expensive part of a run (about a minute for the two embedded
models on a CPU). A started `Pool` is given to `synthesize`, `sweep` and `select`
(`pool=`), which then start nothing and leave it running. It lives on the library's event
loop (multisample/loop.py), so a pool started synchronously (`with Pool(...)`, in a
notebook) and one started with `async with` serve every later run the same way.
"""

from __future__ import annotations

from types import TracebackType

from multisample.api.configs import ConfigSource, pool_config
from multisample.api.loop import close_at_exit, forget_at_exit, run_here, run_sync
from multisample.engine.config import PoolConfig
from multisample.engine.pool import ModelPool


class PoolNotStartedError(RuntimeError):
    """A run was given a pool that is not started (or already closed)."""


class Pool:
    """The models of `config` (a PoolConfig or any run config, a dict of the YAML's
    `models` and pool settings, or a YAML file whose other settings are ignored).

    Use it as `async with Pool(config) as pool:`, `with Pool(config) as pool:`, or with
    `start()` / `close()` (`start_sync()` / `close_sync()`); a pool never closed is
    closed when the interpreter exits."""

    def __init__(self, config: ConfigSource) -> None:
        self.config: PoolConfig = pool_config(config)
        self._pool: ModelPool | None = None

    @property
    def names(self) -> list[str]:
        """Every model name the pool serves (adapters included)."""
        return self.config.model_names()

    @property
    def started(self) -> bool:
        return self._pool is not None

    @property
    def model_pool(self) -> ModelPool:
        """The engine's started `ModelPool` (what the internal run functions take)."""
        if self._pool is None:
            raise PoolNotStartedError(
                "this Pool is not started: use `with Pool(...)`, `async with Pool(...)` or "
                "start it first"
            )
        return self._pool

    async def start(self) -> Pool:
        """Start every model (no-op if started); returns the pool."""
        await run_here(self._start())
        return self

    async def close(self) -> None:
        """Stop every model (no-op if not started)."""
        await run_here(self._close())

    def start_sync(self) -> Pool:
        """`start()` from synchronous code (a script, a notebook cell)."""
        return run_sync(self.start())

    def close_sync(self) -> None:
        """`close()` from synchronous code."""
        run_sync(self.close())

    async def _start(self) -> None:
        if self._pool is not None:
            return
        pool = ModelPool(self.config)
        await pool.start()
        self._pool = pool
        close_at_exit(self._close)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        forget_at_exit(self._close)
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Pool:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __enter__(self) -> Pool:
        return self.start_sync()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_sync()

    def __repr__(self) -> str:
        state = "started" if self.started else "not started"
        return f"Pool({', '.join(self.names)}; {state})"
