"""Co-UCB with online adaptation (the collaborative update, in the authors' regime: one
AdamW carried across updates, a constant rate), against Co-UCB over frozen models and
against UCB1 that trains the chosen model on the answers the feedback accepts (the
authors' UCB1 baseline): does adapting give a better model at the end, and at what cost?

Three candidates, each on an engine of its own (adapted versions are served merged into
the engine's weights): SmolLM2-135M-Instruct, SmolLM2 told to answer briefly, and
Gemma-3-270M (a base model). Queries: generated in-distribution instructions
(engine/instructions.py, seed 10), `--rounds` x `--batch` of them per run; the
verifiable reward is the arbiter. After each run every candidate's final version answers
`--test` held-out in-distribution prompts (seed 2), `--eval-seeds` samples each.

Reported per method, over `--seeds` seeds:
- held-out quality (mean verifiable reward) of the candidate `select` names best at the
  end, and of every final version; for the adapted methods, the paired difference over
  test prompts (seeds averaged per prompt) between that model and the frozen run's,
  with its 95% interval, effect size (Cohen's dz) and paired t-test p-value, also with
  Holm's correction over the adapted methods;
- the online reward: the mean reward of every answer served (both answers of a duel,
  ties included);
- the regret against the best frozen candidate on the same queries: per query served,
  the frozen best's reward on it (the mean of `--eval-seeds` samples) minus the mean
  reward of the answers served, summed over the run;
- the seconds spent playing rounds and training.

Power: the held-out comparison has the test prompts as units: with a paired SD of ~0.3,
100 prompts detect 0.084 at alpha 0.05 with 80% power. Online reward and regret have the
seeds as units (5): only large differences can show there.

    python benchmarks/online_adaptation.py --out DIR [--rounds 20] [--batch 8]
        [--seeds 5] [--test 100] [--eval-seeds 2] [--weights lora|full]
        [--learning-rate LR] [--results FILE]

A stopped run goes on where it left off when rerun with the same arguments: every
evaluation and every finished run is kept under `--out` (a run stopped midway resumes
from its last round, and its seconds are those after the restart, marked `resumed`).

`--weights full` runs the adapted methods with every weight trained, the authors' regime
(give a `--learning-rate` near theirs); the default is select's, a LoRA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from multisample.engine.intervals import holm, mean_ci
from multisample.engine.storage import read_jsonl, write_atomic

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
    "ucb1 adapted (accepted answers)": {"policy": {"kind": "ucb1"}, "adapt": {}},
}
SAMPLING = {"temperature": 0.8, "max_tokens": 128}


def prompts(kind: str, count: int, seed: int) -> Any:
    from multisample.engine.config import InstructionTasks
    from multisample.engine.prompts import load_prompts

    tasks = InstructionTasks(generate="instructions", count=count, split=kind, seed=seed)  # type: ignore[arg-type]
    return load_prompts(tasks).prompts


async def answers_scored(
    pool: Any, reward: Any, candidate: dict[str, Any], queries: Any, seeds: int
) -> list[float]:
    """A candidate's reward on each query, averaged over `seeds` samples."""
    from multisample.bandits.select.config import CandidateSpec
    from multisample.bandits.select.loop import candidate_answers
    from multisample.engine.seeds import derive_seed
    from multisample.engine.types import SamplingSettings

    spec = CandidateSpec.model_validate(candidate)
    sampling = SamplingSettings.model_validate(SAMPLING)
    totals = np.zeros(len(queries))
    for seed in range(seeds):
        seeds_ = [derive_seed("online-adaptation eval", seed, q.id) for q in queries]
        texts = await candidate_answers(pool, spec, sampling, list(queries), seeds_)
        scored = await asyncio.gather(
            *(reward.score(q, [t]) for q, t in zip(queries, texts, strict=True))
        )
        totals += np.array([s[0] for s in scored])
    return (totals / seeds).tolist()


async def kept(path: Path, compute: Callable[[], Awaitable[Any]]) -> Any:
    """`compute()`'s JSON result, computed once and kept in `path`: a rerun with the same
    `--out` goes on where a stopped one left off, without measuring anything twice."""
    if not path.exists():
        write_atomic(path, json.dumps(await compute()) + "\n")
    return json.loads(path.read_text(encoding="utf-8"))


