"""Throughput of searches that wait on scores: generated tokens/s of TOA (as published, one
play at a time, and with its `plays_in_flight: 4` option), beam search and DVTS against
best-of-N's, at equal concurrency, on one SmolLM2 engine.

The same `--prompts` generated arithmetic problems (2 operations) and budget
(`--budget` generations per problem) for every strategy, all problems searched at once
(the concurrency a sweep or synthesize run gives), the exact step checker as the reward
(it costs nothing: what is measured is the engine's time). Each strategy runs twice in
turn (best-of-N, the others, best-of-N again, ...), so a drift of the shared machine shows
as a difference between the two best-of-N runs. Reports each strategy's generated
tokens/s, its ratio to best-of-N's (the mean of the two), and what leaves the engine
idle: its requests per generated token, its generation rounds in sequence and the
requests it kept in flight (their mean over the run's time), and what each request must
prefill at least: its prompt tokens past the last whole KV cache block, which vLLM's
prefix cache cannot hold (a step call's prompt is the problem and the solution so far).

    python benchmarks/search_throughput.py [--prompts 48] [--budget 8] [--json FILE]
        [--strategies toa beam_search ...] [--block-size 32]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STRATEGIES: dict[str, dict[str, Any]] = {
    "best_of_n": {"kind": "best_of_n"},
    "toa": {"kind": "toa"},
    # TOA's option for more requests in flight (not the published method: virtual loss).
    "toa_4_in_flight": {"kind": "toa", "plays_in_flight": 4},
    "beam_search": {"kind": "beam_search", "beam_width": 4, "max_steps": 4},
    "dvts": {"kind": "dvts", "beam_width": 4, "max_steps": 4},
}


class InFlight:
    """Wraps the pool's `generate` to count the requests in flight; `mean` is their
    time-weighted mean since `start`."""

    def __init__(self, generate: Callable[..., Awaitable[Any]]) -> None:
        self._generate = generate
        self.start()

    def start(self) -> None:
        self.count, self.area, self.began = 0, 0.0, time.perf_counter()
        self._since = self.began

    def _change(self, by: int) -> None:
        now = time.perf_counter()
        self.area += self.count * (now - self._since)
        self.count, self._since = self.count + by, now

    async def __call__(self, model: str, requests: Sequence[Any]) -> Any:
        self._change(len(requests))
        try:
            return await self._generate(model, requests)
        finally:
            self._change(-len(requests))

    def mean(self) -> float:
        self._change(0)
        return self.area / (self._since - self.began)


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
    spec: dict[str, Any] = {
        "name": "m",
        "model": "embedded:smollm2-135m-instruct",
        "num_cpus": os.cpu_count(),
    }
    if args.block_size:
        spec["engine_args"] = {"block_size": args.block_size}
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
        block = args.block_size or CPU_BLOCK_SIZE  # the engine's KV cache blocks
        order = ["best_of_n", *[k for k in args.strategies if k != "best_of_n"]] * 2
        for attempt, kind in enumerate(order):
            ctx = SearchContext(
                pool, reward, sampling, BudgetConfig(generations=args.budget), seed=attempt
            )
            started = time.perf_counter()
            in_flight.start()
            found = await asyncio.gather(*(run_strategy(p, ctx, settings[kind]) for p in prompts))
            seconds = time.perf_counter() - started
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
                    "prompt_tokens": sum(c.prompt_tokens for r in found for c in r.candidates),
                    "prompt_tokens_past_whole_blocks": past_blocks,
                }
            )
    base = sum(r["tokens_per_s"] for r in results["best_of_n"]) / len(results["best_of_n"])
    return {
        "setup": vars(args),
        "runs": results,
        "ratio_to_best_of_n": {
            kind: round(sum(r["tokens_per_s"] for r in runs) / len(runs) / base, 3)
            for kind, runs in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=list(STRATEGIES)[1:],
        default=["toa", "beam_search", "dvts"],  # the published methods
    )
    parser.add_argument(
        "--block-size", type=int, help="KV cache block size (default: the pool's, 32 on the CPU)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures["ratio_to_best_of_n"], indent=2))


if __name__ == "__main__":
    main()
