"""Bandits against the real preference matrix of the embedded candidates.

1. Every candidate (the embedded models and variants of them: another system prompt,
   another temperature) answers every prompt of the shipped task set; the verifiable
   reward scores each answer. The true preference matrix is exhaustive:
   P[i, j] = share of (prompt, sample) comparisons i wins, ties counted half.
2. The policies then play against those real answers: each round, the chosen pair's
   stored answers to `batch` random prompts are compared by their scores (ties give no
   preference, as in `select`). Reported per policy, over seeds: cumulative strong and
   weak regret, the ratio to uniform, how often the final best() is the true best, and
   the round from which best() stays on it.

    python benchmarks/bandit_live.py [--samples 1] [--rounds 300] [--seeds 50]

Writes benchmarks/results/bandit_live-truth.json (a `truth:` file for `select`),
bandit_live-cpu-2core.json and bandit_live-regret.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from multisample.bandits.policies.base import RoundOutcome
from multisample.bandits.policies.registry import POLICIES, make_policy
from multisample.bandits.select.config import CandidateSpec
from multisample.bandits.select.loop import candidate_answers
from multisample.bandits.simulator import (
    RegretCurves,
    plot_regret,
    strong_regret,
    true_best,
    weak_regret,
)
from multisample.engine.intervals import mean_ci

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"
MODELS = [
    {"name": "smollm2", "model": "embedded:smollm2-135m-instruct"},
    {"name": "gemma3", "model": "embedded:gemma3-270m", "prompt_format": "base"},
]
CANDIDATES = [
    CandidateSpec(name="smollm2", model="smollm2"),
    CandidateSpec(
        name="smollm2-terse", model="smollm2", system_prompt="Answer in one short sentence."
    ),
    CandidateSpec(
        name="smollm2-hot", model="smollm2", sampling={"temperature": 1.4, "max_tokens": 160}
    ),
    CandidateSpec(name="gemma3", model="gemma3"),
    CandidateSpec(
        name="gemma3-greedy", model="gemma3", sampling={"temperature": 0.0, "max_tokens": 160}
    ),
]
# Every registered policy plays, but `fixed`: it needs an arm and learns nothing.
EXCLUDED = {"fixed"}


async def score_all(samples: int, max_tokens: int) -> np.ndarray:
    """scores[candidate, prompt, sample] of every candidate's answers to every task."""
    from multisample.engine.config import PoolConfig
    from multisample.engine.pool import ModelPool
    from multisample.engine.prompts import EMBEDDED_TASKS, load_prompts
    from multisample.engine.rewards.verifiable import VerifiableRewardSpec
    from multisample.engine.seeds import derive_seed
    from multisample.engine.types import SamplingSettings

    prompts = load_prompts(EMBEDDED_TASKS).prompts
    queries = [p for p in prompts for _ in range(samples)]
    sampling = SamplingSettings(temperature=0.8, max_tokens=max_tokens)
    async with ModelPool(PoolConfig.model_validate({"models": MODELS}), sampling) as pool:
        reward = VerifiableRewardSpec(kind="verifiable").build(pool)

        async def one(spec: CandidateSpec) -> list[float]:
            seeds = [derive_seed("truth", spec.name, q.id, i) for i, q in enumerate(queries)]
            answers = await candidate_answers(pool, spec, sampling, queries, seeds)
            scored = await asyncio.gather(
                *(reward.score(q, [a]) for q, a in zip(queries, answers, strict=True))
            )
            return [s[0] for s in scored]

        scores = await asyncio.gather(*(one(spec) for spec in CANDIDATES))
    return np.asarray(scores).reshape(len(CANDIDATES), len(prompts), samples)


def preference_matrix(scores: np.ndarray) -> np.ndarray:
    """P[i, j]: share of comparisons of i's and j's answers to the same prompt (every
    sample against every sample) that i wins, ties counted half."""
    k = scores.shape[0]
    matrix = np.full((k, k), 0.5)
    for i in range(k):
        for j in range(k):
            if i != j:
                a, b = scores[i][:, :, None], scores[j][:, None, :]
                matrix[i, j] = float(np.mean((a > b) + 0.5 * (a == b)))
    return matrix


