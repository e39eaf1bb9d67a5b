"""Methods at an equal budget: a sweep at one budget over the shipped task set.

On the embedded default (SmolLM2 chat + Gemma-3-270M base, the verifiable reward), every
method spends the same number of generations per prompt. The prompts are split into
chunks and each chunk is one sweep (`search.sweep`) in its own folder under `--out`,
all served by one pool (the engines start once). After each chunk the tables are rebuilt
from every chunk done, so a benchmark stopped early still reports the prompts it
finished; a rerun with the same `--out` resumes each chunk where it stopped, and once
every chunk is done it starts no engine and only rebuilds the tables.

    python benchmarks/compare_methods.py --out DIR [--prompts 136] [--chunk 34]
        [--budget 16] [--seeds 1] [--json FILE]

Statistics are the sweep's, clustered by prompt: each prompt's seeds are averaged first,
means carry 95% Student-t intervals over prompts, and every method is compared with
best-of-N on the chat model over the same prompts (paired t-test; for the all-met
share, the exact sign test, which is McNemar's with one seed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from multisample.engine.pool import ModelPool
from multisample.engine.prompts import tasks_path
from multisample.search.sweep import report as sweep_report
from multisample.search.sweep.config import SweepConfig
from multisample.search.sweep.evaluation import searches_done
from multisample.search.sweep.outputs import lead_document, load_units
from multisample.search.sweep.run import sweep

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when vLLM loads, not at import

CHAT, BASE = "smollm2", "gemma3"
BASELINE = f"rand-{CHAT}"
METHODS: dict[str, dict[str, Any]] = {
    BASELINE: {"kind": "best_of_n", "model": CHAT},
    f"rand-{BASE}": {"kind": "best_of_n", "model": BASE},
    "ensemble": {"kind": "ensemble"},
    "refine": {"kind": "refine"},
    "moa": {"kind": "moa"},
    f"prs-{CHAT}": {"kind": "prs", "model": CHAT},
    "toa": {"kind": "toa"},
}
TEMPERATURE = 0.8
QUALITIES = sweep_report.quality_labels(top_k=4, verifiable=True)


def sweep_config(args: argparse.Namespace, prompts: Path) -> dict[str, Any]:
    return {
        "models": [
            {"name": CHAT, "model": "embedded:smollm2-135m-instruct"},
            {"name": BASE, "model": "embedded:gemma3-270m", "prompt_format": "base"},
        ],
        "prompts": str(prompts),
        "methods": [{"name": n, "strategy": s} for n, s in METHODS.items()],
        "budgets": [args.budget],
        "seeds": list(range(args.seeds)),
        "sampling": {"temperature": TEMPERATURE, "max_tokens": args.max_tokens},
        "top_k": 4,
        "concurrency": args.concurrency,
    }


def write_chunks(out: Path, prompts: int, size: int) -> list[Path]:
    """The first `prompts` lines of the task set as chunk files of `size` lines (kept
    as they are when a rerun finds them, so a resumed chunk sees the same prompts)."""
    lines = tasks_path().read_text(encoding="utf-8").splitlines()[:prompts]
    files = []
    for start in range(0, len(lines), size):
        path = out / f"prompts-{start // size:02d}.jsonl"
        if not path.exists():
            path.write_text("\n".join(lines[start : start + size]) + "\n", encoding="utf-8")
        files.append(path)
    return files


def summarize(units: pd.DataFrame) -> dict[str, Any]:
    """Per method: mean compute and each quality's mean and 95% interval over prompts,
    and its paired difference from the baseline with the p-value."""
    curve = sweep_report.curves(units, list(QUALITIES)).set_index("method")
    methods: dict[str, Any] = {}
    for method in curve.index:
        row = curve.loc[method]
        entry: dict[str, Any] = {
            "prompts": int(row["prompts"]),
            "units": int(row["units"]),
            **{m: float(row[m]) for m in sweep_report.COMPUTE},
        }
        for quality in QUALITIES:
            entry[quality] = [float(row[q]) for q in (quality, f"{quality}_low", f"{quality}_high")]
            if method != BASELINE:
                mine, base = sweep_report.paired_prompt_means(units, quality, method, BASELINE)
                entry[f"{quality}_vs_{BASELINE}"] = {
                    "difference": float((mine - base).mean()),
                    "p_value": sweep_report.paired_test(quality)(mine, base),
                }
        methods[str(method)] = entry
    leads = {q: [lead_document(x) for x in sweep_report.leads(units, q)] for q in QUALITIES}
    return {"methods": methods, "best": leads}


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = write_chunks(out, args.prompts, args.chunk)
    configs = [SweepConfig.model_validate(sweep_config(args, p)) for p in chunks]
    folders = [out / p.stem.replace("prompts", "sweep") for p in chunks]
    done: list[pd.DataFrame] = []
    result: dict[str, Any] = {}
    # Engines start only if a chunk has searches left: a finished benchmark rebuilds its
    # tables from the chunks on disk in seconds.
    todo = not all(searches_done(c, f) for c, f in zip(configs, folders, strict=True))
    async with ModelPool(configs[0], configs[0].sampling) if todo else nullcontext() as pool:
        for index, (config, folder) in enumerate(zip(configs, folders, strict=True)):
            await sweep(config, folder, resume=folder.exists(), pool=pool)
            done.append(load_units(config, folder))
            result = {
                "setup": {
                    "prompts": sum(len(d["prompt_id"].unique()) for d in done),
                    "chunks_done": index + 1,
                    "chunks": len(chunks),
                    "budget": args.budget,
                    "seeds": args.seeds,
                    "max_tokens": args.max_tokens,
                    "temperature": TEMPERATURE,
                    "baseline": BASELINE,
                },
                **summarize(pd.concat(done, ignore_index=True)),
            }
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(f"chunk {index + 1}/{len(chunks)} done", flush=True)
    return result


def interval(values: list[float]) -> str:
    return "{:.3f} [{:.3f}, {:.3f}]".format(*values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the chunk sweeps (resumed)")
    parser.add_argument("--prompts", type=int, default=136, help="first N of the task set")
    parser.add_argument("--chunk", type=int, default=34, help="prompts per sweep")
    parser.add_argument("--budget", type=int, default=16, help="generations per prompt")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=64, help="searches in flight")
    parser.add_argument("--json", help="write the results to this file after each chunk")
    args = parser.parse_args()

    result = asyncio.run(compare(args))
    setup = result["setup"]
    print(
        f"\n{setup['prompts']} prompts x {args.seeds} seeds, {args.budget} generations "
        f"per prompt; p: paired over prompts against {BASELINE}"
    )
    header = [f"{label} (95% CI)" for label in QUALITIES.values()]
    print(" | ".join(["method", *header, "tokens/prompt", "p best", "p all met"]))
    for method, row in sorted(result["methods"].items(), key=lambda kv: -kv[1]["best_reward"][0]):
        p = [row.get(f"{q}_vs_{BASELINE}", {}).get("p_value") for q in ("best_reward", "all_met")]
        cells = [interval(row[q]) for q in QUALITIES]
        cells += [f"{row['tokens']:.0f}", *("-" if x is None else f"{x:.3f}" for x in p)]
        print(" | ".join([method, *cells]))


if __name__ == "__main__":
    main()
