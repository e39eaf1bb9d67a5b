"""The command line on bad input: one clear line, a non-zero exit, no run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MULTISAMPLE = str(Path(sys.executable).with_name("multisample"))


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MULTISAMPLE, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_MODELS = """\
models:
  - name: smollm2
    model: embedded:smollm2-135m-instruct
"""


def assert_clean_failure(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("error:"), message
    for fragment in fragments:
        assert fragment in message, message


def test_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("synthesize", "sweep", "show", "models", "config"):
        assert command in done.stdout


def test_schema_is_json_with_field_descriptions() -> None:
    done = run("config", "schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert "strategy" in schema["properties"] and "models" in schema["properties"]
    assert "description" in schema["properties"]["budget"]


def test_config_typo_names_file_line_and_field(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD_MODELS + "budgett:\n  generations: 4\n")
    assert_clean_failure(run("config", "check", config), f"{config}:4: budgett", "Extra inputs")


def test_wrong_value_names_the_field_and_value(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD_MODELS + "budget:\n  generations: -1\n")
    assert_clean_failure(
        run("synthesize", config, "--output-dir", tmp_path / "runs"),
        f"{config}:5: budget.generations",
        "greater than or equal to 1",
        "(got -1)",
    )
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    assert_clean_failure(run("synthesize", tmp_path / "nope.yaml"), "no such config file")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', "prompts.jsonl:2: not valid JSON"),
        ('{"id": "a", "prompt": 3}\n', "prompts.jsonl:1: prompt: Input should be a valid string"),
        ('{"id": "a", "prompt": "x", "constraints": [{"kind": "nope"}]}\n', "prompts.jsonl:1:"),
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "duplicate id 'a'"),
    ],
)
def test_bad_prompts_file_names_the_line(tmp_path: Path, line: str, expected: str) -> None:
    (tmp_path / "prompts.jsonl").write_text(line, encoding="utf-8")
    config = write_config(tmp_path, GOOD_MODELS + "prompts: prompts.jsonl\n")
    done = run("synthesize", config, "--output-dir", tmp_path / "runs", cwd=tmp_path)
    assert_clean_failure(done, expected)
    assert not (tmp_path / "runs").exists()


def test_unknown_model_path_fails_before_anything_starts(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "models:\n  - name: m\n    model: /no/such/model\nprompts: embedded:tasks\n"
    )
    done = run("synthesize", config, "--output-dir", tmp_path / "runs")
    assert_clean_failure(done, "models[0].model", "/no/such/model")
    assert not (tmp_path / "runs").exists()


def test_resume_needs_a_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD_MODELS)
    assert_clean_failure(run("synthesize", config, "--resume"), "--resume needs --name")


def test_show_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    assert_clean_failure(run("show", tmp_path), "not a run directory")


# An engine that cannot start (no GPU here, and 1 s to start): whatever must be refused
# before the engines start fails with its own message, not with this engine's.
UNSTARTABLE = GOOD_MODELS + "    num_gpus: 1\nstart_timeout_s: 1\n"


def test_an_existing_run_is_refused_before_the_engines_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, UNSTARTABLE)
    existing = tmp_path / "runs" / "r1"
    existing.mkdir(parents=True)
    (existing / "config.yaml").write_text(UNSTARTABLE + "seed: 7\n", encoding="utf-8")
    before = sorted(existing.iterdir())
    done = run("synthesize", config, "--output-dir", tmp_path / "runs", "--name", "r1")
    assert_clean_failure(done, "a run already exists here; pass --resume")
    done = run("synthesize", config, "--output-dir", tmp_path / "runs", "--name", "r1", "--resume")
    assert_clean_failure(done, "different config", "(seed differ)", "compare with")
    assert sorted(existing.iterdir()) == before


def test_an_output_dir_that_cannot_be_made_is_refused_before_the_engines_start(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, UNSTARTABLE)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    done = run("synthesize", config, "--output-dir", blocker / "runs")
    assert_clean_failure(done, "cannot write the run directory", "a-file is a file")
