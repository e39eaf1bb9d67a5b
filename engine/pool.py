"""The model pool: every configured model behind one async `generate` call.

Routing is plain Python; each vLLM model lives in Ray actors of its own (one per
replica), each endpoint in an HTTP client. `await pool.generate(model, requests)` is the
only call strategies need.
A LoRA adapter is a pool model of its own, served by its base's engine;
`await pool.add_adapter(base, name, folder)` adds one (or a new version) while it runs;
`await pool.load_weights(model, folder)` replaces a model's weights (a merged LoRA) in place.
Faults the backends absorb (engine restarts, retried HTTP requests) are counted per model
in `pool.events()`, for run summaries.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from rich.console import Console

from multisample.engine import actors
from multisample.engine.adapters import AdapterError, ServedAdapter, check_adapter
from multisample.engine.backends.base import Backend, BackendError
from multisample.engine.backends.openai import OpenAIBackend
from multisample.engine.backends.vllm import VLLMBackend
from multisample.engine.config import (
    MODEL_NAME,
    ConfigError,
    OpenAIModelSpec,
    PoolConfig,
    VLLMModelSpec,
)
from multisample.engine.cpu_binding import replica_cores
from multisample.engine.types import Generation, GenerationRequest, Message, SamplingSettings
from multisample.engine.vllm_args import check_engine_args

logger = logging.getLogger(__name__)


class ModelPool:
    """Starts, routes to and stops the models of a `PoolConfig`."""

    def __init__(self, config: PoolConfig, default_sampling: SamplingSettings | None = None):
        self.config = config
        self.default_sampling = default_sampling or SamplingSettings()
        self.backends: dict[str, Backend] = {}
        self.gpu_start_gate = asyncio.Lock()
        """Held by an engine that starts on a share of a GPU: vLLM sizes its memory from
        what is free when it starts, so engines sharing a GPU start one after another."""
        for spec in config.models:
            self.backends[spec.name] = self._new_backend(spec)
        self.adapter_bases: dict[str, str] = {
            adapter.name: spec.name
            for spec in config.models
            if isinstance(spec, VLLMModelSpec)
            for adapter in spec.adapters
        }
        """The base model serving each adapter, by adapter name."""
        self._started = False

    def _new_backend(self, spec: VLLMModelSpec | OpenAIModelSpec) -> Backend:
        """The backend that serves `spec` (one per kind of model spec), not started."""
        if isinstance(spec, OpenAIModelSpec):
            return OpenAIBackend(spec, self.default_sampling)
        return VLLMBackend(
            spec,
            self.config.request_timeout_s,
            self.config.start_timeout_s,
            self.config.max_actor_restarts,
            replica_cores(self.config, spec),
            self.gpu_start_gate if actors.shares_a_gpu(spec) else None,
        )

    @property
    def names(self) -> list[str]:
        """Every model name the pool serves: models, then adapters."""
        return [*self.backends, *self.adapter_bases]

    def spec(self, model: str) -> VLLMModelSpec | OpenAIModelSpec:
        """The spec of the model serving `model` (an adapter's base)."""
        return self.config.model(self.adapter_bases.get(model, model))

    def _backend(self, model: str) -> Backend:
        try:
            return self.backends[self.adapter_bases.get(model, model)]
        except KeyError:
            raise BackendError(f"no model named {model!r}; configured: {self.names}") from None

    def sampling(self, model: str, base: SamplingSettings | None = None) -> SamplingSettings:
        """`base` (or the run's defaults) with the fields the model's spec overrides."""
        base = base or self.default_sampling
        override = self.spec(model).sampling
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_unset=True))

    async def start(self) -> None:
        """Check the models' folders and engine arguments, connect to Ray if a model or the
        run's reward needs it and check the cluster has their GPUs, then start every model
        concurrently (engines on shares of a GPU one after another)."""
        if self._started:
            return
        if self.config.ray_address is None:
            check_local_models(self.config)
        check_engine_args(actors.spec_paths(self.config))
        if actors.specs(self.config):
            actors.connect(self.config)
            wait_s = 0.0 if self.config.ray_address is None else actors.CLUSTER_WAIT_S
            await actors.check_cluster_gpus(self.config, wait_s)
        results = await asyncio.gather(
            *(b.start() for b in self.backends.values()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        self._started = True

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One generation per request from `model` (a model or an adapter), in request
        order."""
        backend = self._backend(model)
        if model in self.adapter_bases and isinstance(backend, VLLMBackend):
            return await backend.generate(requests, adapter=model)
        return await backend.generate(requests)

    def stream(self, model: str, request: GenerationRequest) -> AsyncIterator[str | Generation]:
        """`model`'s response to one request as it is generated: its text piece by piece,
        then the whole Generation last."""
        backend = self._backend(model)
        if model in self.adapter_bases and isinstance(backend, VLLMBackend):
            return backend.stream(request, adapter=model)
        return backend.stream(request)

    async def add_adapter(
        self, base: str, name: str, path: str | Path, version: int | None = None
    ) -> ServedAdapter:
        """Serve the LoRA in folder `path` as pool model `name` on the running engine of
        `base`, without restarting it; a name already served by `base` gets a new
        version (`version`, or the previous one + 1). Raises AdapterError for a folder
        that does not fit the base, BackendError when the engine refuses it."""
        backend = self.backends.get(base)
        if not isinstance(backend, VLLMBackend):
            raise BackendError(f"add_adapter: {base!r} is not a vLLM model of this pool")
        if not re.match(MODEL_NAME, name) or name in self.backends:
            raise AdapterError(f"add_adapter: {name!r} is not a free model name")
        if self.adapter_bases.get(name, base) != base:
            raise AdapterError(f"add_adapter: {name!r} is an adapter of another model")
        folder = Path(path).resolve()
        if self.config.ray_address is None:  # on a cluster, the engine's node has the folder
            from multisample.engine.model_folders import resolve_model_path

            base_folder = resolve_model_path(backend.spec.model)
            check_adapter(folder, base_folder, backend.spec.max_lora_rank)
        served = await backend.add_adapter(name, str(folder), version)
        self.adapter_bases[name] = base
        return served

    async def load_weights(self, model: str, path: str | Path) -> None:
        """Replace the weights of vLLM model `model` in its running engine with those in
        folder `path` (safetensors with the model's own names and shapes, such as a merged
        LoRA); it serves them from the next request on, without a restart."""
        backend = self.backends.get(model)
        if not isinstance(backend, VLLMBackend):
            raise BackendError(f"load_weights: {model!r} is not a vLLM model of this pool")
        await backend.load_weights(str(Path(path).resolve()))

    async def count_tokens(self, model: str, messages: Sequence[Message]) -> int | None:
        return await self._backend(model).count_tokens(messages)

    async def context_length(self, model: str) -> int | None:
        return await self._backend(model).context_length()

    def parameters(self, model: str) -> float | None:
        """Parameter count for FLOP estimates: the spec's, else what the engine read (an
        adapter's are its base's: its own are too few to count)."""
        spec = self.spec(model)
        if spec.parameters is not None:
            return spec.parameters
        info = getattr(self._backend(model), "info", {})
        return info.get("parameters")

    def events(self) -> dict[str, dict[str, int]]:
        """Faults absorbed so far, per model (`Backend.events`: engine restarts of vLLM
        models; retried attempts and failed requests of endpoint models). Counts only grow."""
        return {name: backend.events() for name, backend in self.backends.items()}

    def events_since(self, before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """`events()` minus an earlier snapshot: what one run of a shared pool absorbed."""
        return {
            model: {k: v - before.get(model, {}).get(k, 0) for k, v in counts.items()}
            for model, counts in self.events().items()
        }

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)
        self._started = False

    async def __aenter__(self) -> ModelPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@asynccontextmanager
async def pool_for(
    config: PoolConfig,
    sampling: SamplingSettings,
    console: Console,
    pool: ModelPool | None = None,
) -> AsyncIterator[ModelPool]:
    """`pool` when given (started, and left running: sweeps and tests share one);
    otherwise the config's own pool, started here and stopped on the way out."""
    if pool is not None:
        yield pool
        return
    with console.status(f"starting {len(config.models)} model(s): engines take a minute..."):
        own = ModelPool(config, sampling)
        await own.start()
    try:
        yield own
    finally:
        await own.close()


def check_local_models(config: PoolConfig) -> None:
    """Fail fast, naming the config field, when a local model folder is missing or an
    adapter cannot be served on its base (engine.adapters). (On a cluster, paths are
    resolved on the node that hosts the model instead.)"""
    from multisample.engine.embedded import EmbeddedModelError
    from multisample.engine.model_folders import ModelFolderError, resolve_model_path

    for index, spec in enumerate(config.models):
        if isinstance(spec, VLLMModelSpec):
            try:
                folder = resolve_model_path(spec.model, revision=spec.engine_args.get("revision"))
            except (EmbeddedModelError, ModelFolderError) as exc:
                raise ConfigError(f"models[{index}].model: {exc}") from None
            for number, adapter in enumerate(spec.adapters):
                try:
                    check_adapter(Path(adapter.path), folder, spec.max_lora_rank)
                except AdapterError as exc:
                    field = f"models[{index}].adapters[{number}].path"
                    raise ConfigError(f"{field} ({adapter.name}): {exc}") from None
