"""Closing the loop: does DPO on multisample's own pairs make SmolLM2 better on prompts it
never saw?

1. Split the shipped task set by prompt id into train and test (deterministic).
2. Synthesize on the train prompts with the embedded default (configs/demo.yaml: SmolLM2
   and Gemma-3-270M, the parallel ensemble, 8 generations, the verifiable reward).
3. DPO-train a LoRA for SmolLM2 on the run's pairs (`multisample train`'s defaults).
4. Serve base and adapter on one engine and sweep best-of-N at 1 and 8 samples on the
   test prompts, several seeds: mean best reward and all-met share per prompt (seeds
   averaged per prompt, so prompts are the independent units), 95% Student-t intervals,
   a paired t-test and Wilcoxon's signed-rank test over prompts.

    python benchmarks/closing_loop.py [--train-prompts 48] [--seeds 3] [--out DIR]

Writes benchmarks/results/closing_loop-cpu-2core.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from multisample.engine.intervals import mean_ci
from multisample.engine.prompts import EMBEDDED_TASKS, load_prompts, tasks_path
from multisample.engine.seeds import derive_seed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
BASE, ADAPTER = "smollm2", "smollm2-dpo"
QUALITIES = {"best_reward": "mean best reward", "all_met": "all constraints met"}


def split_tasks(out: Path, train_prompts: int, test_share: float) -> tuple[Path, Path]:
    """The shipped tasks' lines, split by a hash of the prompt id: test ones never train."""
    lines = tasks_path().read_text(encoding="utf-8").splitlines()
    ids = [p.id for p in load_prompts(EMBEDDED_TASKS).prompts]
    bucket = {i: derive_seed("closing-loop split", i) % 1000 / 1000 for i in ids}
    rows = [line for line in lines if line.strip()]
    test = [r for r, i in zip(rows, ids, strict=True) if bucket[i] < test_share]
    train = [r for r, i in zip(rows, ids, strict=True) if bucket[i] >= test_share]
    paths = out / "train.jsonl", out / "test.jsonl"
    paths[0].write_text("\n".join(train[:train_prompts]) + "\n", encoding="utf-8")
    paths[1].write_text("\n".join(test) + "\n", encoding="utf-8")
    return paths


def paired(base: list[float], adapted: list[float]) -> dict[str, Any]:
    """Adapted minus base over prompts: mean and interval, paired t and Wilcoxon p."""
    diff = [a - b for a, b in zip(adapted, base, strict=True)]
    mean, low, high = mean_ci(diff)
    nonzero = [d for d in diff if d != 0]
    return {
        "mean_difference": mean,
        "ci95": [low, high],
        "t_test_p": float(stats.ttest_rel(adapted, base).pvalue) if len(nonzero) > 1 else None,
        "wilcoxon_p": float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) > 1 else None,
        "prompts_better": sum(d > 0 for d in diff),
        "prompts_worse": sum(d < 0 for d in diff),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from multisample.jobs.train import TrainOptions, train_run
    from multisample.search.sweep.config import SweepConfig
    from multisample.search.sweep.outputs import load_units
    from multisample.search.sweep.run import sweep
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.search.synthesize.run import synthesize

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = split_tasks(out, args.train_prompts, args.test_share)
    figures: dict[str, Any] = {"setup": {k: v for k, v in vars(args).items() if k != "results"}}

    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    demo.update(prompts=str(train_file), limit=None)
    synth = out / "synthesize"
    started = time.perf_counter()
    summary = await synthesize(SynthesizeConfig.model_validate(demo), synth, resume=synth.exists())
    figures["synthesize"] = {
        "prompts": summary["prompts"],
        "pairs": summary["pairs"],
        "seconds": round(time.perf_counter() - started, 1),
    }

    adapter = synth / "adapters" / ADAPTER
    if not (adapter / "training.json").exists():
        train_run(synth, TrainOptions(model=BASE, name=ADAPTER))
    training = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    figures["training"] = {
        "pairs": training["pairs"]["train"],
        "validation_pairs": training["pairs"]["validation"],
        "steps": training["steps"],
        "train_seconds": training["train_seconds"],
        "seconds_per_example": training["seconds_per_example"],
        "validation_loss": training["validation_loss"],
    }

    base_spec = next(m for m in demo["models"] if m["name"] == BASE)
    sweep_config = SweepConfig.model_validate(
        {
            "models": [{**base_spec, "adapters": [{"name": ADAPTER, "path": str(adapter)}]}],
            "prompts": str(test_file),
            "methods": [
                {"name": "base", "strategy": {"kind": "best_of_n", "model": BASE}},
                {"name": "adapted", "strategy": {"kind": "best_of_n", "model": ADAPTER}},
            ],
            "budgets": [1, 8],
            "seeds": list(range(args.seeds)),
            "sampling": demo["sampling"],
            "reward": demo["reward"],
        }
    )
    evaluation = out / "evaluate"
    await sweep(sweep_config, evaluation, resume=evaluation.exists())
    units = load_units(sweep_config, evaluation)
    by_prompt = units.groupby(["method", "budget", "prompt_id"])[list(QUALITIES)].mean()
    figures["test_prompts"] = int(units["prompt_id"].nunique())
    figures["quality"] = {}
    for budget in sweep_config.budgets:
        for quality in QUALITIES:
            base = by_prompt.loc[("base", budget)][quality].sort_index()
            adapted = by_prompt.loc[("adapted", budget)][quality].sort_index()
            figures["quality"][f"{quality}@{budget}"] = {
                "base": mean_ci(base.tolist()),
                "adapted": mean_ci(adapted.tolist()),
                **paired(base.tolist(), adapted.tolist()),
            }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(
        f"pairs {figures['training']['pairs']}, training {figures['training']['train_seconds']} s;"
        f" {figures['test_prompts']} test prompts"
    )
    print("| measure | base (95% CI) | adapted (95% CI) | difference | t-test p | Wilcoxon p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in figures["quality"].items():
        quality, budget = name.split("@")
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in (row["base"], row["adapted"])]
        p = [f"{v:.3f}" if v is not None else "-" for v in (row["t_test_p"], row["wilcoxon_p"])]
        print(
            f"| {QUALITIES[quality]}, {budget} sample(s) | {cells[0]} | {cells[1]} | "
            f"{row['mean_difference']:+.3f} | {p[0]} | {p[1]} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-prompts", type=int, default=48)
    parser.add_argument("--test-share", type=float, default=0.25)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/closing-loop")
    parser.add_argument(
        "--results", default=str(ROOT / "benchmarks" / "results" / "closing_loop-cpu-2core.json")
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    Path(args.results).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print_table(figures)


if __name__ == "__main__":
    main()
