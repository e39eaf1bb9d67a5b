"""Throughput of searches that wait on scores: generated tokens/s of TOA (as published, one
play at a time, and with its `plays_in_flight` option at 4 or 8), beam search and DVTS
against best-of-N's, at equal concurrency, on one engine (SmolLM2 unless `--model`).

The same `--prompts` generated arithmetic problems (2 operations) and budget
(`--budget` generations per problem) for every strategy, all problems searched at once
(the concurrency a sweep or synthesize run gives), the exact step checker as the reward
(it costs nothing: what is measured is the engine's time). Each strategy runs twice in
turn (best-of-N, the others, best-of-N again, ...), so a drift of the shared machine shows
as a difference between the two best-of-N runs. Reports each strategy's generated
tokens/s, its ratio to best-of-N's (the mean of the two), and what could leave the engine
idle or busy with other work: its requests per generated token, its generation rounds in
sequence, the requests it kept in flight (their mean over the run's time), its prompt
tokens, those past the last whole KV cache block (vLLM's prefix cache keeps whole blocks
only, and a step call's prompt is the problem and the solution so far) and those the
engine computed (the prefix cache held the rest), and the CPU seconds of vLLM's front end
(the engine's actor) and of its engine core.

Last, a probe prices a computed prompt token against a generated one on this engine
(`prefill_probe`), and the ratios to best-of-N are predicted from each run's computed
prompt tokens and generated tokens alone: where the prediction meets the measured ratio,
that work is what the time went on; where the measured ratio is lower, the engine waited.

    python benchmarks/search_throughput.py [--prompts 48] [--budget 8] [--json FILE]
        [--strategies toa beam_search ...] [--block-size 32]
        [--model M --num-gpus 1 --gpu-memory-utilization 0.4]

On a GPU (`--num-gpus`, benchmarks/gpu_smoke.sh) the same comparison prices the two
kinds of tokens where generating is bound by memory rather than arithmetic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from device_options import add_device_options

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STRATEGIES: dict[str, dict[str, Any]] = {
    "best_of_n": {"kind": "best_of_n"},
    "toa": {"kind": "toa"},
    # TOA's option for more requests in flight (not the published method: virtual loss).
    "toa_4_in_flight": {"kind": "toa", "plays_in_flight": 4},
    "toa_8_in_flight": {"kind": "toa", "plays_in_flight": 8},
    "beam_search": {"kind": "beam_search", "beam_width": 4, "max_steps": 4},
    "dvts": {"kind": "dvts", "beam_width": 4, "max_steps": 4},
}


class InFlight:
    """Wraps the pool's `generate` to count the requests in flight; `mean` is their
    time-weighted mean since `start`. It also adds up the prompt tokens of what they
    returned, and those the engine's prefix cache held (the rest were computed)."""

    def __init__(self, generate: Callable[..., Awaitable[Any]]) -> None:
        self._generate = generate
        self.start()

    def start(self) -> None:
        self.count, self.area, self.began = 0, 0.0, time.perf_counter()
        self._since = self.began
        self.prompt_tokens = self.cached_tokens = 0

    def _change(self, by: int) -> None:
        now = time.perf_counter()
        self.area += self.count * (now - self._since)
        self.count, self._since = self.count + by, now

    async def __call__(self, model: str, requests: Sequence[Any]) -> Any:
        self._change(len(requests))
        try:
            generations = await self._generate(model, requests)
        finally:
            self._change(-len(requests))
        self.prompt_tokens += sum(g.prompt_tokens for g in generations)
        self.cached_tokens += sum(g.cached_prompt_tokens or 0 for g in generations)
        return generations

    def mean(self) -> float:
        self._change(0)
        return self.area / (self._since - self.began)


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the engine's actor (vLLM's front end: templates, tokens in and
    out, stop strings) and of its child processes (vLLM's engine core: the model)."""
    import psutil

    actor = psutil.Process(pid)
    engine = sum(sum(c.cpu_times()[:2]) for c in actor.children(recursive=True))
    return {"front_end": sum(actor.cpu_times()[:2]), "engine_core": engine}


GPU_BLOCK_SIZE = 16
"""vLLM's own block size on a GPU (given to the engine, so that it is the one used)."""

PROBE_EXTRA_TOKENS = (0, 48, 96)
"""Unique filler tokens after each probe request's prompt: more prefill, the same decode."""


async def prefill_probe(prompts: Sequence[Any], budget: int, in_flight: InFlight) -> dict[str, Any]:
    """What a computed prompt token costs against a generated one, on this engine: flat
    batches shaped like best-of-N's (each prompt `budget` times, all at once, 24 tokens
    each with end of sequence ignored) whose responses start with filler unique to the
    request (nothing of it cached), so that each batch computes more prompt tokens for
    the same generated ones; each size twice."""
    from multisample.engine.types import GenerationRequest, Message, SamplingSettings

    sampling = SamplingSettings(temperature=0.8, max_tokens=24, ignore_eos=True)
    runs = []
    for run, extra in enumerate([*PROBE_EXTRA_TOKENS, *PROBE_EXTRA_TOKENS]):
        requests = [
            GenerationRequest(
                (Message("user", p.prompt),), sampling, seed, f"{run}-{seed}" + " ." * extra
            )
            for seed in range(budget)
            for p in prompts
        ]
        started = time.perf_counter()
        in_flight.start()
        made = await in_flight("m", requests)
        runs.append(
            {
                "extra_tokens": extra,
                "seconds": round(time.perf_counter() - started, 2),
                "completion_tokens": sum(g.completion_tokens for g in made),
                "prompt_tokens_computed": in_flight.prompt_tokens - in_flight.cached_tokens,
            }
        )
    return {"runs": runs, **token_costs(runs)}


def token_costs(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The probe's seconds fitted against its computed prompt tokens (least squares): the
    slope is the cost of a computed prompt token, the intercept over the tokens generated
    that of a generated one (with all else a batch costs), in milliseconds."""
    from scipy import stats

    fit = stats.linregress(
        [r["prompt_tokens_computed"] for r in runs], [r["seconds"] for r in runs]
    )
    generated = sum(r["completion_tokens"] for r in runs) / len(runs)
    prompt_ms, generated_ms = 1000 * float(fit.slope), 1000 * float(fit.intercept) / generated
    return {
        "ms_per_computed_prompt_token": round(prompt_ms, 4),
        "ms_per_generated_token": round(generated_ms, 4),
        "prompt_token_in_generated_tokens": round(prompt_ms / generated_ms, 3),
        "r_squared": round(float(fit.rvalue) ** 2, 4),
    }


def predicted_ratios(
    results: dict[str, list[dict[str, Any]]], costs: dict[str, Any]
) -> dict[str, float]:
    """Each strategy's tokens/s ratio to best-of-N's as the probe's costs predict it: what
    its computed prompt tokens and generated tokens cost, nothing else."""

    def tokens_per_ms(run: dict[str, Any]) -> float:
        cost = (
            run["prompt_tokens_computed"] * costs["ms_per_computed_prompt_token"]
            + run["completion_tokens"] * costs["ms_per_generated_token"]
        )
        return run["completion_tokens"] / cost

    mean = {k: sum(map(tokens_per_ms, runs)) / len(runs) for k, runs in results.items()}
    return {k: round(v / mean["best_of_n"], 3) for k, v in mean.items()}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from pydantic import TypeAdapter

    from multisample.engine.actors import CPU_BLOCK_SIZE
    from multisample.engine.config import ArithmeticTasks, BudgetConfig, PoolConfig
    from multisample.engine.pool import ModelPool
    from multisample.engine.prompts import load_prompts
    from multisample.engine.rewards.base import started_reward
    from multisample.engine.rewards.process import ArithmeticStepsSpec
    from multisample.engine.types import SamplingSettings
    from multisample.search.base import SearchContext
    from multisample.search.registry import StrategySettings, run_strategy

    tasks = ArithmeticTasks(generate="arithmetic", count=args.prompts, operations="+-")
    prompts = load_prompts(tasks).prompts
    on_gpu = args.num_gpus > 0
    # The engine's KV cache blocks, given to it: the script computes with the same size.
    block = args.block_size or (GPU_BLOCK_SIZE if on_gpu else CPU_BLOCK_SIZE)
    device = (
        {"num_gpus": args.num_gpus, "gpu_memory_utilization": args.gpu_memory_utilization}
        if on_gpu
        else {"num_cpus": os.cpu_count()}
    )
    spec = {"name": "m", "model": args.model, **device, "engine_args": {"block_size": block}}
    config = PoolConfig.model_validate({"models": [spec], "request_timeout_s": 3600})
    sampling = SamplingSettings(temperature=0.8, max_tokens=64)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in ["best_of_n", *args.strategies]}
    async with (
        ModelPool(config, sampling) as pool,
        started_reward(ArithmeticStepsSpec(kind="arithmetic_steps"), pool) as reward,
    ):
        in_flight = pool.generate = InFlight(pool.generate)  # type: ignore[method-assign]
        ctx = SearchContext(pool, reward, sampling, BudgetConfig(generations=args.budget))
        settings = {
            k: TypeAdapter(StrategySettings).validate_python(v) for k, v in STRATEGIES.items()
        }
        await asyncio.gather(*(run_strategy(p, ctx, settings["best_of_n"]) for p in prompts[:4]))
        pid = pool.backends["m"].info["pid"]  # the actor's process, on this machine
        order = ["best_of_n", *[k for k in args.strategies if k != "best_of_n"]] * 2
        for attempt, kind in enumerate(order):
            ctx = SearchContext(
                pool, reward, sampling, BudgetConfig(generations=args.budget), seed=attempt
            )
            started, cpu_before = time.perf_counter(), cpu_seconds(pid)
            in_flight.start()
            found = await asyncio.gather(*(run_strategy(p, ctx, settings[kind]) for p in prompts))
            seconds = time.perf_counter() - started
            cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(pid).items()}
            tokens = sum(c.completion_tokens for r in found for c in r.candidates)
            calls = sum(len(r.candidates) for r in found)
            past_blocks = sum(c.prompt_tokens % block for r in found for c in r.candidates)
            results[kind].append(
                {
                    "seconds": round(seconds, 2),
                    "completion_tokens": tokens,
                    "tokens_per_s": round(tokens / seconds, 1),
                    "requests": calls,
                    "requests_per_100_tokens": round(100 * calls / max(tokens, 1), 2),
                    "rounds": settings[kind].sequential_rounds(args.budget, ["m"]),
                    "mean_requests_in_flight": round(in_flight.mean(), 1),
                    "prompt_tokens": in_flight.prompt_tokens,
                    "prompt_tokens_past_whole_blocks": past_blocks,
                    "prompt_tokens_computed": in_flight.prompt_tokens - in_flight.cached_tokens,
                    "cpu_seconds_front_end": round(cpu["front_end"], 2),
                    "cpu_seconds_engine_core": round(cpu["engine_core"], 2),
                }
            )
        probe = await prefill_probe(prompts, args.budget, in_flight)
    base = sum(r["tokens_per_s"] for r in results["best_of_n"]) / len(results["best_of_n"])
    return {
        "setup": vars(args),
        "runs": results,
        "ratio_to_best_of_n": {
            kind: round(sum(r["tokens_per_s"] for r in runs) / len(runs) / base, 3)
            for kind, runs in results.items()
        },
        "prefill_probe": probe,
        "ratio_to_best_of_n_predicted_by_probe": predicted_ratios(results, probe),
    }


def main() -> None:
    from multisample.engine.actors import CPU_BLOCK_SIZE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=list(STRATEGIES)[1:],
        default=["toa", "beam_search", "dvts"],  # the published methods
    )
    add_device_options(parser)
    parser.add_argument(
        "--block-size",
        type=int,
        help=f"KV cache block size ({CPU_BLOCK_SIZE} on the CPU, {GPU_BLOCK_SIZE} on a GPU)",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures["ratio_to_best_of_n"], indent=2))


if __name__ == "__main__":
    main()
