"""The canonical inference-scaling comparison on reasoning, on the embedded default.

Majority voting, best-of-N, weighted best-of-N, beam search, DVTS and TOA, each at
N = 1..32 generations per problem with two seeds, over generated multi-step arithmetic
(engine/arithmetic.py) that SmolLM2-135M-Instruct partly solves. Every method searches
with the exact step checker as its process reward (`arithmetic_steps`, aggregated by the
last step, search-and-learn's default) and is evaluated by the `correct` reward: whether
the final answer of the answer it gives equals the reference. Best-of-N, majority and
weighted best-of-N share one N = 32 search per seed, each budget averaging random sets of
b of its samples (search-and-learn's subsampling); beam search, DVTS and TOA search
afresh at every budget.

Power (before the run): problems are the units. Two independent searches' per-problem
accuracies (2 seeds averaged) near 50% differ with an SD of at most 0.5; taking 0.4,
100 problems detect a difference of (1.96 + 0.84) x 0.4 / sqrt(100) = 0.11 with 80%
power at alpha 0.05, and a curve's 95% interval is about +-0.08 wide there. (Measured
after: best-of-N against majority, which share samples, differ with an SD of 0.14 to
0.32 at N = 4 to 16.)

Each method is its own sweep, one after another on one model pool at the same
concurrency, so its wall time and generated tokens per second are its own:

    python benchmarks/reasoning.py --out DIR [--problems 100] [--seeds 2]
        [--budgets 1 2 4 8 16 32] [--methods ...] [--toa-plays-in-flight K ...]
        [--json FILE]

`--toa-plays-in-flight K` adds TOA with K plays in flight (its option for more requests
in flight, not the published method) as `toa_K_in_flight`, and pairs it with TOA by
problem at each budget (`toa_in_flight_against_toa` in the JSON).

Reports, per method and budget: accuracy with its 95% interval over problems (seeds
averaged per problem first), tokens per problem, the samples of each kind of call
(`actions`: TOA's generate and refine) with the share of them scored correct, and per
method the search's wall time and tokens/s. A rerun with the same --out (and --json)
resumes the sweeps and rebuilds the figures; the wall time sums the sessions that
finished, each recorded in the JSON (a session that was killed leaves no record, so its
time is not counted: the tokens/s of the recorded sessions is the comparable figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from multisample.engine.intervals import holm, mean_ci
from multisample.engine.pool import ModelPool
from multisample.engine.storage import read_jsonl
from multisample.search.sweep import report as sweep_report
from multisample.search.sweep.config import SweepConfig, cell_path
from multisample.search.sweep.evaluation import evaluation_scores, searches_done
from multisample.search.sweep.outputs import load_units
from multisample.search.sweep.run import sweep
from multisample.search.synthesize.records import SAMPLES

CONFIG = Path(__file__).parents[1] / "configs" / "sweep-math.yaml"
TASK_SETTINGS = ("steps", "max_number", "operations")
"""The task settings a command line may change from the config's."""
ACCURACY = "best_reward"
"""The quality column: with `eval_reward: correct`, the share of problems answered right."""


def method_configs(args: argparse.Namespace) -> dict[str, SweepConfig]:
    """One sweep config per method of configs/sweep-math.yaml (the three that share a
    search together), at the benchmark's size."""
    base = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    base["prompts"].update(
        count=args.problems,
        **{k: v for k, v in vars(args).items() if k in TASK_SETTINGS and v is not None},
    )
    base.update(budgets=args.budgets, seeds=list(range(args.seeds)))
    base["concurrency"] = args.concurrency
    methods = [m for m in base.pop("methods") if m["name"] in args.methods]
    methods += [
        {"name": f"toa_{k}_in_flight", "strategy": {"kind": "toa", "plays_in_flight": k}}
        for k in args.toa_plays_in_flight
    ]
    shared = [m for m in methods if m.get("reuse_prefix")]
    groups = ([shared] if shared else []) + [[m] for m in methods if not m.get("reuse_prefix")]
    return {
        "+".join(m["name"] for m in group): SweepConfig.model_validate({**base, "methods": group})
        for group in groups
    }


