"""Cumulative regret of the model-selection bandits on simulated preference matrices.

K candidate models, rounds of B queries, many seeds per policy, on two instances with a
Condorcet winner: Bradley-Terry with random utilities, and a random non-Bradley-Terry
matrix (the winner beats every arm; the other pairs are random, so they may cycle).
Prints, per instance and policy, the strong and weak regret after the last round (mean
and 95% Student-t interval over seeds, in queries), its ratio to uniform's, and how often
the policy's best() is the Condorcet winner; writes the numbers as JSON and one PNG of
the regret curves per instance.

    python benchmarks/bandit_regret.py [--arms 5] [--batch 16] [--horizon 2000] [--seeds 50]

UCB1 learns from absolute rewards: Bernoulli with mean the model's Borda score (see
bandits/simulator.py). "fixed (runner-up)" always plays the arm closest to the winner.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from multisample.bandits.policies.registry import POLICIES, PolicySettings
from multisample.bandits.simulator import (
    SimulationResult,
    borda_scores,
    bradley_terry,
    plot_regret,
    random_condorcet,
    simulate,
    true_best,
)
from multisample.engine.intervals import mean_ci

RESULTS = Path(__file__).parent / "results"


def instances(arms: int, seed: int) -> dict[str, np.ndarray]:
    """The preference matrices, by name; each has a Condorcet winner."""
    utilities = np.random.default_rng(seed).normal(0.0, 1.0, arms)
    return {
        "bradley-terry": bradley_terry(utilities),
        "condorcet (non-BT)": random_condorcet(arms, seed, gap=0.1),
    }


def runner_up(matrix: np.ndarray) -> int:
    """The arm the winner beats by the smallest margin."""
    winner = true_best(matrix)
    margin = matrix[winner] - 0.5
    margin[winner] = np.inf
    return int(margin.argmin())


def policies(matrix: np.ndarray) -> dict[str, PolicySettings]:
    """Every registered policy by its label, with its default settings; `fixed` plays the
    runner-up. A new policy with a required setting fails here until it is given one."""
    required = {"fixed": {"arm": runner_up(matrix)}}
    labels = {"fixed": "fixed (runner-up)"}
    return {
        labels.get(kind, kind): cls.settings_type.model_validate(required.get(kind, {}))
        for kind, cls in POLICIES.items()
    }


def summarize(result: SimulationResult, uniform: SimulationResult) -> dict[str, Any]:
    """Final regret with CI and ratio to uniform, share of seeds whose best() is right."""
    row: dict[str, Any] = {"settings": result.settings.model_dump(mode="json")}
    for which in ("strong", "weak"):
        final = getattr(result, which)[:, -1]
        row[which] = mean_ci(final)
        row[f"{which}_ratio_to_uniform"] = float(
            final.mean() / getattr(uniform, which)[:, -1].mean()
        )
    row["best_is_winner"] = float((result.best == result.winner).mean())
    row["seconds"] = result.seconds
    return row


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    out: dict[str, Any] = {
        "arms": args.arms,
        "batch": args.batch,
        "horizon": args.horizon,
        "seeds": args.seeds,
        "instance_seed": args.instance_seed,
        "instances": {},
    }
    started = time.perf_counter()
    for name, matrix in instances(args.arms, args.instance_seed).items():
        results = {
            label: simulate(settings, matrix, args.batch, args.horizon, seeds)
            for label, settings in policies(matrix).items()
        }
        out["instances"][name] = {
            "matrix": matrix.round(6).tolist(),
            "winner": true_best(matrix),
            "borda_winner": int(borda_scores(matrix).argmax()),
            "policies": {
                label: summarize(result, results["uniform"]) for label, result in results.items()
            },
        }
        slug = "" if name == "bradley-terry" else "-" + name.split()[0]
        plot_regret(
            results,
            args.plot.with_name(args.plot.stem + slug + args.plot.suffix),
            title=f"{name}: K={args.arms}, batch {args.batch}, {args.seeds} seeds (95% CI)",
        )
    out["total_seconds"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="queries per round")
    parser.add_argument("--horizon", type=int, default=2000, help="rounds")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--instance-seed", type=int, default=0, help="draws the matrices")
    parser.add_argument("--json", type=Path, default=RESULTS / "bandit_regret-sim.json")
    parser.add_argument(
        "--plot",
        type=Path,
        default=RESULTS / "bandit_regret-sim.png",
        help="the Bradley-Terry plot; the other instance's gets a suffix",
    )
    args = parser.parse_args()

    results = benchmark(args)
    print(
        f"K={args.arms}, batch {args.batch}, {args.horizon} rounds, {args.seeds} seeds: "
        "cumulative regret in queries after the last round, mean [95% CI]"
    )
    for name, instance in results["instances"].items():
        print(f"\n{name} (Condorcet winner {instance['winner']})")
        print(
            f"{'policy':18} {'strong regret':>26} {'/unif':>6} "
            f"{'weak regret':>26} {'/unif':>6} {'best ok':>8} {'s':>6}"
        )
        for label, r in instance["policies"].items():
            strong = "{:.1f} [{:.1f}, {:.1f}]".format(*r["strong"])
            weak = "{:.1f} [{:.1f}, {:.1f}]".format(*r["weak"])
            print(
                f"{label:18} {strong:>26} {r['strong_ratio_to_uniform']:6.3f} "
                f"{weak:>26} {r['weak_ratio_to_uniform']:6.3f} "
                f"{r['best_is_winner']:8.0%} {r['seconds']:6.1f}"
            )
    print(f"\ntotal {results['total_seconds']:.1f} s")
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
