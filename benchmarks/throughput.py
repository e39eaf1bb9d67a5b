"""Throughput of multisample's best-of-N through the Ray pool, against vLLM's ceiling.

Same prompts, same sampling, same number of generated tokens (ignore_eos with a fixed
max_tokens), measured one after the other in this process on this machine:

  (a) vLLM's offline `LLM.generate` with every request at once: the engine's ceiling;
  (b) multisample: best-of-N over all prompts through the async Ray actor, with rewards;
  (c) the naive loop: the same pool, one request at a time (on a subset: it is slow).

Prints tokens/s of each and the ratios b/a (target >= 0.9) and c/a. The machines are
shared and noisy, so only ratios measured in one run mean anything.

    python benchmarks/throughput.py [--prompts 48] [--n 4] [--max-tokens 64]

On a GPU, `--num-gpus 1` puts both engines on it (each with `--gpu-memory-utilization`
of its memory, so that the second fits even if the first has not given its memory back).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time

from device_options import add_device_options

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def offline_ceiling(
    folder: str,
    texts: list[str],
    n: int,
    max_tokens: int,
    eager: bool,
    gpu_memory_utilization: float | None,
) -> tuple[int, float]:
    """(generated tokens, seconds) of vLLM's offline LLM on every request at once
    (`gpu_memory_utilization` None: on the CPU)."""
    from vllm import LLM, SamplingParams

    from multisample.engine.actors import cpu_engine_settings

    # The engine settings the pool uses (see engine.actors.build_engine).
    if gpu_memory_utilization is None:
        device = cpu_engine_settings({"max_model_len": 2048})
    else:
        device = {"max_model_len": 2048, "gpu_memory_utilization": gpu_memory_utilization}
    llm = LLM(
        model=folder,
        enable_prefix_caching=True,
        enforce_eager=eager,
        seed=0,
        **device,
    )
    conversations = [[{"role": "user", "content": t}] for t in texts for _ in range(n)]
    params = [
        SamplingParams(temperature=0.8, max_tokens=max_tokens, ignore_eos=True, seed=i)
        for i in range(len(conversations))
    ]
    llm.chat(conversations[:4], params[:4], use_tqdm=False)  # warm-up, as the pool gets
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    gc.collect()
    return tokens, elapsed


async def through_pool(
    model_ref: str,
    texts: list[str],
    n: int,
    max_tokens: int,
    naive_requests: int,
    eager: bool,
    num_gpus: float = 0.0,
    gpu_memory_utilization: float = 0.4,
) -> dict[str, tuple[int, float]]:
    from multisample.engine.config import BudgetConfig, PoolConfig
    from multisample.engine.pool import ModelPool
    from multisample.engine.rewards.verifiable import VerifiableRewardSpec
    from multisample.engine.types import GenerationRequest, Message, Prompt, SamplingSettings
    from multisample.search.base import SearchContext
    from multisample.search.best_of_n import BestOfNSettings
    from multisample.search.registry import run_strategy

    # The actor gets both cores, as the offline engine does.
    spec = {
        "name": "m",
        "model": model_ref,
        "num_cpus": os.cpu_count() or 1,
        "kv_cache_gib": 2,
        "enforce_eager": eager,
        "num_gpus": num_gpus,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    config = PoolConfig.model_validate({"models": [spec]})
    sampling = SamplingSettings(temperature=0.8, max_tokens=max_tokens, ignore_eos=True)
    async with ModelPool(config, sampling) as pool:
        reward = VerifiableRewardSpec(kind="verifiable").build(pool)
        ctx = SearchContext(pool, reward, sampling, BudgetConfig(generations=n), seed=0)
        prompts = [Prompt(id=f"p{i}", prompt=t) for i, t in enumerate(texts)]
        await run_strategy(prompts[0], ctx, BestOfNSettings())  # warm-up

        started = time.perf_counter()
        results = await asyncio.gather(*(run_strategy(p, ctx, BestOfNSettings()) for p in prompts))
        elapsed = time.perf_counter() - started
        tokens = sum(c.completion_tokens for r in results for c in r.candidates)

        one_at_a_time = [
            GenerationRequest((Message("user", texts[i % len(texts)]),), sampling, i)
            for i in range(naive_requests)
        ]
        naive_started = time.perf_counter()
        naive_tokens = 0
        for request in one_at_a_time:
            (generation,) = await pool.generate("m", [request])
            naive_tokens += generation.completion_tokens
        naive_elapsed = time.perf_counter() - naive_started
    return {"pool": (tokens, elapsed), "naive": (naive_tokens, naive_elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt (best-of-N)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--naive-requests", type=int, default=12)
    add_device_options(parser)
    parser.add_argument(
        "--compiled", action="store_true", help="torch.compile both engines (default: eager)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from multisample.engine.model_folders import resolve_model_path
    from multisample.engine.prompts import load_prompts

    texts = [p.prompt for p in load_prompts("embedded:tasks", args.prompts).prompts]
    folder = str(resolve_model_path(args.model))

    # Both engines compute on the cores the pool gives its one engine on this machine:
    # (a) bound by vLLM to them; (b) bound by the pool itself, as users' engines are (its
    # model in the engine-core process), unless the user set a binding for both.
    from multisample.engine.actors import BIND_VARIABLE, PROCESSES_VARIABLE
    from multisample.engine.cpu_binding import partition_cores

    users_binding = os.environ.get(BIND_VARIABLE)
    (cores,) = partition_cores(sorted(os.sched_getaffinity(0)), [1])
    cores_text = users_binding or ",".join(map(str, cores))

    eager = not args.compiled
    on_gpu = args.num_gpus > 0
    utilization = args.gpu_memory_utilization if on_gpu else None
    os.environ[BIND_VARIABLE] = cores_text
    a_tokens, a_s = offline_ceiling(folder, texts, args.n, args.max_tokens, eager, utilization)
    if users_binding is None:
        del os.environ[BIND_VARIABLE]
    pool = asyncio.run(
        through_pool(
            args.model,
            texts,
            args.n,
            args.max_tokens,
            args.naive_requests,
            eager,
            args.num_gpus,
            args.gpu_memory_utilization,
        )
    )
    (b_tokens, b_s), (c_tokens, c_s) = pool["pool"], pool["naive"]

    rate_a, rate_b, rate_c = a_tokens / a_s, b_tokens / b_s, c_tokens / c_s
    figures = {
        "requests": args.prompts * args.n,
        "max_tokens": args.max_tokens,
        "engines": "eager" if eager else "compiled",
        "device": f"{args.num_gpus:g} GPU" if on_gpu else "cpu",
        "cores": cores_text,
        "pool_binding": "the user's" if users_binding else "the pool's",
        "pool_model_runs_in": "vLLM's worker process"
        if users_binding or PROCESSES_VARIABLE in os.environ
        else "the engine-core process",
        "offline_tokens": a_tokens,
        "pool_tokens": b_tokens,
        "offline_tok_s": round(rate_a, 1),
        "pool_best_of_n_tok_s": round(rate_b, 1),
        "one_at_a_time_tok_s": round(rate_c, 1),
        "ratio_pool_over_offline": round(rate_b / rate_a, 3),
        "ratio_one_at_a_time_over_offline": round(rate_c / rate_a, 3),
    }
    rows = [
        ("(a) vLLM offline, all at once", rate_a, a_tokens, a_s),
        (f"(b) multisample best-of-{args.n}", rate_b, b_tokens, b_s),
        ("(c) one request at a time", rate_c, c_tokens, c_s),
    ]
    for label, rate, tokens, seconds in rows:
        print(f"{label:32} {rate:8.1f} tok/s  ({tokens} tokens, {seconds:.1f} s)")
    print(f"ratio b/a = {rate_b / rate_a:.3f}  (target >= 0.9)")
    print(f"ratio c/a = {rate_c / rate_a:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
