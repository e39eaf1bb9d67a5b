"""What a sweep reports: tidy tables, confidence intervals, significance, plots, Markdown.

Small pure functions over pandas tables; only the `write_*` functions touch the disk.
A unit is one (prompt, seed) search of a method at a budget:

- compute measures, per prompt: generations, tokens (prompt + completion, per model and
  in all) and estimated FLOPs (2 x parameters x tokens, per model and in all);
- quality measures, per prompt: the evaluation reward of the answer the selection reward
  picks (its best sample), the mean evaluation reward of the selection's top k, and, for
  a verifiable evaluation reward, whether the picked answer meets all of the prompt's
  constraints. The evaluation reward is the selection reward unless the sweep sets
  `eval_reward`; then `selected_reward` keeps the selection reward of the picked answer.

Statistics are clustered by prompt: the seeds of one prompt are not independent, so each
prompt's units are averaged over its seeds first and the prompts are the sample. Means
carry 95% Student-t intervals over prompts (engine.intervals). At each budget, the best
method's lead over the runner-up is tested over the prompts both have (on the seeds both
have): a paired t-test (`paired_p_value`), or for the all-met share the exact sign test
over the prompts where the methods differ (`share_p_value`; McNemar's exact test with
one seed).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from multisample.engine.intervals import mean_ci, sign_test_p_value

KEYS = ["method", "budget", "seed"]
"""A cell: one method at one budget with one seed."""
COMPUTE = {
    "generations": "generations per prompt",
    "tokens": "tokens per prompt (prompt + completion)",
    "flops": "estimated FLOPs per prompt",
}
"""Compute measures (x axes), per prompt: column -> axis label."""
ALPHA = 0.05
"""Significance level of a lead (two-sided)."""
ALL_MET = "all_met"


def quality_labels(top_k: int, verifiable: bool, evaluator: str | None = None) -> dict[str, str]:
    """Quality measures (y axes): column -> label. `all_met` only for a verifiable
    evaluation reward, whose score is the share of constraints met (1.0: all of them).
    `evaluator` names a separate evaluation reward (None: the selection reward evaluates)."""
    if evaluator is None:
        labels = {"best_reward": "best reward", "topk_reward": f"mean top-{top_k} reward"}
    else:
        labels = {
            "best_reward": f"{evaluator} reward of the selected answer",
            "topk_reward": f"mean {evaluator} reward of the selection's top {top_k}",
        }
    if verifiable:
        labels[ALL_MET] = "share of prompts with all constraints met"
    return labels


def prompt_rows(
    samples: Iterable[Mapping[str, Any]],
    flops_per_token: Mapping[str, float],
    top_k: int,
    verifiable: bool,
    first: int | None = None,
    evaluated: bool = False,
    choose: Callable[[list[Mapping[str, Any]]], int | None] | None = None,
) -> list[dict[str, Any]]:
    """One row per prompt of a search run's samples: compute spent and quality reached.

    Every generation of a search is a sample (feedback included), so the samples are the
    whole spend. `flops_per_token` is 2 x parameters of each model (0 when unknown).
    `first` keeps only each prompt's first `first` samples (a prefix of the search).
    The selection reward (`reward`) ranks the answers (scored samples, not partial
    solutions), ties to the earlier one; the selected answer is the first of them, or the
    one `choose` picks of a prompt's samples (a strategy's own choice: a vote). Quality is
    their `eval_reward` when `evaluated`, else their `reward`, and `verifiable` says the
    evaluating reward is the verifiable one. `generations` counts the samples that are not
    partial solutions (of a step-level search: its finished solutions).
    """
    by_prompt: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for sample in samples:
        if first is None or sample["id"] < first:
            by_prompt[sample["prompt_id"]].append(sample)
    rows = []
    for prompt_id, rows_of_prompt in by_prompt.items():
        row: dict[str, Any] = {
            "prompt_id": prompt_id,
            "generations": sum(not s.get("partial", False) for s in rows_of_prompt),
            "prompt_tokens": sum(s["prompt_tokens"] for s in rows_of_prompt),
            "completion_tokens": sum(s["completion_tokens"] for s in rows_of_prompt),
        }
        row["tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        row["flops"] = 0.0
        for model in sorted(flops_per_token):
            tokens = sum(
                s["prompt_tokens"] + s["completion_tokens"]
                for s in rows_of_prompt
                if s["model"] == model
            )
            row[f"tokens_{model}"] = tokens
            row[f"flops_{model}"] = tokens * flops_per_token[model]
            row["flops"] += row[f"flops_{model}"]
        ranked = sorted(
            (s for s in rows_of_prompt if s["reward"] is not None and not s.get("partial")),
            key=lambda s: (-s["reward"], s["id"]),
        )
        quality = [_evaluation(s) if evaluated else s["reward"] for s in ranked]
        selected = ranked[0] if ranked else None
        if choose is not None:
            chosen = choose(rows_of_prompt)
            selected = next((s for s in rows_of_prompt if s["id"] == chosen), None)
        best = (
            None if selected is None else _evaluation(selected) if evaluated else selected["reward"]
        )
        if best is None and ranked:
            # A vote with no answer to count: the search answered nothing, which scores
            # the bottom of the [0, 1] scales answers are judged on (correct, verifiable).
            best = 0.0
        row["best_reward"] = best
        row["topk_reward"] = statistics.fmean(quality[:top_k]) if quality else None
        if evaluated:
            row["selected_reward"] = None if selected is None else selected["reward"]
        if verifiable:
            # The verifiable reward is met / total: exactly 1.0 when all are met.
            row[ALL_MET] = None if best is None else float(best == 1.0)
        rows.append(row)
    return rows


def mean_rows(tables: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each prompt's row averaged over several tables of `prompt_rows` (subsets of one
    search): every measure's mean over the tables that have it (None where none has)."""
    if len(tables) == 1:
        return tables[0]
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for table in tables:
        for row in table:
            by_prompt[row["prompt_id"]].append(row)
    averaged = []
    for prompt_id, rows in by_prompt.items():
        row: dict[str, Any] = {"prompt_id": prompt_id}
        for key in rows[0]:
            values = [r[key] for r in rows if r.get(key) is not None]
            if key != "prompt_id":
                row[key] = statistics.fmean(values) if values else None
        averaged.append(row)
    return averaged


