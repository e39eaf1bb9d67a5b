"""Reasoning runs refuse bad input in one line naming the field, exit 2, before any
engine starts (the model paths do not exist: an engine that started would fail)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import assert_clean_failure, run, write_config

MODELS = "models:\n  - name: m\n    model: /no/such/model\n"
ARITHMETIC = 'prompts: {generate: arithmetic, count: 3, operations: "+-"}\n'


def test_a_reference_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    prompts = tmp_path / "math.jsonl"
    rows = [
        {"id": "ok", "prompt": "1 + 1?", "reference": "2"},
        {"id": "bad", "prompt": "?", "reference": " "},
    ]
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    config = write_config(tmp_path, f"{MODELS}prompts: {prompts}\nreward: {{kind: correct}}\n")
    done = run("synthesize", config, "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "math.jsonl:2", "reference", "'bad'", "reward ('correct')")
    assert not (tmp_path / "runs").exists()


def test_a_separator_that_never_occurs_is_refused(tmp_path: Path) -> None:
    strategy = 'strategy: {kind: beam_search, separator: "\\n\\n"}\n'
    text = f"{MODELS}{ARITHMETIC}{strategy}reward: {{kind: correct}}\n"
    done = run("synthesize", write_config(tmp_path, text), "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "strategy.separator", "never occurs in the worked example")
    assert not (tmp_path / "runs").exists()


def test_a_separator_other_than_the_process_rewards_is_refused(tmp_path: Path) -> None:
    strategy = 'strategy: {kind: dvts, separator: "="}\n'
    text = f"{MODELS}{ARITHMETIC}{strategy}reward: {{kind: arithmetic_steps}}\n"
    done = run("synthesize", write_config(tmp_path, text), "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "strategy", "is not the reward's")


def test_the_step_checker_refuses_prompts_that_are_no_generated_problem(tmp_path: Path) -> None:
    text = f"{MODELS}prompts: embedded:tasks\nreward: {{kind: arithmetic_steps}}\n"
    done = run("synthesize", write_config(tmp_path, text), "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "is no generated arithmetic problem", "reward ('arithmetic_steps')")


def test_a_prm_whose_head_is_not_a_step_scorer_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "classifier"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForSequenceClassification"]}), encoding="utf-8"
    )
    reward = f"reward: {{kind: prm, model: {folder}, convention: qwen2.5-math-prm}}\n"
    text = f"{MODELS}{ARITHMETIC}{reward}"
    done = run("synthesize", write_config(tmp_path, text), "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "reward", "is not a step scorer", "ForProcessRewardModel")