def served_rewards(answers: list[dict[str, Any]]) -> dict[str, float]:
    """Per query served, the mean reward of the answers served for it (both of a duel,
    whether tied or not; one of a single-model round)."""
    served: dict[str, float] = {}
    for row in answers:
        single = row["first"] == row["second"]
        scores = [row["first_score"]] if single else [row["first_score"], row["second_score"]]
        served[row["query_id"]] = float(np.mean(scores))
    return served


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from multisample.bandits.select.config import SelectConfig
    from multisample.bandits.select.loop import run_select
    from multisample.engine.config import PoolConfig
    from multisample.engine.model_folders import resolve_model_path
    from multisample.engine.pool import ModelPool
    from multisample.engine.rewards.base import started_reward
    from multisample.engine.rewards.verifiable import VerifiableRewardSpec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = {k: v for k, v in vars(args).items() if k != "results"}
    kept_setup = out / "setup.json"
    if kept_setup.exists() and json.loads(kept_setup.read_text(encoding="utf-8")) != setup:
        raise SystemExit(f"{kept_setup}: {args.out} holds a run of other settings")
    write_atomic(kept_setup, json.dumps(setup) + "\n")
    queries = prompts("in_distribution", args.rounds * args.batch, 10)
    test = prompts("in_distribution", args.test, 2)
    queries_file = out / "queries.jsonl"
    queries_file.write_text(
        "".join(q.model_dump_json(exclude_defaults=True) + "\n" for q in queries), encoding="utf-8"
    )
    figures: dict[str, Any] = {
        "setup": setup,
        "candidates": CANDIDATES,
        "queries": {"generate": "instructions", "split": "in_distribution", "seed": 10},
        "test": {"generate": "instructions", "split": "in_distribution", "seed": 2},
        "methods": {},
    }
    pool_config = PoolConfig.model_validate({"models": MODELS, "request_timeout_s": 3600})
    async with (
        ModelPool(pool_config) as pool,
        started_reward(VerifiableRewardSpec(kind="verifiable"), pool) as reward,
    ):

        async def scored(label: str, candidate: dict[str, Any], on: Any) -> np.ndarray:
            """The candidate's reward per prompt of `on`, kept in scores/<label>.json."""
            compute = partial(answers_scored, pool, reward, candidate, on, args.eval_seeds)
            return np.asarray(await kept(out / "scores" / f"{label}.json", compute))

        # The frozen candidates on the queries (for the regret) and on the test prompts.
        on_queries = {
            c["name"]: await scored(f"frozen-queries-{c['name']}", c, queries) for c in CANDIDATES
        }
        best_frozen = max(on_queries, key=lambda n: on_queries[n].mean())
        frozen_test = {
            c["name"]: await scored(f"frozen-test-{c['name']}", c, test) for c in CANDIDATES
        }
        figures["frozen"] = {
            "best_on_queries": best_frozen,
            "on_queries": {n: round(float(v.mean()), 4) for n, v in on_queries.items()},
            "on_test": {n: round(float(v.mean()), 4) for n, v in frozen_test.items()},
        }
        by_query = dict(zip((q.id for q in queries), on_queries[best_frozen], strict=True))
        held_out: dict[str, list[np.ndarray]] = {}
        adapt = {"weights": args.weights}  # the adapted methods' regime (--weights)
        if args.learning_rate is not None:
            adapt["learning_rate"] = args.learning_rate
        for method, settings in METHODS.items():
            runs = []
            held_out[method] = []
            for seed in range(args.seeds):
                config = SelectConfig.model_validate(
                    {
                        "models": MODELS,
                        "candidates": CANDIDATES,
                        "prompts": str(queries_file),
                        "batch": args.batch,
                        "rounds": args.rounds,
                        "sampling": SAMPLING,
                        "seed": seed,
                        "request_timeout_s": 3600,
                        **{k: {**v, **adapt} if k == "adapt" else v for k, v in settings.items()},
                    }
                )
                label = f"{method.replace(' ', '-')}/seed{seed}"
                run_path = out / label
                record = run_path.with_suffix(".json")  # the finished run's figures
                if not record.exists():
                    resumed = run_path.exists()
                    started = time.perf_counter()
                    summary = await run_select(config, run_path, resume=resumed, pool=pool)
                    seconds = time.perf_counter() - started
                    served = served_rewards(list(read_jsonl(run_path / "answers.jsonl")))
                    training = [
                        json.loads(f.read_text())
                        for f in run_path.glob("adapters/*/v*/training.json")
                    ]
                    finals = frozen_test  # a frozen run's candidates are the frozen ones
                    if "adapt" in settings:
                        finals = {
                            c["name"]: await scored(f"{label}-{c['name']}", c, test)
                            for c in CANDIDATES
                        }
                    regret = sum(by_query[q] - r for q, r in served.items())
                    entry = {
                        "seed": seed,
                        "best": summary["best"],
                        "best_on_test": round(float(finals[summary["best"]].mean()), 4),
                        "final_on_test": {n: round(float(v.mean()), 4) for n, v in finals.items()},
                        "online_reward": round(float(np.mean(list(served.values()))), 4),
                        "regret": round(float(regret), 2),
                        "versions": summary.get("adapter_versions"),
                        "train_seconds": round(sum(t["seconds"] for t in training), 1),
                        "serve_seconds": round(sum(t["serve_seconds"] for t in training), 1),
                        # A run stopped and resumed: its seconds are those of the last part.
                        "seconds": round(seconds, 1),
                        "resumed": resumed,
                        "best_per_test_prompt": finals[summary["best"]].tolist(),
                    }
                    write_atomic(record, json.dumps(entry) + "\n")
                    # The next run starts from the models as configured.
                    for model in MODELS:
                        await pool.load_weights(model["name"], resolve_model_path(model["model"]))
                entry = json.loads(record.read_text(encoding="utf-8"))
                held_out[method].append(np.asarray(entry.pop("best_per_test_prompt")))
                runs.append(entry)
            figures["methods"][method] = {
                "runs": runs,
                "best_on_test": mean_ci([r["best_on_test"] for r in runs]),
                "online_reward": mean_ci([r["online_reward"] for r in runs]),
                "regret": mean_ci([r["regret"] for r in runs]),
            }
        frozen = np.mean(held_out["co_ucb frozen"], axis=0)
        for method in METHODS:
            if method == "co_ucb frozen":
                continue
            mine = np.mean(held_out[method], axis=0)
            diff = mine - frozen
            mean, low, high = mean_ci(diff.tolist())
            figures["methods"][method]["vs_frozen_on_test"] = {
                "difference": mean,
                "ci95": [low, high],
                "effect_size_dz": float(mean / diff.std(ddof=1)) if np.ptp(diff) > 0 else None,
                "p": float(stats.ttest_rel(mine, frozen).pvalue) if np.ptp(diff) > 0 else 1.0,
                "prompts": len(diff),
            }
        # Each adapted method is tested against the frozen run: Holm's correction over them.
        versus = {
            m: row["vs_frozen_on_test"]
            for m, row in figures["methods"].items()
            if "vs_frozen_on_test" in row
        }
        for method, adjusted in holm({m: v["p"] for m, v in versus.items()}).items():
            versus[method]["p_holm"] = adjusted
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(f"frozen on the test prompts: {figures['frozen']['on_test']}")
    print("| method | selected (seeds) | best on test | vs frozen [95% CI], p | online | regret |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, row in figures["methods"].items():
        chosen = ", ".join(r["best"] for r in row["runs"])
        versus = row.get("vs_frozen_on_test")
        cell = "-"
        if versus is not None:
            cell = (
                f"{versus['difference']:+.3f} [{versus['ci95'][0]:+.3f}, {versus['ci95'][1]:+.3f}],"
                f" {versus['p']:.3g} (Holm {versus['p_holm']:.3g})"
            )
        print(
            f"| {method} | {chosen} | {row['best_on_test'][0]:.3f} | {cell} | "
            f"{row['online_reward'][0]:.3f} | {row['regret'][0]:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--out", default="runs/online-adaptation")
    parser.add_argument(
        "--weights", choices=["lora", "full"], default="lora", help="what an update trains"
    )
    parser.add_argument(
        "--learning-rate", type=float, help="of each update (default: adapt's, for a LoRA)"
    )
    parser.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results" / "online_adaptation-cpu-2core.json"),
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    figures["command"] = "python benchmarks/online_adaptation.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k != "results" and v is not None
    )
    Path(args.results).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print_table(figures)


if __name__ == "__main__":
    main()
