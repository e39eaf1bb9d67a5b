"""A sweep's outputs, from its cells on disk: one row per prompt of every cell (`units`),
the cell table, the curves with their intervals, the plots, the report and the summary.
The statistics and plots themselves are search.sweep.report's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from multisample.engine.prompts import PromptFile, load_prompts
from multisample.engine.rewards.verifiable import VerifiableRewardSpec
from multisample.engine.seeds import derive_seed
from multisample.engine.storage import SUMMARY, RunDirectory, read_jsonl
from multisample.search.base import sample_of
from multisample.search.sweep import report
from multisample.search.sweep.config import Cell, SweepConfig, SweepMethod, cell_path
from multisample.search.sweep.evaluation import evaluation_scores
from multisample.search.synthesize.records import SAMPLES


def load_units(config: SweepConfig, path: Path, prompts: PromptFile | None = None) -> pd.DataFrame:
    """One row per (method, budget, seed, prompt) from the cells on disk; quality is that
    of the answer each method's strategy chooses (with an `eval_reward`, its score).
    `prompts`: the sweep's, read from its config when not given."""
    verifiable = isinstance(config.evaluator(), VerifiableRewardSpec)
    evaluated = config.eval_reward is not None
    prompts = prompts or load_prompts(config.prompts, config.limit)
    by_id = {p.id: p for p in prompts.prompts}
    rows = []
    cache: dict[Cell, tuple[list[dict[str, Any]], dict[str, float]]] = {}
    for cell in config.cells():
        source = config.source(cell)
        if source not in cache:
            folder = cell_path(path, source)
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            samples = list(read_jsonl(folder / SAMPLES))
            if evaluated:
                scores = evaluation_scores(folder)
                for sample in samples:
                    sample["eval_reward"] = scores.get(sample["prompt_id"], {}).get(sample["id"])
            cache[source] = (samples, flops_per_token(summary))
        samples, rates = cache[source]
        method = config.method(cell.method)

        def choose(samples: list[dict[str, Any]], method: SweepMethod = method) -> int | None:
            prompt = by_id[samples[0]["prompt_id"]]
            return method.strategy.choose([sample_of(s) for s in samples], prompt)

        keys = {
            "method": cell.method,
            "strategy": method.strategy.kind,
            "budget": cell.budget,
            "seed": cell.seed,
        }
        per_subset = [
            report.prompt_rows(
                samples if kept is None else [s for s in samples if s["id"] in kept],
                rates,
                config.top_k,
                verifiable,
                evaluated=evaluated,
                choose=choose,
            )
            for kept in subsets(config, cell, source)
        ]
        rows += [{**keys, **row} for row in report.mean_rows(per_subset)]
    units = pd.DataFrame(rows)
    per_model = sorted({k for r in rows for k in r if k.startswith(("tokens_", "flops_"))})
    units[per_model] = units[per_model].fillna(0)  # a model a method never called
    tokens = [c for c in per_model if c.startswith("tokens_")]
    units[tokens] = units[tokens].round().astype(int)  # (a mean over subsets is not whole)
    first = ["method", "strategy", "budget", "seed", "prompt_id", "generations"]
    first += ["prompt_tokens", "completion_tokens", "tokens", *tokens, "flops"]
    first += [c for c in per_model if c.startswith("flops_")]
    units = units[first + [c for c in units.columns if c not in first]]
    # Methods keep the config's order in every table and plot.
    units["method"] = pd.Categorical(units["method"], [m.name for m in config.methods])
    return units


def subsets(config: SweepConfig, cell: Cell, source: Cell) -> list[set[int] | None]:
    """The sample ids of `source`'s search that make `cell`'s: all of them (None) for a
    search of its own; of a reused larger one, its first b, or `subsamples` random sets
    of b (seeded by the sweep seed and b, the same for every prompt)."""
    if source == cell:
        return [None]
    count = config.method(cell.method).subsamples
    if count == 1:
        return [set(range(cell.budget))]
    rng = np.random.default_rng(derive_seed("subsample", cell.seed, cell.budget))
    return [
        {int(i) for i in rng.choice(source.budget, cell.budget, replace=False)}
        for _ in range(count)
    ]


