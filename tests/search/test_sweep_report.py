"""Sweep statistics against scipy on known data, and the tables, plots and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from multisample.search.sweep import report as sweep_report
from multisample.search.sweep.report import (
    ALL_MET,
    cell_table,
    curves,
    leads,
    markdown_report,
    paired_p_value,
    paired_prompt_means,
    prompt_means,
    prompt_rows,
    quality_labels,
    share_p_value,
    write_plots,
    write_table,
)

# Two methods, two budgets, two seeds, three prompts: 6 (prompt, seed) units per cell;
# unit i is prompt p{i // 2}, seed i % 2.
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


# The seeds of each prompt averaged, by hand: (0.2 + 0.5) / 2, (0.9 + 0.4) / 2, ...
PROMPT_MEANS = {
    ("a", 1): [0.35, 0.65, 0.5],
    ("b", 1): [0.3, 0.5, 0.25],
    ("a", 2): [0.65, 0.9, 0.7],
    ("b", 2): [0.55, 0.8, 0.6],
}


def test_prompt_means_average_each_prompts_seeds() -> None:
    data = units()
    for (method, budget), expected in PROMPT_MEANS.items():
        cell = data[(data["method"] == method) & (data["budget"] == budget)]
        got = prompt_means(cell, "best_reward")
        assert list(got.index) == ["p0", "p1", "p2"]
        np.testing.assert_allclose(got.to_numpy(), expected)
    # A unit without a value is left out of its prompt's mean.
    cell = data[(data["method"] == "a") & (data["budget"] == 1)].copy()
    cell.loc[cell.index[0], "best_reward"] = np.nan
    np.testing.assert_allclose(prompt_means(cell, "best_reward").to_numpy(), [0.5, 0.65, 0.5])


def test_curve_intervals_are_t_intervals_over_prompts() -> None:
    curve = curves(units(), ["best_reward", "topk_reward"])
    assert len(curve) == 4 and set(curve["units"]) == {6} and set(curve["prompts"]) == {3}
    for _, row in curve.iterrows():
        # n = 3 prompts, not 6 (prompt, seed) units: a prompt's seeds are not independent.
        data = np.array(PROMPT_MEANS[(row["method"], row["budget"])])
        low, high = stats.t.interval(0.95, 2, loc=data.mean(), scale=stats.sem(data))
        assert row["best_reward"] == pytest.approx(data.mean())
        assert (row["best_reward_low"], row["best_reward_high"]) == pytest.approx((low, high))
        half = data / 2
        low, high = stats.t.interval(0.95, 2, loc=half.mean(), scale=stats.sem(half))
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
    assert one.lead == pytest.approx(0.5 - 0.35)
    # Paired over the 3 prompts: differences 0.05, 0.15, 0.25 (t = 2.598, 2 df).
    assert one.p_value == pytest.approx(
        stats.ttest_rel(PROMPT_MEANS[("a", 1)], PROMPT_MEANS[("b", 1)]).pvalue
    )
    assert one.p_value == pytest.approx(0.1216, abs=1e-4)
    assert one.prompts == 3 and not one.significant
    # Every prompt favours a by 0.1: the sign test over 3 prompts, 2 x 0.5^3 (over the 6
    # units it would be 0.03125, significant).
    assert two.p_value == pytest.approx(0.25) and not two.significant


def test_leads_pair_only_shared_prompts_and_handle_a_lone_method() -> None:
    data = units()
    data = data[~((data["method"] == "b") & (data["prompt_id"] == "p0"))]
    (lead, _) = leads(data, "best_reward")
    assert lead.prompts == 2
    kept = [0.65, 0.5], [0.5, 0.25]
    assert lead.p_value == pytest.approx(stats.ttest_rel(*kept).pvalue)
    # Seeds are paired too: b lacks seed 1 of p1, so a's p1 is its seed 0 alone.
    data = units()
    data = data[~((data["method"] == "b") & (data["prompt_id"] == "p1") & (data["seed"] == 1))]
    first, second = paired_prompt_means(data[data["budget"] == 1], "best_reward", "a", "b")
    np.testing.assert_allclose(first, [0.35, 0.9, 0.5])
    np.testing.assert_allclose(second, [0.3, 0.6, 0.25])
    alone = leads(units().query("method == 'a'"), "best_reward")
    assert alone[0].runner_up is None and alone[0].p_value is None and not alone[0].significant


def test_a_tie_is_not_a_significant_lead() -> None:
    data = units()
    data.loc[data["method"] == "b", "best_reward"] = data.loc[
        data["method"] == "a", "best_reward"
    ].to_numpy()
    for lead in leads(data, "best_reward"):
        assert lead.lead == 0 and lead.p_value == 1.0 and not lead.significant


def test_share_p_value_is_an_exact_sign_test_over_prompts() -> None:
    # One seed: McNemar's exact test. 5 prompts met by the first only, 0 by the second
    # only (the concordant ones do not count): 2 x 0.5^5.
    assert share_p_value([1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1]) == pytest.approx(0.0625)
    # Seed-averaged shares: one prompt each way, one tie -> Bin(2, 1/2), p = 1.
    assert share_p_value([0.5, 1.0, 0.0], [0.0, 1.0, 0.5]) == pytest.approx(1.0)
    assert share_p_value([1.0, 0.0], [1.0, 0.0]) == 1.0  # no discordant prompt
    with pytest.raises(ValueError, match="differ in size"):
        share_p_value([1.0], [1.0, 0.0])


def test_the_all_met_lead_is_tested_by_the_sign_test() -> None:
    data = units()
    # a meets all constraints on every unit of budget 1, b on every unit but p0's.
    one = data["budget"] == 1
    data.loc[one, ALL_MET] = 1.0
    data.loc[one & (data["method"] == "b") & (data["prompt_id"] == "p0"), ALL_MET] = 0.0
    lead = leads(data, ALL_MET)[0]
    assert (lead.leader, lead.runner_up) == ("a", "b")
    # One discordant prompt of three: Bin(1, 1/2), p = 1 (a t-test would be undefined).
    assert lead.p_value == pytest.approx(1.0) and lead.prompts == 3


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


def test_prompt_rows_evaluate_what_the_selection_reward_picked() -> None:
    rows = [
        {**sample("p", 0, "x", 0.5), "eval_reward": 0.9},
        {**sample("p", 1, "x", 1.0), "eval_reward": 0.2},
        {**sample("p", 2, "x", None), "eval_reward": None},  # feedback: not evaluated
        {**sample("p", 3, "x", 0.25), "eval_reward": 1.0},
        {**sample("p", 4, "x", 0.75), "eval_reward": 0.4},
        {**sample("q", 0, "x", 0.5), "eval_reward": 0.1},
        {**sample("q", 1, "x", 0.5), "eval_reward": 1.0},
    ]
    p, q = prompt_rows(rows, {"x": 0.0}, top_k=2, verifiable=True, evaluated=True)
    # Selected: sample 1 (selection reward 1.0), whose evaluation is 0.2, not the best 1.0.
    assert p["best_reward"] == 0.2 and p["selected_reward"] == 1.0
    assert p["topk_reward"] == pytest.approx((0.2 + 0.4) / 2)  # the selection's top 2
    assert p[ALL_MET] == 0.0  # the selected answer's evaluation is below 1
    assert q["best_reward"] == 0.1 and q[ALL_MET] == 0.0  # a tie goes to the earlier sample
    with pytest.raises(ValueError, match="sample 1 of prompt 'p' has no evaluation score"):
        prompt_rows([sample("p", 1, "x", 1.0)], {}, top_k=2, verifiable=False, evaluated=True)


def test_prompt_rows_take_a_strategys_choice_and_leave_out_partial_solutions() -> None:
    rows = [
        {**sample("p", 0, "x", 0.9), "partial": True},  # a step of a step-level search
        sample("p", 1, "x", 0.2),
        sample("p", 2, "x", 0.5),
        sample("p", 3, "x", 0.1),
    ]
    (default,) = prompt_rows(rows, {"x": 0.0}, top_k=2, verifiable=False)
    assert default["generations"] == 3  # the finished solutions
    assert default["best_reward"] == 0.5 and default["topk_reward"] == pytest.approx(0.35)
    (voted,) = prompt_rows(rows, {"x": 0.0}, top_k=2, verifiable=False, choose=lambda s: 3)
    assert voted["best_reward"] == 0.1  # what the strategy answered with, not the best
    (none,) = prompt_rows(rows, {"x": 0.0}, top_k=2, verifiable=False, choose=lambda s: None)
    assert none["best_reward"] == 0.0  # no answer given: the bottom of the scale


def test_mean_rows_average_each_prompt_over_subsets() -> None:
    def row(prompt: str, best: float | None, tokens: int) -> dict:
        return {"prompt_id": prompt, "best_reward": best, "tokens": tokens}

    tables = [[row("p", 1.0, 10), row("q", None, 4)], [row("p", 0.0, 20), row("q", 0.5, 6)]]
    assert sweep_report.mean_rows(tables) == [
        {"prompt_id": "p", "best_reward": 0.5, "tokens": 15},
        {"prompt_id": "q", "best_reward": 0.5, "tokens": 5},
    ]
    assert sweep_report.mean_rows(tables[:1]) == tables[0]


def test_quality_labels() -> None:
    assert list(quality_labels(4, verifiable=True)) == ["best_reward", "topk_reward", ALL_MET]
    assert quality_labels(3, verifiable=False)["topk_reward"] == "mean top-3 reward"
    judged = quality_labels(3, verifiable=False, evaluator="judge")
    assert judged == {
        "best_reward": "judge reward of the selected answer",
        "topk_reward": "mean judge reward of the selection's top 3",
    }


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
    assert "| 2 | **a** (0.750) | b (0.650) | +0.100 | 0.25 | no |" in report
    assert "0.500 [" in report and "![x](plots/x.png)" in report
    assert sweep_report.ALPHA == 0.05
