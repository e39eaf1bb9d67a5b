"""Co-UCB with online adaptation, against Co-UCB over frozen models and UCB1 with
self-training (issue #12, item 4b): does the collaborative update give a better model at
the end, and what does it cost?

Three candidates, each on an engine of its own (adapted versions are served merged into
the engine's weights, at the base's speed): SmolLM2-135M-Instruct, SmolLM2 told to answer
briefly, and Gemma-3-270M (a base model). Queries are the shipped tasks' train split
(the closing-the-loop split, by prompt id); the verifiable reward prefers one answer of
each pair. Per policy and seed, `select` plays `--rounds` rounds of `--batch` queries;
then every candidate (its final version) answers the held-out test prompts (`--eval-seeds`
samples each), scored by the same reward.

Reported per method (mean over seeds, with the seeds' values):
- the held-out quality (mean reward, all-constraints-met share) of the model `select`
  names best at the end, and of every candidate's final version;
- the online reward: the mean reward of every answer served during the run;
- the regret against the best frozen candidate: per query served, that candidate's
  held-out mean minus the served answers' mean reward (an estimate: the frozen
  candidates' qualities are measured on the test prompts, once);
- the seconds spent generating and training.

    python benchmarks/online_adaptation.py [--rounds 8] [--batch 8] [--seeds 2]

Writes benchmarks/results/online_adaptation-cpu-2core.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from closing_loop import split_tasks  # a sibling script, not a package

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2, GEMMA3 = "embedded:smollm2-135m-instruct", "embedded:gemma3-270m"
MODELS = [
    # Three engines on two cores: a fraction of a CPU each, so Ray places all three.
    {"name": "smollm2", "model": SMOLLM2, "num_cpus": 0.5},
    {"name": "smollm2-brief", "model": SMOLLM2, "num_cpus": 0.5},
    {"name": "gemma3", "model": GEMMA3, "prompt_format": "base", "num_cpus": 0.5},
]
CANDIDATES = [
    {"name": "smollm2", "model": "smollm2"},
    {"name": "smollm2-brief", "model": "smollm2-brief", "system_prompt": "Answer briefly."},
    {"name": "gemma3", "model": "gemma3"},
]
METHODS: dict[str, dict[str, Any]] = {
    "co_ucb frozen": {"policy": {"kind": "co_ucb"}},
    "co_ucb adapted": {"policy": {"kind": "co_ucb"}, "adapt": {}},
    "ucb1 self-trained": {"policy": {"kind": "ucb1"}, "adapt": {}},
}
SAMPLING = {"temperature": 0.8, "max_tokens": 128}


async def quality(
    pool: Any, reward: Any, candidate: dict[str, Any], model: str, test: Any, seeds: int
) -> dict[str, float]:
    """Mean reward and all-met share of a candidate's answers to the test prompts."""
    from multisample.bandits.select.config import CandidateSpec
    from multisample.bandits.select.loop import candidate_answers
    from multisample.engine.seeds import derive_seed
    from multisample.engine.types import SamplingSettings

    spec = CandidateSpec.model_validate(candidate)
    sampling = SamplingSettings.model_validate(SAMPLING)
    scores = []
    for seed in range(seeds):
        seeds_ = [derive_seed("online-adaptation eval", seed, p.id) for p in test]
        answers = await candidate_answers(pool, spec, sampling, test, seeds_, model)
        for prompt, answer in zip(test, answers, strict=True):
            scores.append((await reward.score(prompt, [answer]))[0])
    values = np.array(scores)
    met = float((values == 1).mean())
    return {"reward": round(float(values.mean()), 4), "all_met": round(met, 4)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from multisample.bandits.select.config import SelectConfig
    from multisample.bandits.select.loop import run_select
    from multisample.engine.config import PoolConfig
    from multisample.engine.model_folders import resolve_model_path
    from multisample.engine.pool import ModelPool
    from multisample.engine.prompts import load_prompts
    from multisample.engine.rewards.base import started_reward
    from multisample.engine.rewards.verifiable import VerifiableRewardSpec
    from multisample.engine.storage import read_jsonl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = split_tasks(out, args.rounds * args.batch, 0.25)
    test = load_prompts(str(test_file)).prompts
    figures: dict[str, Any] = {
        "setup": {k: v for k, v in vars(args).items() if k != "results"},
        "candidates": CANDIDATES,
        "test_prompts": len(test),
        "methods": {},
    }
    pool_config = PoolConfig.model_validate({"models": MODELS})
    async with (
        ModelPool(pool_config) as pool,
        started_reward(VerifiableRewardSpec(kind="verifiable"), pool) as reward,
    ):
        frozen = {
            c["name"]: await quality(pool, reward, c, c["model"], test, args.eval_seeds)
            for c in CANDIDATES
        }
        figures["frozen_quality"] = frozen
        best_frozen = max(frozen.values(), key=lambda q: q["reward"])["reward"]
        for method, settings in METHODS.items():
            runs = []
            for seed in range(args.seeds):
                config = SelectConfig.model_validate(
                    {
                        "models": MODELS,
                        "candidates": CANDIDATES,
                        "prompts": str(train_file),
                        "batch": args.batch,
                        "rounds": args.rounds,
                        "sampling": SAMPLING,
                        "seed": seed,
                        **settings,
                    }
                )
                run_path = out / method.replace(" ", "-") / f"seed{seed}"
                started = time.perf_counter()
                summary = await run_select(config, run_path, resume=run_path.exists(), pool=pool)
                seconds = time.perf_counter() - started
                served = [
                    s
                    for a in read_jsonl(run_path / "answers.jsonl")
                    for s in {a["first_score"], a["second_score"]}
                    if s is not None
                ]
                training = [
                    json.loads(f.read_text()) for f in run_path.glob("adapters/*/v*/training.json")
                ]
                finals = frozen  # a frozen run's candidates are the frozen ones
                if "adapt" in settings:
                    finals = {
                        c["name"]: await quality(pool, reward, c, c["model"], test, args.eval_seeds)
                        for c in CANDIDATES
                    }
                queries = summary["queries"]
                runs.append(
                    {
                        "seed": seed,
                        "best": summary["best"],
                        "best_quality": finals[summary["best"]],
                        "final_quality": finals,
                        "online_reward": round(float(np.mean(served)), 4),
                        "regret": round(queries * (best_frozen - float(np.mean(served))), 2),
                        "versions": summary.get("adapter_versions"),
                        "train_seconds": round(sum(t["seconds"] for t in training), 1),
                        "serve_seconds": round(sum(t["serve_seconds"] for t in training), 1),
                        "seconds": round(seconds, 1),
                        # Rounds (generating and judging) and updates take turns.
                        "play_seconds": round(
                            seconds - sum(t["seconds"] + t["serve_seconds"] for t in training), 1
                        ),
                    }
                )
                # The next run starts from the models as configured.
                for model in MODELS:
                    await pool.load_weights(model["name"], resolve_model_path(model["model"]))
            figures["methods"][method] = {
                "runs": runs,
                **{
                    f"best_{k}": round(float(np.mean([r["best_quality"][k] for r in runs])), 4)
                    for k in ("reward", "all_met")
                },
                "online_reward": round(float(np.mean([r["online_reward"] for r in runs])), 4),
                "regret": round(float(np.mean([r["regret"] for r in runs])), 2),
            }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(f"{figures['test_prompts']} held-out prompts; frozen candidates:")
    for name, q in figures["frozen_quality"].items():
        print(f"  {name:15s} reward {q['reward']:.3f}  all met {q['all_met']:.3f}")
    print("| method | selected (seeds) | its held-out reward | all met | online reward | regret |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, row in figures["methods"].items():
        chosen = ", ".join(r["best"] for r in row["runs"])
        print(
            f"| {method} | {chosen} | {row['best_reward']:.3f} | {row['best_all_met']:.3f} | "
            f"{row['online_reward']:.3f} | {row['regret']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--out", default="runs/online-adaptation")
    parser.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results" / "online_adaptation-cpu-2core.json"),
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    Path(args.results).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print_table(figures)


if __name__ == "__main__":
    main()
