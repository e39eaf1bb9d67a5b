"""Sweep statistics against scipy on known data, and the tables, plots and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from search import sweep_report
from search.sweep_report import (
    ALL_MET,
    cell_table,
    curves,
    leads,
    markdown_report,
    paired_p_value,
    prompt_rows,
    quality_labels,
    write_plots,
    write_table,
)

# Two methods, two budgets, two seeds, three prompts: 6 (prompt, seed) units per cell.
BEST = {
    ("a", 1): [0.2, 0.5, 0.9, 0.4, 0.7, 0.3],
    ("b", 1): [0.1, 0.5, 0.6, 0.4, 0.2, 0.3],
    ("a", 2): [0.6, 0.7, 1.0, 0.8, 0.9, 0.5],
    ("b", 2): [0.5, 0.6, 0.9, 0.7, 0.8, 0.4],  # a - b = 0.1 on every unit
}


def units() -> pd.DataFrame:
    rows = []
    for (method, budget), values in BEST.items():
        for i, value in enumerate(values):
            rows.append(
                {
                    "method": method,
                    "strategy": "best_of_n",
                    "budget": budget,
                    "seed": i % 2,
                    "prompt_id": f"p{i // 2}",
                    "generations": budget,
                    "tokens": 100 * budget + i,
                    "flops": 2e6 * (100 * budget + i),
                    "best_reward": value,
                    "topk_reward": value / 2,
                    ALL_MET: float(value >= 1.0),
                }
            )
    return pd.DataFrame(rows)


def test_curve_intervals_are_scipy_t_intervals() -> None:
    curve = curves(units(), ["best_reward", "topk_reward"])
    assert len(curve) == 4 and set(curve["units"]) == {6}
    for _, row in curve.iterrows():
        data = np.array(BEST[(row["method"], row["budget"])])
        low, high = stats.t.interval(0.95, len(data) - 1, loc=data.mean(), scale=stats.sem(data))
        assert row["best_reward"] == pytest.approx(data.mean())
        assert (row["best_reward_low"], row["best_reward_high"]) == pytest.approx((low, high))
        half = data / 2
        low, high = stats.t.interval(0.95, 5, loc=half.mean(), scale=stats.sem(half))
        assert (row["topk_reward_low"], row["topk_reward_high"]) == pytest.approx((low, high))
    first = curve[(curve["method"] == "a") & (curve["budget"] == 1)].iloc[0]
    assert first["tokens"] == pytest.approx(102.5) and first["generations"] == 1


def test_paired_p_value_is_scipys_paired_t_test() -> None:
    a, b = BEST[("a", 1)], BEST[("b", 1)]
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p_value(b, a) == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_paired_p_value_when_the_t_statistic_is_undefined() -> None:
    assert paired_p_value([0.5, 0.5, 1.0], [0.5, 0.5, 1.0]) == 1.0  # no difference at all
    # Every unit favours the first by the same amount: the exact sign test, 2 x 0.5^n.
    assert paired_p_value(BEST[("a", 2)], BEST[("b", 2)]) == pytest.approx(2 * 0.5**6)
    assert paired_p_value([1.0, 1.0], [0.0, 0.0]) == 0.5
    assert paired_p_value([1.0], [0.0]) is None
    with pytest.raises(ValueError, match="differ in size"):
        paired_p_value([1.0, 0.5], [0.0])


def test_leads_name_the_best_method_and_test_it_against_the_runner_up() -> None:
    found = leads(units(), "best_reward")
    assert [(lead.budget, lead.leader, lead.runner_up) for lead in found] == [
        (1, "a", "b"),
        (2, "a", "b"),
    ]
    one, two = found
    assert one.lead == pytest.approx(np.mean(BEST[("a", 1)]) - np.mean(BEST[("b", 1)]))
    assert one.p_value == pytest.approx(stats.ttest_rel(BEST[("a", 1)], BEST[("b", 1)]).pvalue)
    assert one.units == 6 and not one.significant  # p = 0.10
    assert two.p_value == pytest.approx(0.03125) and two.significant


def test_leads_pair_only_shared_units_and_handle_a_lone_method() -> None:
    data = units()
    data = data[~((data["method"] == "b") & (data["prompt_id"] == "p0"))]
    (lead, _) = leads(data, "best_reward")
    assert lead.units == 4
    kept = [0.9, 0.4, 0.7, 0.3], [0.6, 0.4, 0.2, 0.3]
    assert lead.p_value == pytest.approx(stats.ttest_rel(*kept).pvalue)
    alone = leads(units().query("method == 'a'"), "best_reward")
    assert alone[0].runner_up is None and alone[0].p_value is None and not alone[0].significant


def test_a_tie_is_not_a_significant_lead() -> None:
    data = units()
    data.loc[data["method"] == "b", "best_reward"] = data.loc[
        data["method"] == "a", "best_reward"
    ].to_numpy()
    for lead in leads(data, "best_reward"):
        assert lead.lead == 0 and lead.p_value == 1.0 and not lead.significant


def sample(prompt: str, i: int, model: str, reward: float | None, tokens: int = 10) -> dict:
    return {
        "prompt_id": prompt,
        "id": i,
        "model": model,
        "reward": reward,
        "prompt_tokens": tokens,
        "completion_tokens": 5,
    }


def test_prompt_rows_measure_compute_per_model_and_quality() -> None:
    samples = [
        sample("p", 0, "x", 0.5),
        sample("p", 1, "y", 1.0, tokens=30),
        sample("p", 2, "x", None),  # feedback: costs compute, is no answer
        sample("p", 3, "x", 0.25),
        sample("p", 4, "x", 0.75),
        sample("q", 0, "x", 0.5),
    ]
    rates = {"x": 2e6, "y": 4e6}
    p, q = prompt_rows(samples, rates, top_k=2, verifiable=True)
    assert p["generations"] == 5 and p["prompt_tokens"] == 70 and p["completion_tokens"] == 25
    assert p["tokens"] == 95 and p["tokens_x"] == 60 and p["tokens_y"] == 35
    assert p["flops_x"] == 60 * 2e6 and p["flops_y"] == 35 * 4e6
    assert p["flops"] == p["flops_x"] + p["flops_y"]
    assert p["best_reward"] == 1.0 and p["topk_reward"] == pytest.approx(0.875)
    assert p[ALL_MET] == 1.0 and q[ALL_MET] == 0.0 and q["topk_reward"] == 0.5
    # A prefix: the first two samples of each prompt.
    p2, _ = prompt_rows(samples, rates, top_k=4, verifiable=False, first=2)
    assert p2["generations"] == 2 and p2["topk_reward"] == 0.75 and ALL_MET not in p2


def test_quality_labels() -> None:
    assert list(quality_labels(4, verifiable=True)) == ["best_reward", "topk_reward", ALL_MET]
    assert quality_labels(3, verifiable=False)["topk_reward"] == "mean top-3 reward"


def test_table_plots_and_report_from_synthetic_rows(tmp_path: Path) -> None:
    data = units()
    table = cell_table(data)
    assert len(table) == 8 and set(table["prompts"]) == {3}
    assert list(table.columns[:5]) == ["method", "budget", "seed", "strategy", "prompts"]
    written = write_table(table, tmp_path / "table")
    assert [p.name for p in written] == ["table.csv", "table.parquet"]
    from_csv = pd.read_csv(tmp_path / "table.csv")
    from_parquet = pd.read_parquet(tmp_path / "table.parquet")
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)

    labels = quality_labels(4, verifiable=True)
    curve = curves(data, list(labels))
    plots = write_plots(curve, labels, tmp_path / "plots")
    names = {p.name for p in plots}
    assert len(names) == 3 * 3 + 1 and "best_reward-vs-flops.png" in names
    assert all(p.stat().st_size > 1000 for p in plots)
    # Unknown parameter counts: every FLOPs figure is 0, so no FLOPs plots.
    no_flops = write_plots(curve.assign(flops=0.0), labels, tmp_path / "plain")
    assert not any("flops" in p.name for p in no_flops)

    found = {q: leads(data, q) for q in labels}
    report = markdown_report("Sweep t", ["3 prompts"], curve, found, labels, ["plots/x.png"])
    assert report.startswith("# Sweep t\n\n- 3 prompts")
    assert "| 2 | **a** (0.750) | b (0.650) | +0.100 | 0.0312 | yes |" in report
    assert "0.500 [" in report and "![x](plots/x.png)" in report
    assert sweep_report.ALPHA == 0.05
