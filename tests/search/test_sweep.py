"""`sweep`: its config, cells, resume logic (on the toy pool), one tiny real-engine sweep,
and the command line on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config
from multisample.engine.pool import ModelPool
from multisample.engine.seeds import derive_seed
from multisample.engine.storage import PROGRESS, SUMMARY, RunDirectoryError, read_jsonl
from multisample.search.sweep.config import CELLS, Cell, SweepConfig, cell_seed
from multisample.search.sweep.evaluation import EVAL_SCORES
from multisample.search.sweep.outputs import subsets
from multisample.search.sweep.run import sweep
from multisample.search.synthesize.records import SAMPLES
from tests.search.toy import ToyPool
from tests.test_cli import assert_clean_failure, run, write_config

FAIL_AFTER: dict[str, int | None] = {"calls": None}
"""Reward calls `toy_reward` answers before it raises (None: never), to interrupt a sweep."""


async def toy_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """The toy pool's texts are 'model|seed|...': reward = (seed mod 100) / 100."""
    if FAIL_AFTER["calls"] is not None:
        if FAIL_AFTER["calls"] == 0:
            raise RuntimeError("injected reward failure")
        FAIL_AFTER["calls"] -= 1
    return [int(r.split("|")[1]) % 100 / 100 for r in responses]


def toy_config(**overrides: Any) -> SweepConfig:
    """Two toy methods x budgets 1, 2, 4 x seeds 0, 1 over 3 prompts. The model paths do
    not exist: anything that tried to start real engines would fail at once."""
    data: dict[str, Any] = {
        "models": [{"name": "a", "model": "/no/such/model-a"}, {"name": "b", "model": "/no/b"}],
        "limit": 3,
        "methods": [
            {"name": "rand", "strategy": {"kind": "best_of_n", "model": "a"}},
            {"name": "ens", "strategy": {"kind": "ensemble"}},
        ],
        "budgets": [1, 2, 4],
        "seeds": [0, 1],
        "reward": {"kind": "callable", "path": "tests.search.test_sweep:toy_reward"},
        "concurrency": 4,
    }
    data.update(overrides)
    return SweepConfig.model_validate(data)


def samples_of(path: Path) -> dict[str, list[tuple[str, int, int]]]:
    """Per cell directory: its (prompt id, candidate id, seed) triples, sorted."""
    return {
        cell.name: sorted((r["prompt_id"], r["id"], r["seed"]) for r in read_jsonl(cell / SAMPLES))
        for cell in sorted((path / CELLS).iterdir())
    }


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (
            "  - {name: m, strategy: {kind: ensemble}}\n  - {name: m, strategy: {kind: refine}}\n",
            "method names must be unique; repeated: m",
        ),
        (
            "  - {name: m, strategy: {kind: best_of_n, model: nope}}\n",
            "methods[0] (m): no model named 'nope'",
        ),
        (
            "  - {name: m, strategy: {kind: ensemble}, reuse_prefix: true}\n",
            "reuse_prefix needs a best_of_n or majority or weighted_best_of_n strategy "
            "(got ensemble)",
        ),
    ],
)
def test_bad_methods_name_the_field(tmp_path: Path, methods: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"models:\n  - {{name: x, model: /x}}\nmethods:\n{methods}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sweep\.yaml:3: methods") as error:
        load_config(path, SweepConfig)
    assert message in str(error.value)


def test_budgets_and_seeds_must_be_distinct_and_positive() -> None:
    with pytest.raises(ValueError, match=r"budgets must be distinct; repeated: \[2\]"):
        toy_config(budgets=[1, 2, 2])
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        toy_config(budgets=[0, 1])
    with pytest.raises(ValueError, match=r"seeds must be distinct"):
        toy_config(seeds=[3, 3])


def test_every_cell_is_a_fresh_search_with_its_own_config() -> None:
    config = toy_config()
    assert len(config.cells()) == 12 and config.searches() == config.cells()
    cell = Cell("ens", 4, 1)
    assert cell.name == "ens-b4-s1"
    settings = config.cell_config(cell)
    assert settings.budget.generations == 4 and settings.strategy.kind == "ensemble"
    assert settings.seed == cell_seed(1, 4) == derive_seed("sweep", 1, 4)
    # A fresh seed per budget (no budget replays a smaller one's samples); shared by
    # the methods at one budget and seed (common random numbers for the paired test).
    assert len({cell_seed(s, b) for s in (0, 1) for b in (1, 2, 4)}) == 6
    assert config.cell_config(Cell("rand", 4, 1)).seed == settings.seed


