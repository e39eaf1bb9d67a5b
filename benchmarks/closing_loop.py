"""Closing the loop: does training SmolLM2 on multisample's own preference data make it
better on instructions it never saw, in and out of the training distribution?

1. Prompts, generated (engine/instructions.py), four disjoint sets: `--train` prompts
   (in-distribution, seed 0), `--validation` prompts (in-distribution, seed 1: where the
   training recipe is chosen, never on a test set), and two test sets of `--test` prompts,
   in-distribution (seed 2: the training's wordings, topics and pairs of constraints) and
   out-of-distribution (seed 3: none of them).
2. Synthesize on the train prompts with SmolLM2 alone (on-policy data: both answers of
   every pair are its own): best-of-8 at temperature 0.8, the verifiable reward, pairs by
   max_min and max_mu_minus_2sigma.
3. Train each recipe of `--recipes` (`multisample train`, `--pairs-from own`), evaluate each on
   the validation prompts (one sample per prompt and seed), and keep the best.
4. Serve the base model and the chosen adapter on one engine and evaluate both on each
   test set: best-of-N at 1 and 4 samples (budget 1 is the first sample of the budget-4
   search), `--seeds` seeds; quality is the verifiable reward of the selected answer and
   whether it meets every constraint. Seeds are averaged per prompt, so prompts are the
   units: the mean paired difference with its 95% Student-t interval, the paired t-test's
   p-value, and Holm's correction over the 8 tests (2 sets x 2 budgets x 2 measures).

Power (before the run): with SD ~0.35 of a prompt's paired difference in reward (the
earlier run's), n = 150 test prompts detect a difference of (1.96 + 0.84) x 0.35 /
sqrt(150) = 0.08 with 80% power at alpha 0.05 (0.10 after Holm's correction for 8 tests).

    python benchmarks/closing_loop.py --out DIR [--train 400] [--validation 40]
        [--test 150] [--seeds 2] [--recipes dpo-5e-5 sft-1e-4 sft-3e-4] [--results FILE]
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
from scipy import stats

from multisample.engine.intervals import holm, mean_ci

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
BASE = "smollm2"
MODEL = {"name": BASE, "model": "embedded:smollm2-135m-instruct", "enable_lora": True}
SAMPLING = {"temperature": 0.8, "max_tokens": 192}
REWARD = {"kind": "verifiable"}
RECIPES: dict[str, dict[str, Any]] = {
    "dpo-5e-5": {"method": "dpo", "learning_rate": 5e-5},
    "sft-1e-4": {"method": "sft", "learning_rate": 1e-4},
    "sft-3e-4": {"method": "sft", "learning_rate": 3e-4},
    "dpo-2e-4": {"method": "dpo", "learning_rate": 2e-4},
}
"""The training recipes `--recipes` chooses from: `train`'s default (DPO at 5e-5), SFT on
each prompt's best answer at two rates, and a higher DPO rate. The default leaves out
dpo-2e-4: on 2 CPU cores a DPO recipe trains for about an hour (it runs the policy and the
reference on both answers), an SFT recipe for a fraction of that."""
DEFAULT_RECIPES = ["dpo-5e-5", "sft-1e-4", "sft-3e-4"]
QUALITIES = {"best_reward": "reward of the selected answer", "all_met": "all constraints met"}


def prompt_sets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    def generated(count: int, split: str, seed: int) -> dict[str, Any]:
        return {"generate": "instructions", "count": count, "split": split, "seed": seed}

    return {
        "train": generated(args.train, "in_distribution", 0),
        "validation": generated(args.validation, "in_distribution", 1),
        "test_in_distribution": generated(args.test, "in_distribution", 2),
        "test_out_of_distribution": generated(args.test, "out_of_distribution", 3),
    }


def paired(base: list[float], adapted: list[float]) -> dict[str, Any]:
    """Adapted minus base over prompts: mean, 95% interval, paired t-test."""
    diff = np.subtract(adapted, base)
    mean, low, high = mean_ci(diff.tolist())
    p = float(stats.ttest_rel(adapted, base).pvalue) if np.ptp(diff) > 0 else 1.0
    return {
        "base": mean_ci(base),
        "adapted": mean_ci(adapted),
        "difference": mean,
        "ci95": [low, high],
        "effect_size_dz": None if diff.std(ddof=1) == 0 else float(mean / diff.std(ddof=1)),
        "p": p,
        "prompts_better": int((diff > 0).sum()),
        "prompts_worse": int((diff < 0).sum()),
    }


async def evaluate(
    name: str,
    prompts: dict[str, Any],
    adapters: dict[str, Path],
    budgets: list[int],
    seeds: int,
    out: Path,
) -> Any:
    """best-of-N of the base and each adapter on `prompts`: the sweep's units."""
    from multisample.search.sweep.config import SweepConfig
    from multisample.search.sweep.outputs import load_units
    from multisample.search.sweep.run import sweep

    methods = [{"name": "base", "strategy": {"kind": "best_of_n", "model": BASE}}]
    methods += [
        {"name": label, "strategy": {"kind": "best_of_n", "model": label}, "reuse_prefix": True}
        for label in adapters
    ]
    methods[0]["reuse_prefix"] = True
    config = SweepConfig.model_validate(
        {
            "models": [
                {**MODEL, "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()]}
            ],
            "prompts": prompts,
            "methods": methods,
            "budgets": budgets,
            "seeds": list(range(seeds)),
            "sampling": SAMPLING,
            "reward": REWARD,
            "request_timeout_s": 3600,
        }
    )
    folder = out / name
    await sweep(config, folder, resume=folder.exists())
    return load_units(config, folder)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from multisample.jobs.train import TrainOptions, train_run
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.search.synthesize.run import synthesize

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = prompt_sets(args)
    figures: dict[str, Any] = {
        "setup": {k: v for k, v in vars(args).items() if k != "results"},
        "prompt_sets": sets,
        "recipes": {label: RECIPES[label] for label in args.recipes},
    }
    synth = out / "synthesize"
    resumed = synth.exists()  # then the seconds below are those of this part only
    started = time.perf_counter()
    summary = await synthesize(
        SynthesizeConfig.model_validate(
            {
                "models": [MODEL],
                "prompts": sets["train"],
                "strategy": {"kind": "best_of_n", "model": BASE},
                "budget": {"generations": 8},
                "sampling": SAMPLING,
                "reward": REWARD,
                "pairs": {"methods": ["max_min", "max_mu_minus_2sigma"]},
                "request_timeout_s": 3600,
            }
        ),
        synth,
        resume=synth.exists(),
    )
    figures["synthesize"] = {
        "prompts": summary["prompts"],
        "pairs": summary["pairs"],
        "seconds": round(time.perf_counter() - started, 1),
        "resumed": resumed,
    }
    adapters: dict[str, Path] = {}
    figures["training"] = {}
    for label in args.recipes:
        recipe = RECIPES[label]
        folder = synth / "adapters" / label
        if not (folder / "training.json").exists():
            train_run(synth, TrainOptions(model=BASE, name=label, pairs_from="own", **recipe))
        record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
        figures["training"][label] = {
            "examples": record["pairs"]["train"],
            "validation_examples": record["pairs"]["validation"],
            "by_author": record["pairs"]["by_author"],
            "steps": record["steps"],
            "train_seconds": record["train_seconds"],
            "validation_loss": record["validation_loss"],
        }
        adapters[label] = folder
    # The recipe is chosen on the validation prompts: one sample per prompt and seed.
    units = await evaluate("validation", sets["validation"], adapters, [1], args.seeds, out)
    scores = units.groupby("method", observed=True)["best_reward"].mean()
    figures["validation"] = {str(k): round(float(v), 4) for k, v in scores.items()}
    chosen = max(args.recipes, key=lambda label: scores[label])
    figures["chosen_recipe"] = chosen
    figures["tests"] = {}
    p_values: dict[str, float] = {}
    for name in ("test_in_distribution", "test_out_of_distribution"):
        units = await evaluate(
            name, sets[name], {chosen: adapters[chosen]}, [1, 4], args.seeds, out
        )
        per_prompt = units.groupby(["method", "budget", "prompt_id"], observed=True)[
            list(QUALITIES)
        ].mean()
        figures["tests"][name] = {}
        for budget in (1, 4):
            for quality in QUALITIES:
                base = per_prompt.loc[("base", budget)][quality].sort_index()
                adapted = per_prompt.loc[(chosen, budget)][quality].sort_index()
                row = paired(base.tolist(), adapted.tolist())
                key = f"{quality}@{budget}"
                figures["tests"][name][key] = row
                p_values[f"{name}/{key}"] = row["p"]
        figures["tests"][name]["prompts"] = int(units["prompt_id"].nunique())
    for key, adjusted in holm(p_values).items():
        name, measure = key.split("/")
        figures["tests"][name][measure]["p_holm"] = adjusted
    return figures


def print_table(figures: dict[str, Any]) -> None:
    chosen = figures["chosen_recipe"]
    print(f"validation (mean reward, 1 sample): {figures['validation']}; chosen: {chosen}")
    print("| test set | measure | base | adapted | difference [95% CI] | p | p (Holm) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in figures["tests"].items():
        for key, row in rows.items():
            if key == "prompts":
                continue
            quality, budget = key.split("@")
            print(
                f"| {name} ({rows['prompts']}) | {QUALITIES[quality]}, {budget} sample(s) | "
                f"{row['base'][0]:.3f} | {row['adapted'][0]:.3f} | {row['difference']:+.3f} "
                f"[{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}] | {row['p']:.3g} | "
                f"{row['p_holm']:.3g} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/closing-loop")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--validation", type=int, default=40)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=DEFAULT_RECIPES)
    parser.add_argument(
        "--results", default=str(ROOT / "benchmarks" / "results" / "closing_loop-cpu-2core.json")
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    figures["command"] = "python benchmarks/closing_loop.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if k != "results"
    )
    Path(args.results).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print_table(figures)


if __name__ == "__main__":
    main()