def flops_per_token(summary: dict[str, Any]) -> dict[str, float]:
    """2 x parameters of each model a run used, from its summary (0 when unknown)."""
    rates = {}
    for model, spend in summary["spend_per_model"].items():
        tokens = spend["prompt_tokens"] + spend["completion_tokens"]
        rates[model] = spend.get("flops", 0.0) / tokens if tokens else 0.0
    return rates


def describe_method(method: SweepMethod) -> str:
    settings = method.strategy.model_dump(exclude={"kind"}, exclude_defaults=True)
    parts = [method.strategy.kind, *(f"{k}={v}" for k, v in settings.items())]
    if method.reuse_prefix:
        parts.append("smaller budgets are prefixes of the largest")
    return f"{method.name} ({', '.join(parts)})"


def write_outputs(
    config: SweepConfig,
    path: Path,
    sweep_dir: RunDirectory,
    prompts: PromptFile,
    session: dict[str, Any] | None,
) -> dict[str, Any]:
    """Tables, plots and report from the cells on disk; summary.json last."""
    units = load_units(config, path, prompts)
    labels = report.quality_labels(
        config.top_k,
        isinstance(config.evaluator(), VerifiableRewardSpec),
        config.evaluator_name(),
    )
    table = report.cell_table(units)
    curve = report.curves(units, list(labels))
    files = report.write_table(table, path / "table")
    files += report.write_table(units, path / "units")
    curve.to_csv(path / "curves.csv", index=False)
    plots = report.write_plots(curve, labels, path / "plots")
    found = {q: report.leads(units, q) for q in labels}
    text = report.markdown_report(
        f"Sweep {path.name}",
        _facts(config, prompts, session),
        curve,
        found,
        labels,
        [str(p.relative_to(path)) for p in plots if p.name != "overview.png"],
    )
    (path / "report.md").write_text(text, encoding="utf-8")
    summary = {
        "status": "complete",
        "cells": len(table),
        "searches": len(config.searches()),
        "prompts": len(prompts.prompts),
        "methods": [m.name for m in config.methods],
        "budgets": sorted(config.budgets),
        "seeds": config.seeds,
        "selection_reward": config.reward.kind,
        "evaluation_reward": config.evaluator().kind,
        "evaluated_separately": config.eval_reward is not None,
        "best_per_budget": {q: [lead_document(lead) for lead in rows] for q, rows in found.items()},
        "outputs": sorted(
            str(p.relative_to(path))
            for p in [*files, *plots, path / "curves.csv", path / "report.md"]
        ),
        "this_session": session,
    }
    sweep_dir.write_summary(summary)
    return summary


def _facts(config: SweepConfig, prompts: PromptFile, session: dict[str, Any] | None) -> list[str]:
    """The report's opening lines: what was swept, and this session's throughput."""
    facts = [
        f"{len(prompts.prompts)} prompts ({config.prompts}) x {len(config.seeds)} seed(s) "
        f"{config.seeds}; budgets {sorted(config.budgets)} generations per prompt",
        "methods: " + "; ".join(describe_method(m) for m in config.methods),
        f"selection reward: {config.reward.kind}; evaluation reward: "
        + (
            f"{config.eval_reward.kind} (separate: quality is its score of the selected answers)"
            if config.eval_reward is not None
            else f"{config.reward.kind} (the same: the best reward is an oracle best-of-N)"
        )
        + f"; sampling: temperature {config.sampling.temperature}, "
        f"max_tokens {config.sampling.max_tokens}",
    ]
    if session is not None:
        facts.append(
            f"searches of this session: {session['search_wall_s']:.0f} s, "
            f"{session['completion_tokens']:,} generated tokens "
            f"({session['completion_tokens_per_s'] or 0:,.0f} tokens/s)"
        )
    return facts


def lead_document(lead: report.Lead) -> dict[str, Any]:
    """One budget's best method in summary.json."""
    return {
        "budget": lead.budget,
        "method": lead.leader,
        "mean": lead.leader_mean,
        "runner_up": lead.runner_up,
        "lead": lead.lead,
        "prompts": lead.prompts,
        "p_value": lead.p_value,
        "significant": lead.significant,
    }