# --- the sweep on the toy pool --------------------------------------------------------


async def test_toy_sweep_writes_every_output(tmp_path: Path) -> None:
    path = tmp_path / "s"
    pool = ToyPool()
    summary = await sweep(toy_config(), path, pool=pool)  # type: ignore[arg-type]
    assert summary["status"] == "complete" and summary["cells"] == 12
    assert (path / SUMMARY).exists() and (path / "report.md").exists()
    # Each cell is a complete synthesize run directory.
    for cell in toy_config().cells():
        folder = path / CELLS / cell.name
        assert (folder / SUMMARY).exists() and len(list(read_jsonl(folder / PROGRESS))) == 3
        assert (folder / "README.md").read_text(encoding="utf-8").startswith("---\n")  # its card
    assert sum(size for _, size in pool.calls) == 3 * 2 * (1 + 2 + 4) * 2

    table = pd.read_parquet(path / "table.parquet")
    assert len(table) == 12 and list(table.columns[:3]) == ["method", "budget", "seed"]
    from_csv = pd.read_csv(path / "table.csv")
    pd.testing.assert_frame_equal(from_csv, table, check_dtype=False, check_categorical=False)
    # The toy: 15 tokens a generation, 1e6 parameters.
    assert (table["tokens"] == 15 * table["budget"]).all()
    assert list(table["flops"]) == pytest.approx(list(2e6 * 15 * table["budget"]))
    ens = table[table["method"] == "ens"]
    assert (ens["tokens_a"] + ens["tokens_b"] == ens["tokens"]).all()
    assert "all_met" not in table  # a callable reward is not the verifiable one
    units = pd.read_parquet(path / "units.parquet")
    assert len(units) == 12 * 3
    # Best reward is the largest (seed mod 100) / 100 among a prompt's samples.
    row = units[(units["method"] == "rand") & (units["budget"] == 4)].iloc[0]
    cell = path / CELLS / f"rand-b4-s{row['seed']}"
    seeds = [r["seed"] for r in read_jsonl(cell / SAMPLES) if r["prompt_id"] == row["prompt_id"]]
    assert row["best_reward"] == max(s % 100 / 100 for s in seeds)
    plots = {p.name for p in (path / "plots").iterdir()}
    assert "best_reward-vs-tokens.png" in plots and "overview.png" in plots
    report = (path / "report.md").read_text(encoding="utf-8")
    assert "## Best method at each budget" in report and "| rand | 4 |" in report


async def test_reuse_prefix_runs_only_the_largest_budget(tmp_path: Path) -> None:
    methods = [{"name": "rand", "strategy": {"kind": "best_of_n"}, "reuse_prefix": True}]
    config = toy_config(methods=methods)
    assert [c.name for c in config.searches()] == ["rand-b4-s0", "rand-b4-s1"]
    pool = ToyPool()
    await sweep(config, tmp_path / "s", pool=pool)  # type: ignore[arg-type]
    assert sum(size for _, size in pool.calls) == 3 * 4 * 2  # budgets 1 and 2 cost nothing
    units = pd.read_parquet(tmp_path / "s" / "units.parquet")
    assert len(units) == 3 * 3 * 2
    full = {r["prompt_id"]: r for r in read_jsonl(tmp_path / "s" / CELLS / "rand-b4-s0" / SAMPLES)}
    assert full  # the prefix rows come from the largest search's first samples
    for budget in (1, 2):
        rows = units[(units["budget"] == budget) & (units["seed"] == 0)]
        assert (rows["generations"] == budget).all() and (rows["tokens"] == 15 * budget).all()
    samples = list(read_jsonl(tmp_path / "s" / CELLS / "rand-b4-s0" / SAMPLES))
    first = [s for s in samples if s["prompt_id"] == "if-001" and s["id"] < 2]
    row = units[(units["budget"] == 2) & (units["seed"] == 0) & (units["prompt_id"] == "if-001")]
    assert row["best_reward"].item() == max(s["reward"] for s in first)


