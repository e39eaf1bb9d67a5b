"""VLLMBackend's restart bookkeeping with stand-in actors (no Ray, no engine): how many
restarts concurrent failures cause, what is re-issued, the limit, a failed restart, and
which Ray errors count as a dead engine. The real thing is in test_engine_faults.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

import multisample.engine.backends.vllm as vllm
from multisample.engine.actors import EngineDiedError, call
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.vllm import VLLMBackend
from multisample.engine.config import VLLMModelSpec
from multisample.engine.types import Generation, GenerationRequest, Message, SamplingSettings


class _Method:
    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def remote(self, *args: Any) -> Any:
        return self.function(*args)  # a coroutine, awaited like an ObjectRef


class FakeActor:
    """Answers like a VLLMEngineActor until `die()`; then every call fails as Ray's do."""

    def __init__(self, number: int, started: asyncio.Event | None = None) -> None:
        self.number = number
        self.dead = False
        self.calls: list[list[int]] = []
        self.gate = started
        self.start = _Method(self._start)
        self.generate = _Method(self._generate)
        self.count_tokens = _Method(self._count)
        self.shutdown = _Method(self._shutdown)

    def die(self) -> None:
        self.dead = True

    async def _start(self) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"node_id": "n", "pid": 1000 + self.number, "max_model_len": 2048}

    async def _generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.calls.append([r.seed for r in requests])
        if self.gate is not None:
            await self.gate.wait()
        if self.dead:
            raise ActorDiedError()
        return [
            Generation(f"actor{self.number} seed{r.seed}", "m", 1, 1, "stop", r.seed, 0.0)
            for r in requests
        ]

    async def _count(self, messages: list[Message]) -> int:
        if self.dead:
            raise ActorDiedError()
        return 7

    async def _shutdown(self) -> None:
        if self.dead:
            raise ActorDiedError()


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> VLLMBackend:
    spec = VLLMModelSpec.model_validate({"name": "m", "model": "x"})
    made: list[FakeActor] = []
    backend = VLLMBackend(spec, request_timeout_s=5, start_timeout_s=5, max_restarts=2)

    def new_actor(replica: object = None) -> FakeActor:
        made.append(FakeActor(len(made)))
        return made[-1]

    monkeypatch.setattr(backend, "_new_actor", new_actor)
    monkeypatch.setattr(vllm.ray, "kill", lambda actor, **kwargs: None)
    backend.made = made  # type: ignore[attr-defined]
    return backend


def requests(seeds: range) -> list[GenerationRequest]:
    return [GenerationRequest((Message("user", "hi"),), SamplingSettings(), s) for s in seeds]


async def test_concurrent_failures_cause_one_restart_and_every_request_is_reissued(
    backend: VLLMBackend, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.start()
    first: FakeActor = backend.actor
    first.gate = asyncio.Event()  # hold every batch in flight
    batches = [requests(range(10 * i, 10 * i + 4)) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="multisample.engine.backends.vllm"):
        tasks = [asyncio.ensure_future(backend.generate(b)) for b in batches]
        while sum(map(len, first.calls)) < sum(map(len, batches)):  # every request in flight
            await asyncio.sleep(0)
        first.die()
        first.gate.set()
        results = await asyncio.gather(*tasks)
    assert backend.restarts == 1 and len(backend.made) == 2  # type: ignore[attr-defined]
    for batch, result in zip(batches, results, strict=True):
        assert [g.text for g in result] == [f"actor1 seed{r.seed}" for r in batch]
    second: FakeActor = backend.actor
    assert sorted(map(tuple, second.calls)) == sorted(tuple(r.seed for r in b) for b in batches)
    assert backend.info["pid"] == 1001
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "restarting it (restart 1 of at most 2)" in m]) == 1
    assert "model 'm': the engine actor died during generate" in messages[0]


async def test_restarts_stop_at_the_limit_with_a_clear_error(backend: VLLMBackend) -> None:
    await backend.start()
    for _ in range(2):
        backend.actor.die()
        await backend.generate(requests(range(2)))
    backend.actor.die()
    with pytest.raises(BackendError) as info:
        await backend.generate(requests(range(2)))
    message = str(info.value)
    assert "\n" not in message and backend.restarts == 2
    assert message.startswith("model 'm': the engine actor died during generate")
    assert message.endswith("not restarting it again after 2 restart(s) (max_actor_restarts=2)")
    with pytest.raises(BackendError, match="max_actor_restarts=2"):  # and it stays failed
        await backend.count_tokens([Message("user", "hi")])


async def test_a_failed_restart_is_reported(
    backend: VLLMBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backend.start()
    backend.actor.die()

    async def cannot_start(actor: Any) -> dict[str, Any]:
        raise BackendError("model 'm': start took longer than 5 s")

    monkeypatch.setattr(backend, "_start_actor", cannot_start)
    with pytest.raises(BackendError, match="restarting it failed: model 'm': start took longer"):
        await backend.generate(requests(range(1)))


async def test_zero_restarts_fails_at_once(backend: VLLMBackend) -> None:
    backend.max_restarts = 0
    await backend.start()
    backend.actor.die()
    with pytest.raises(BackendError, match=r"after 0 restart\(s\) \(max_actor_restarts=0\)"):
        await backend.generate(requests(range(1)))


class EngineDeadError(Exception):
    """Stands in for vllm.v1.engine.exceptions.EngineDeadError (matched by name)."""


async def test_which_ray_errors_mean_a_dead_engine() -> None:
    async def raising(error: BaseException) -> None:
        raise error

    dead_actor = ActorDiedError()
    dead_engine = RayTaskError("generate", "tb", EngineDeadError("EngineCore died.\nmore"))
    other = RayTaskError("generate", "tb", ValueError("bad\nvalue"))
    with pytest.raises(EngineDiedError, match="the engine actor died during generate"):
        await call("m", raising(dead_actor), 5, "generate")
    with pytest.raises(EngineDiedError, match=r"the engine died during generate: EngineCore died$"):
        await call("m", raising(dead_engine.as_instanceof_cause()), 5, "generate")
    with pytest.raises(BackendError) as info:
        await call("m", raising(other.as_instanceof_cause()), 5, "generate")
    assert not isinstance(info.value, EngineDiedError)  # an ordinary failure: no restart
    assert str(info.value) == "model 'm': generate failed: bad"