def play(
    kind: str, scores: np.ndarray, matrix: np.ndarray, rounds: int, batch: int, seed: int
) -> dict[str, Any]:
    """One policy against the stored answers; regret per round against the true best."""
    settings = POLICIES[kind].settings_type.model_validate({})  # a required field fails here
    k, prompts, samples = scores.shape
    policy = make_policy(settings, k, seed)
    rng = np.random.default_rng(seed + 10_000)
    winner = true_best(matrix)
    strong = weak = 0.0
    curve, weak_curve, best = [], [], []
    for _ in range(rounds):
        first, second = policy.select()
        ask = rng.integers(prompts, size=batch)
        a = scores[first, ask, rng.integers(samples, size=batch)]
        b = scores[second, ask, rng.integers(samples, size=batch)]
        if first == second:
            policy.update(RoundOutcome(first, second, first_rewards=tuple(a.tolist())))
        else:
            wins, losses = int((a > b).sum()), int((a < b).sum())
            policy.update(RoundOutcome(first, second, wins, losses, batch - wins - losses))
        strong += batch * strong_regret(matrix, winner, first, second)
        weak += batch * weak_regret(matrix, winner, first, second)
        curve.append(strong)
        weak_curve.append(weak)
        best.append(policy.best())
    wrong = [r for r, b in enumerate(best) if b != winner]
    return {
        "strong": strong,
        "weak": weak,
        "curve": curve,
        "weak_curve": weak_curve,
        "final_best_correct": best[-1] == winner,
        "settled_round": (wrong[-1] + 2) if wrong else 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1, help="answers per candidate and task")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--reuse", action="store_true", help="reuse the stored scores")
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    cache = RESULTS / "bandit_live-scores.json"
    started = time.perf_counter()
    if args.reuse and cache.exists():
        scores = np.asarray(json.loads(cache.read_text())["scores"])
    else:
        scores = asyncio.run(score_all(args.samples, args.max_tokens))
        cache.write_text(
            json.dumps({"candidates": [c.name for c in CANDIDATES], "scores": scores.tolist()})
        )
    generation_s = time.perf_counter() - started
    matrix = preference_matrix(scores)
    names = [c.name for c in CANDIDATES]
    winner = true_best(matrix)
    (RESULTS / "bandit_live-truth.json").write_text(
        json.dumps({"candidates": names, "matrix": matrix.round(6).tolist()}, indent=1) + "\n"
    )
    means = scores.mean(axis=(1, 2)).round(3).tolist()
    print(f"mean verifiable reward: {dict(zip(names, means, strict=True))}")
    print("true preference matrix (row beats column):")
    for name, row in zip(names, matrix, strict=True):
        print(f"  {name:>14} " + " ".join(f"{p:.3f}" for p in row))
    print(f"true best: {names[winner]} (Condorcet winner: see the matrix)\n")

    results: dict[str, Any] = {}
    curves: dict[str, RegretCurves] = {}
    for kind in [k for k in POLICIES if k not in EXCLUDED]:
        runs = [play(kind, scores, matrix, args.rounds, args.batch, s) for s in range(args.seeds)]
        strong = mean_ci([r["strong"] for r in runs])
        results[kind] = {
            "strong_regret": strong,
            "weak_regret": mean_ci([r["weak"] for r in runs]),
            "final_best_correct": float(np.mean([r["final_best_correct"] for r in runs])),
            "settled_round": mean_ci([r["settled_round"] for r in runs]),
        }
        curves[kind] = RegretCurves(
            np.array([r["curve"] for r in runs]), np.array([r["weak_curve"] for r in runs])
        )
    uniform = results["uniform"]["strong_regret"][0]
    print(f"{args.seeds} seeds x {args.rounds} rounds x batch {args.batch}; regret in queries")
    print(
        f"{'policy':>10} {'strong regret [95% CI]':>28} {'/uniform':>9} {'weak':>8} "
        f"{'best ok':>8} {'settled at round':>17}"
    )
    for kind, r in results.items():
        m, lo, hi = r["strong_regret"]
        print(
            f"{kind:>10} {m:10.1f} [{lo:7.1f}, {hi:7.1f}] {m / uniform:9.3f} "
            f"{r['weak_regret'][0]:8.1f} {r['final_best_correct']:8.2f} "
            f"{r['settled_round'][0]:17.1f}"
        )
    title = f"embedded candidates, verifiable reward (true best: {names[winner]})"
    plot_regret(curves, RESULTS / "bandit_live-regret.png", title=title)
    (RESULTS / "bandit_live-cpu-2core.json").write_text(
        json.dumps(
            {
                "candidates": names,
                "true_best": names[winner],
                "matrix": matrix.round(4).tolist(),
                "args": vars(args),
                "generation_s": round(generation_s, 1),
                "policies": results,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