async def test_subsamples_average_random_sets_of_the_largest_search(tmp_path: Path) -> None:
    methods = [
        {"name": "rand", "strategy": {"kind": "best_of_n"}, "reuse_prefix": True, "subsamples": 5}
    ]
    config = toy_config(methods=methods, seeds=[0])
    await sweep(config, tmp_path / "s", pool=ToyPool())  # type: ignore[arg-type]
    units = pd.read_parquet(tmp_path / "s" / "units.parquet")
    samples = list(read_jsonl(tmp_path / "s" / CELLS / "rand-b4-s0" / SAMPLES))
    sets = subsets(config, Cell("rand", 2, 0), Cell("rand", 4, 0))
    assert len(sets) == 5 and all(len(s) == 2 for s in sets)
    assert sets == subsets(config, Cell("rand", 2, 0), Cell("rand", 4, 0))  # seeded
    for prompt_id in {s["prompt_id"] for s in samples}:
        rewards = {s["id"]: s["reward"] for s in samples if s["prompt_id"] == prompt_id}
        expected = sum(max(rewards[i] for i in kept) for kept in sets) / len(sets)
        row = units[(units["budget"] == 2) & (units["prompt_id"] == prompt_id)]
        assert row["best_reward"].item() == pytest.approx(expected)
        assert row["generations"].item() == 2


async def test_methods_that_search_alike_share_one_search(tmp_path: Path) -> None:
    methods = [
        {"name": name, "strategy": {"kind": kind, "model": "a"}, "reuse_prefix": True}
        for name, kind in [
            ("rand", "best_of_n"),
            ("vote", "majority"),
            ("wvote", "weighted_best_of_n"),
        ]
    ]
    methods.append(
        {"name": "other", "strategy": {"kind": "best_of_n", "model": "b"}, "reuse_prefix": True}
    )
    config = toy_config(methods=methods, seeds=[0])
    assert [c.name for c in config.searches()] == ["rand-b4-s0", "other-b4-s0"]
    pool = ToyPool()
    await sweep(config, tmp_path / "s", pool=pool)  # type: ignore[arg-type]
    assert sum(size for _, size in pool.calls) == 3 * 4 * 2  # two searches of 4, 3 prompts
    units = pd.read_parquet(tmp_path / "s" / "units.parquet")
    assert set(units["method"]) == {"rand", "vote", "wvote", "other"}
    assert len(units) == 4 * 3 * 3  # every method at every budget, for each prompt


async def test_an_interrupted_sweep_resumes_without_redoing_or_duplicating(
    tmp_path: Path,
) -> None:
    config = toy_config()
    clean = tmp_path / "clean"
    clean_pool = ToyPool()
    await sweep(config, clean, pool=clean_pool)  # type: ignore[arg-type]

    broken = tmp_path / "broken"
    broken_pool = ToyPool()
    FAIL_AFTER["calls"] = 20  # of 36 searches' 54 reward calls
    try:
        with pytest.raises(RuntimeError, match="injected reward failure"):
            await sweep(config, broken, pool=broken_pool)  # type: ignore[arg-type]
    finally:
        FAIL_AFTER["calls"] = None
    assert not (broken / SUMMARY).exists(), "an interrupted sweep must not look complete"
    cells = sorted((broken / CELLS).iterdir())
    complete = [c for c in cells if (c / SUMMARY).exists()]
    partial = [c for c in cells if not (c / SUMMARY).exists() and (c / PROGRESS).exists()]
    assert complete and partial, "the failure should land mid-sweep"
    before = {c.name: (c / SAMPLES).read_bytes() for c in complete}
    done_before = {c.name: len(list(read_jsonl(c / PROGRESS))) for c in cells}

    with pytest.raises(RunDirectoryError, match="already exists"):
        await sweep(config, broken, pool=ToyPool())  # type: ignore[arg-type]
    pool = ToyPool()
    await sweep(config, broken, resume=True, pool=pool)  # type: ignore[arg-type]

    # Only the prompts not yet committed were searched again, each once.
    redone = sum(
        (3 - done) * int(name.split("-b")[1].split("-")[0]) for name, done in done_before.items()
    )
    # ...and their generations made before the failure came from the journal: no
    # generation was made twice (the failure was a reward's, after its generations).
    made = [sum(size for _, size in p.calls) for p in (clean_pool, broken_pool, pool)]
    assert made[2] == made[0] - made[1] < redone
    for name, data in before.items():  # finished cells untouched
        assert (broken / CELLS / name / SAMPLES).read_bytes() == data
    # Same samples as the uninterrupted sweep, none twice, every prompt marked done once.
    assert samples_of(broken) == samples_of(clean)
    for cell in (broken / CELLS).iterdir():
        done = [r["prompt_id"] for r in read_jsonl(cell / PROGRESS)]
        assert sorted(done) == sorted(set(done)) and len(done) == 3
    pd.testing.assert_frame_equal(
        pd.read_parquet(broken / "table.parquet"), pd.read_parquet(clean / "table.parquet")
    )


