"""Methods at an equal budget: mean best and top-4 reward with 95% confidence intervals.

On the embedded default (SmolLM2 chat + Gemma-3-270M base, the shipped task set, the
verifiable reward), every method spends the same number of generations per prompt, for
several seeds, over one shared pool (engines start once). Prints a table and writes it
as JSON; also the end-to-end generated tokens/s of TOA relative to best-of-N.

    python benchmarks/compare_methods.py [--prompts 12] [--budget 16] [--seeds 3]

Confidence intervals are Student-t intervals over the per-(prompt, seed) values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from engine.intervals import mean_ci

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT, BASE = "smollm2", "gemma3"
METHODS: dict[str, dict[str, Any]] = {
    f"rand ({CHAT})": {"kind": "best_of_n", "model": CHAT},
    f"rand ({BASE})": {"kind": "best_of_n", "model": BASE},
    "ensemble": {"kind": "ensemble"},
    "refine": {"kind": "refine"},
    "moa": {"kind": "moa"},
    f"prs ({CHAT})": {"kind": "prs", "model": CHAT},
    "toa": {"kind": "toa"},
}


def per_prompt_quality(
    samples: list[dict[str, Any]], k: int = 4
) -> tuple[list[float], list[float]]:
    """Best reward and mean of the top-k rewards of each prompt."""
    rewards: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s["reward"] is not None:
            rewards[s["prompt_id"]].append(s["reward"])
    best = [max(r) for r in rewards.values()]
    top = [statistics.fmean(sorted(r, reverse=True)[:k]) for r in rewards.values()]
    return best, top


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    from engine.pool import ModelPool
    from search.synthesize import SAMPLES, SynthesizeConfig, synthesize

    base = {
        "models": [
            {"name": CHAT, "model": "embedded:smollm2-135m-instruct"},
            {"name": BASE, "model": "embedded:gemma3-270m", "prompt_format": "base"},
        ],
        "limit": args.prompts,
        "budget": {"generations": args.budget},
        "sampling": {"temperature": 0.8, "max_tokens": args.max_tokens},
        "concurrency": args.prompts,
    }
    first = SynthesizeConfig.model_validate(base)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        async with ModelPool(first, first.sampling) as pool:
            for label, strategy in METHODS.items():
                best: list[float] = []
                top: list[float] = []
                tokens, seconds = 0, 0.0
                for seed in range(args.seeds):
                    config = SynthesizeConfig.model_validate(
                        {**base, "strategy": strategy, "seed": seed}
                    )
                    run = Path(scratch) / f"{strategy['kind']}-{label}-{seed}"
                    started = time.perf_counter()
                    summary = await synthesize(config, run, pool=pool)
                    seconds += time.perf_counter() - started
                    tokens += summary["this_session"]["completion_tokens"]
                    rows = [json.loads(x) for x in (run / SAMPLES).read_text().splitlines()]
                    b, t = per_prompt_quality(rows)
                    best += b
                    top += t
                results[label] = {
                    "best": mean_ci(best),
                    "top4": mean_ci(top),
                    "tokens_per_s": tokens / seconds,
                    "n": len(best),
                }
                print(f"{label:16} best {results[label]['best'][0]:.3f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--budget", type=int, default=16, help="generations per prompt")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    results = asyncio.run(compare(args))
    print(f"\n{args.prompts} prompts x {args.seeds} seeds, {args.budget} generations per prompt")
    print(f"{'method':16} {'best (95% CI)':>24} {'top-4 (95% CI)':>24} {'tok/s':>8}")
    for label, r in sorted(results.items(), key=lambda kv: -kv[1]["best"][0]):
        best = "{:.3f} [{:.3f}, {:.3f}]".format(*r["best"])
        top = "{:.3f} [{:.3f}, {:.3f}]".format(*r["top4"])
        print(f"{label:16} {best:>24} {top:>24} {r['tokens_per_s']:8.1f}")
    rand = results[f"rand ({CHAT})"]["tokens_per_s"]
    print(
        f"\nTOA end-to-end tokens/s relative to best-of-N ({CHAT}): "
        f"{results['toa']['tokens_per_s'] / rand:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