def figures(units: Any, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    curve = sweep_report.curves(units, [ACCURACY])
    methods: dict[str, Any] = {}
    for method, rows in curve.groupby("method", observed=True):
        methods[str(method)] = {
            str(int(r["budget"])): {
                "accuracy": [
                    round(float(r[q]), 4) for q in (ACCURACY, f"{ACCURACY}_low", f"{ACCURACY}_high")
                ],
                "tokens_per_problem": round(float(r["tokens"]), 1),
                "generations_per_problem": round(float(r["generations"]), 2),
                "problems": int(r["prompts"]),
            }
            for _, r in rows.iterrows()
        }
    search_s = sum(s["search_wall_s"] for s in sessions)
    tokens = sum(s["completion_tokens"] for s in sessions)
    return {
        "methods": methods,
        "sessions": sessions,
        "search_wall_s": round(search_s, 1),
        "completion_tokens_per_s": round(tokens / search_s, 1) if search_s else None,
    }


def actions(config: SweepConfig, folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    """By budget, the samples each kind of call wrote (TOA: generate or refine) over the
    seeds, and the share of them the evaluator scored correct: what a search spent its
    generations on, and how well each kind did."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for cell in config.searches():
        cell_folder = cell_path(folder, cell)
        scores = evaluation_scores(cell_folder)
        by_action = found.setdefault(str(cell.budget), {})
        for sample in read_jsonl(cell_folder / SAMPLES):
            row = by_action.setdefault(sample["action"], {"samples": 0, "correct": 0.0})
            row["samples"] += 1
            row["correct"] += scores[sample["prompt_id"]][sample["id"]]
    for by_action in found.values():
        for row in by_action.values():
            row["correct"] = round(row["correct"] / row["samples"], 4)
    return found


def against_toa(units: pd.DataFrame) -> dict[str, Any]:
    """Each TOA variant with plays in flight against TOA as published, paired by problem
    (seeds averaged per problem): the accuracy difference with its 95% Student-t
    interval, the paired t-test's p and Holm's adjustment over every variant and budget."""
    found: dict[str, dict[str, Any]] = {}
    for budget, group in units.groupby("budget", sort=True):
        present = set(group["method"].astype(str))
        if "toa" not in present:
            continue
        for variant in sorted(m for m in present if m.startswith("toa_")):
            first, second = sweep_report.paired_prompt_means(group, ACCURACY, variant, "toa")
            differences = first - second
            found[f"{variant} N={int(budget)}"] = {
                "difference": [round(v, 4) for v in mean_ci(differences)],
                "sd_of_differences": round(float(np.std(differences, ddof=1)), 4),
                "problems": len(first),
                "p": sweep_report.paired_p_value(first, second),
            }
    adjusted = holm({k: v["p"] for k, v in found.items() if v["p"] is not None})
    for key, row in found.items():
        row["p_holm"] = None if key not in adjusted else round(adjusted[key], 4)
        row["p"] = None if row["p"] is None else round(row["p"], 4)
    return found


def previous_sessions(path: str | None) -> dict[str, list[dict[str, Any]]]:
    """The search sessions earlier runs of this benchmark recorded, by sweep: a resumed
    sweep's wall time is the sum of its sessions'. Read once, before this run writes."""
    if not path or not Path(path).exists():
        return {}
    earlier = json.loads(Path(path).read_text(encoding="utf-8"))["sweeps"]
    return {name: list(sweep.get("sessions", [])) for name, sweep in earlier.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = method_configs(args)
    folders = {name: out / name for name in configs}
    todo = not all(searches_done(c, folders[n]) for n, c in configs.items())
    earlier = previous_sessions(args.json)
    first = next(iter(configs.values()))
    result: dict[str, Any] = {
        "setup": {
            "config": str(CONFIG.relative_to(CONFIG.parents[1])),
            "problems": args.problems,
            "seeds": args.seeds,
            "budgets": args.budgets,
            "methods": args.methods,
            "toa_plays_in_flight": args.toa_plays_in_flight,
            "concurrency": args.concurrency,
            "tasks": first.prompts.model_dump() if hasattr(first.prompts, "model_dump") else None,
            "sampling": first.sampling.model_dump(),
        },
        "sweeps": {},
    }
    every_sweep = []

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    async with ModelPool(first, first.sampling) if todo else nullcontext() as pool:
        for name, config in configs.items():
            started = time.perf_counter()
            summary = await sweep(config, folders[name], resume=folders[name].exists(), pool=pool)
            units = load_units(config, folders[name])
            every_sweep.append(units)
            sessions = earlier.get(name, [])
            session = summary.get("this_session")
            if session and session["completion_tokens"]:
                sessions.append(session)
            result["sweeps"][name] = {
                **figures(units, sessions),
                "actions": actions(config, folders[name]),
                "wall_s_this_run": round(time.perf_counter() - started, 1),
            }
            save()
            print(f"{name}: done", flush=True)
    if args.toa_plays_in_flight:
        result["toa_in_flight_against_toa"] = against_toa(pd.concat(every_sweep))
        save()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the sweeps (resumed)")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, help="operations per problem (config's: 2)")
    parser.add_argument("--max-number", type=int, help="largest operand (config's: 10)")
    parser.add_argument("--operations", help="of + - * / (config's: +-*)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts", "toa"],
    )
    parser.add_argument(
        "--toa-plays-in-flight",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="also TOA with K plays in flight (toa_K_in_flight), paired against TOA",
    )
    parser.add_argument("--concurrency", type=int, default=48, help="searches in flight")
    parser.add_argument("--json", help="write the results to this file after each sweep")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for name, sweep_result in result["sweeps"].items():
        print(
            f"\n{name}: search {sweep_result['search_wall_s']} s in "
            f"{len(sweep_result['sessions'])} session(s), "
            f"{sweep_result['completion_tokens_per_s']} generated tokens/s"
        )
        for method, budgets in sweep_result["methods"].items():
            cells = [
                f"N={b}: {v['accuracy'][0]:.3f} [{v['accuracy'][1]:.3f}, {v['accuracy'][2]:.3f}]"
                f" {v['tokens_per_problem']:.0f} tok"
                for b, v in budgets.items()
            ]
            print(f"  {method}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