async def test_a_finished_sweep_resumed_only_rebuilds_its_outputs(tmp_path: Path) -> None:
    config = toy_config()
    path = tmp_path / "s"
    first = await sweep(config, path, pool=ToyPool())  # type: ignore[arg-type]
    (path / "report.md").unlink()
    (path / "table.csv").unlink()
    # No pool given: starting the (nonexistent) models would fail, so none may start.
    again = await sweep(config, path, resume=True)
    assert (path / "report.md").exists() and (path / "table.csv").exists()
    assert again["best_per_budget"] == first["best_per_budget"]
    assert again["this_session"] is None


async def test_resume_with_another_config_fails_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "s"
    await sweep(toy_config(), path, pool=ToyPool())  # type: ignore[arg-type]
    with pytest.raises(RunDirectoryError, match="different config"):
        await sweep(toy_config(seeds=[0, 1, 2]), path, resume=True)


# --- the real engines -----------------------------------------------------------------


@pytest.mark.engine
async def test_tiny_sweep_on_the_real_engines(pool: ModelPool, tmp_path: Path) -> None:
    from tests.conftest import embedded_pool_config

    data = embedded_pool_config().model_dump(mode="json")
    data.update(
        limit=2,
        methods=[
            {"name": "rand", "strategy": {"kind": "best_of_n", "model": "smollm2"}},
            {"name": "ensemble", "strategy": {"kind": "ensemble"}},
        ],
        budgets=[1, 2],
        seeds=[0],
        sampling={"temperature": 0.8, "max_tokens": 16},
        top_k=2,
    )
    path = tmp_path / "sweep"
    summary = await sweep(SweepConfig.model_validate(data), path, pool=pool)
    table = pd.read_csv(path / "table.csv")
    assert len(table) == 4 and set(table["prompts"]) == {2}
    assert (table["generations"] == table["budget"]).all()
    for model, params in (("smollm2", 134_515_008), ("gemma3", 268_098_176)):
        want = 2 * params * table[f"tokens_{model}"]
        assert list(table[f"flops_{model}"]) == pytest.approx(list(want))
    assert (table.loc[table["method"] == "rand", "tokens_gemma3"] == 0).all()
    assert table["all_met"].between(0, 1).all() and (table["best_reward"] >= table["all_met"]).all()
    assert summary["this_session"]["completion_tokens"] > 0
    assert len(list((path / "plots").glob("*.png"))) == 3 * 3 + 1
    report = (path / "report.md").read_text(encoding="utf-8")
    assert "### share of prompts with all constraints met" in report
    assert json.loads((path / SUMMARY).read_text())["status"] == "complete"


# --- the command line -----------------------------------------------------------------

GOOD_SWEEP = """\
models:
  - name: smollm2
    model: embedded:smollm2-135m-instruct
methods:
  - name: rand
    strategy: {kind: best_of_n}
"""


def test_cli_sweep_with_a_bad_budget_fails_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD_SWEEP + "budgets: [1, -4]\n")
    done = run("sweep", config, "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, f"{config}:7: budgets[1]", "greater than or equal to 1")
    assert not (tmp_path / "runs").exists()


def test_cli_sweep_with_a_bad_prompts_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prompt": 3}\n', encoding="utf-8")
    config = write_config(tmp_path, GOOD_SWEEP + "prompts: prompts.jsonl\n")
    done = run("sweep", config, "--output-dir", tmp_path / "runs", cwd=tmp_path)
    assert_clean_failure(done, "prompts.jsonl:1: prompt")
    assert not (tmp_path / "runs").exists()


def test_cli_sweep_resume_needs_a_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD_SWEEP)
    assert_clean_failure(run("sweep", config, "--resume"), "--resume needs --name")