def _evaluation(sample: Mapping[str, Any]) -> float:
    value = sample.get("eval_reward")
    if value is None:
        raise ValueError(
            f"sample {sample['id']} of prompt {sample['prompt_id']!r} has no evaluation score"
        )
    return float(value)


def cell_table(units: pd.DataFrame) -> pd.DataFrame:
    """One row per method x budget x seed: per-prompt means of every measure."""
    measures = [c for c in units.columns if c not in {*KEYS, "prompt_id", "strategy"}]
    grouped = units.groupby(KEYS, sort=True, observed=True)
    table = grouped[measures].mean()
    table.insert(0, "prompts", grouped.size())
    if "strategy" in units:
        table.insert(0, "strategy", grouped["strategy"].first())
    return table.reset_index()


def prompt_means(units: pd.DataFrame, quality: str) -> pd.Series:
    """Each prompt's `quality` averaged over its seeds (the cluster means), by prompt_id;
    units without a value are left out, and so is a prompt without any."""
    return units.dropna(subset=[quality]).groupby("prompt_id", sort=True)[quality].mean()


def curves(units: pd.DataFrame, qualities: Sequence[str]) -> pd.DataFrame:
    """One row per method x budget: mean compute per prompt, and each quality's mean over
    prompts (seeds averaged per prompt first) with its 95% Student-t interval over
    prompts (`<q>`, `<q>_low`, `<q>_high`)."""
    rows = []
    for (method, budget), group in units.groupby(["method", "budget"], sort=True, observed=True):
        row: dict[str, Any] = {
            "method": method,
            "budget": budget,
            "units": len(group),
            "prompts": group["prompt_id"].nunique(),
        }
        for measure in COMPUTE:
            row[measure] = float(group[measure].mean())
        for quality in qualities:
            values = prompt_means(group, quality)
            mean, low, high = mean_ci(values) if len(values) else (np.nan,) * 3
            row.update({quality: mean, f"{quality}_low": low, f"{quality}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_p_value(leader: Sequence[float], other: Sequence[float]) -> float | None:
    """Two-sided p-value of a mean difference over paired units: Student's paired t-test
    (scipy.stats.ttest_rel), which tests the mean the methods are ranked by.

    Where the t statistic is undefined because every difference is the same: 1.0 when
    they are all zero (no lead at all), else the exact two-sided sign test, 2 x 0.5^n
    (all n units favour one method). None with fewer than two units.
    """
    a, b = np.asarray(leader, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.size} and {b.size}")
    if a.size < 2:
        return None
    differences = a - b
    if np.ptp(differences) <= 1e-12:
        if abs(differences[0]) <= 1e-12:
            return 1.0
        return min(1.0, 2 * 0.5**a.size)
    return float(stats.ttest_rel(a, b).pvalue)


def share_p_value(leader: Sequence[float], other: Sequence[float]) -> float:
    """Two-sided p-value of a difference in a share of binary outcomes (all constraints
    met), paired by prompt: each value is a prompt's share over its seeds; the exact
    sign test over the prompts where the two differ (engine.intervals.sign_test_p_value).
    With one seed the values are 0 or 1 and this is McNemar's exact test."""
    a, b = np.asarray(leader, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.size} and {b.size}")
    return sign_test_p_value(int((a > b).sum()), int((a < b).sum()))


def paired_test(quality: str) -> Callable[[Sequence[float], Sequence[float]], float | None]:
    """The paired test of a quality measure: the sign test for the all-met share, else
    the t-test."""
    return share_p_value if quality == ALL_MET else paired_p_value


def paired_prompt_means(
    group: pd.DataFrame, quality: str, first: str, second: str
) -> tuple[np.ndarray, np.ndarray]:
    """`quality` of methods `first` and `second` per prompt, each averaged over the seeds
    both have a value for, over the prompts both have: the paired test's sample."""
    wide = group.pivot_table(
        index=["prompt_id", "seed"],
        columns="method",
        values=quality,
        aggfunc="first",
        observed=True,
    )[[first, second]].dropna()
    per_prompt = wide.groupby(level="prompt_id", sort=True).mean()
    return per_prompt[first].to_numpy(), per_prompt[second].to_numpy()


@dataclass(frozen=True)
class Lead:
    """The best method at one budget by one quality measure, and its lead."""

    quality: str
    budget: int
    leader: str
    leader_mean: float
    runner_up: str | None
    runner_up_mean: float | None
    prompts: int
    """Prompts both methods have (the test's sample size; seeds averaged per prompt)."""
    p_value: float | None

    @property
    def lead(self) -> float | None:
        return None if self.runner_up_mean is None else self.leader_mean - self.runner_up_mean

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


def leads(units: pd.DataFrame, quality: str) -> list[Lead]:
    """At each budget, the method with the highest mean `quality` over prompts (seeds
    averaged per prompt) and its paired test against the runner-up over prompts
    (`paired_test`). A tie in the mean goes to the
    method listed first."""
    found = []
    for budget, group in units.groupby("budget", sort=True):
        means = (
            group.dropna(subset=[quality])
            .groupby(["method", "prompt_id"], sort=True, observed=True)[quality]
            .mean()
            .groupby(level="method", sort=True, observed=True)
            .mean()
            .dropna()
        )
        if means.empty:
            continue
        order = sorted(means.index, key=lambda m: -means[m])  # stable: ties keep table order
        leader = order[0]
        if len(order) == 1:
            found.append(
                Lead(quality, int(budget), leader, float(means[leader]), None, None, 0, None)
            )
            continue
        runner_up = order[1]
        first, second = paired_prompt_means(group, quality, leader, runner_up)
        p = paired_test(quality)(first, second)
        found.append(
            Lead(
                quality,
                int(budget),
                leader,
                float(means[leader]),
                runner_up,
                float(means[runner_up]),
                len(first),
                p,
            )
        )
    return found


def write_table(table: pd.DataFrame, stem: Path) -> list[Path]:
    """`table` as `<stem>.csv` and `<stem>.parquet`."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, parquet = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    table.to_csv(csv, index=False)
    table.to_parquet(parquet, index=False)
    return [csv, parquet]


def _axes(
    ax: Any, curve: pd.DataFrame, quality: str, compute: str, labels: Mapping[str, str]
) -> None:
    for method in dict.fromkeys(curve["method"]):  # in table order
        rows = curve[curve["method"] == method].sort_values("budget")
        (line,) = ax.plot(rows[compute], rows[quality], marker="o", label=method)
        ax.fill_between(
            rows[compute],
            rows[f"{quality}_low"],
            rows[f"{quality}_high"],
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    from matplotlib.ticker import (
        EngFormatter,
        FixedLocator,
        LogLocator,
        NullFormatter,
        ScalarFormatter,
    )

    if compute == "generations":  # budgets as plain numbers: 1, 2, 4, 8...
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(curve["generations"].round().unique())))
        ax.xaxis.set_major_formatter(ScalarFormatter())
    else:  # 200, 500, 1 k, 2 k...; 50 G, 100 G...
        ax.set_xscale("log", base=10)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(COMPUTE[compute])
    ax.set_ylabel(labels[quality])
    ax.grid(True, which="major", alpha=0.3)


def write_plots(curve: pd.DataFrame, labels: Mapping[str, str], folder: Path) -> list[Path]:
    """`<quality>-vs-<compute>.png` for every pair (one curve and 95% band per method),
    and `overview.png` with all of them. FLOPs plots are skipped when no model's
    parameter count is known (every FLOPs figure is 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    computes = [c for c in COMPUTE if c != "flops" or (curve["flops"] > 0).all()]
    written = []
    for quality in labels:
        for compute in computes:
            fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
            _axes(ax, curve, quality, compute, labels)
            ax.legend(fontsize="small")
            ax.set_title(f"{labels[quality]} vs {compute}", fontsize="medium")
            fig.tight_layout()
            path = folder / f"{quality}-vs-{compute}.png"
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    fig, grid = plt.subplots(
        len(labels),
        len(computes),
        figsize=(4.2 * len(computes), 3.2 * len(labels)),
        dpi=100,
        squeeze=False,
    )
    for row, quality in enumerate(labels):
        for column, compute in enumerate(computes):
            _axes(grid[row][column], curve, quality, compute, labels)
    handles, names = grid[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(names), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = folder / "overview.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


def _ci(row: Mapping[str, Any], quality: str) -> str:
    if pd.isna(row[quality]):
        return "-"
    return f"{row[quality]:.3f} [{row[f'{quality}_low']:.3f}, {row[f'{quality}_high']:.3f}]"


def markdown_report(
    title: str,
    facts: Sequence[str],
    curve: pd.DataFrame,
    found: Mapping[str, list[Lead]],
    labels: Mapping[str, str],
    plots: Sequence[str],
) -> str:
    """The sweep's report: what ran, every method x budget with intervals, the best method
    at each budget by each quality measure with the significance of its lead, the plots."""
    lines = [f"# {title}", "", *(f"- {fact}" for fact in facts), ""]
    lines += [
        "## Quality against compute",
        "",
        "Per-prompt means: each prompt's value averaged over its seeds, then the mean over "
        "prompts, quality with its 95% Student-t interval over prompts (a prompt's seeds "
        "are not independent, so the prompts are the sample).",
        "",
        "| method | budget | tokens/prompt | FLOPs/prompt | " + " | ".join(labels.values()) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---" for _ in labels) + " |",
    ]
    for _, row in curve.sort_values("budget", kind="stable").iterrows():
        cells = [_ci(row, q) for q in labels]
        lines.append(
            f"| {row['method']} | {row['budget']} | {row['tokens']:,.0f} | "
            f"{row['flops']:.3g} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "## Best method at each budget",
        "",
        f"The lead is the leader's mean minus the runner-up's. p is two-sided, over the "
        f"prompts both have, each method's seeds averaged per prompt (on the seeds both "
        f"have): a paired t-test (a sign test when every difference is the same), and for "
        f"the all-met share the exact sign test over the prompts where the two differ "
        f"(McNemar's exact test with one seed); significant: p < {ALPHA}.",
    ]
    for quality, rows in found.items():
        lines += [
            "",
            f"### {labels[quality]}",
            "",
            "| budget | best | runner-up | lead | p | significant |",
            "| ---: | --- | --- | ---: | ---: | --- |",
        ]
        for lead in rows:
            runner = (
                "-" if lead.runner_up is None else f"{lead.runner_up} ({lead.runner_up_mean:.3f})"
            )
            gap = "-" if lead.lead is None else f"{lead.lead:+.3f}"
            p = "-" if lead.p_value is None else f"{lead.p_value:.3g}"
            verdict = "yes" if lead.significant else "no (tie)" if lead.lead == 0 else "no"
            lines.append(
                f"| {lead.budget} | **{lead.leader}** ({lead.leader_mean:.3f}) | {runner} | "
                f"{gap} | {p} | {verdict} |"
            )
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