def test_a_toa_method_with_a_width_below_k_is_refused() -> None:
    from pydantic import ValidationError

    methods = [{"name": "toa", "strategy": {"kind": "toa", "width": 1}}]
    with pytest.raises(ValidationError, match=r"methods\[0\] \(toa\): toa width 1 is below"):
        toy_config(methods=methods)


async def toy_eval(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """An evaluation reward that disagrees with `toy_reward`: (seed mod 7) / 7."""
    return [int(r.split("|")[1]) % 7 / 7 for r in responses]


EVAL = {"kind": "callable", "path": "tests.search.test_sweep:toy_eval"}


async def test_an_eval_reward_scores_what_the_selection_picked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multisample.engine.rewards.base import started_reward
    from multisample.search.sweep import evaluation, run

    started: list[str] = []

    def counting(spec: Any, pool: Any) -> Any:
        started.append(spec.path)
        return started_reward(spec, pool)

    monkeypatch.setattr(run, "started_reward", counting)  # the selection reward
    monkeypatch.setattr(evaluation, "started_reward", counting)  # the evaluation reward
    path = tmp_path / "s"
    config = toy_config(eval_reward=EVAL)
    summary = await sweep(config, path, pool=ToyPool())  # type: ignore[arg-type]
    # Each reward started once for the whole sweep.
    assert started.count(EVAL["path"]) == 1 and len(started) == 2
    assert summary["evaluation_reward"] == "callable" and summary["evaluated_separately"]
    units = pd.read_parquet(path / "units.parquet")
    for cell in config.cells():
        folder = path / CELLS / cell.name
        lines = list(read_jsonl(folder / EVAL_SCORES))
        assert sorted(line["prompt_id"] for line in lines) == sorted(units["prompt_id"].unique())
        samples = list(read_jsonl(folder / SAMPLES))
        for line in lines:
            mine = [s for s in samples if s["prompt_id"] == line["prompt_id"]]
            # Every scored sample has its evaluation beside its selection reward.
            assert set(line["scores"]) == {str(s["id"]) for s in mine}
            picked = max(mine, key=lambda s: (s["reward"], -s["id"]))
            row = units[
                (units["method"] == cell.method)
                & (units["budget"] == cell.budget)
                & (units["seed"] == cell.seed)
                & (units["prompt_id"] == line["prompt_id"])
            ].iloc[0]
            seed = int(picked["text"].split("|")[1])
            assert row["best_reward"] == pytest.approx(seed % 7 / 7)
            assert row["selected_reward"] == pytest.approx(seed % 100 / 100)
    report = (path / "report.md").read_text(encoding="utf-8")
    assert "evaluation reward: callable (separate" in report
    assert "callable reward of the selected answer" in report


async def test_an_interrupted_evaluation_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    config = toy_config(eval_reward=EVAL)
    await sweep(config, path, pool=ToyPool())  # type: ignore[arg-type]
    units = pd.read_parquet(path / "units.parquet")
    cell = path / CELLS / config.cells()[-1].name
    lines = (cell / EVAL_SCORES).read_text(encoding="utf-8").splitlines(keepends=True)
    (cell / EVAL_SCORES).write_text(lines[0] + lines[1][:7], encoding="utf-8")  # torn
    pool = ToyPool()
    await sweep(config, path, resume=True, pool=pool)  # type: ignore[arg-type]
    assert pool.calls == []  # no search again, only the evaluation
    assert len(list(read_jsonl(cell / EVAL_SCORES))) == 3
    pd.testing.assert_frame_equal(pd.read_parquet(path / "units.parquet"), units)


def test_without_an_eval_reward_the_selection_reward_evaluates() -> None:
    config = toy_config()
    assert config.evaluator() == config.reward and config.evaluator_name() is None
    assert "eval_reward" not in config.cell_config(config.cells()[0]).model_dump()
