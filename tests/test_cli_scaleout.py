"""The command line on bad model specs of the scale-out fields (replicas, engine_args, hub
ids): one line naming the field, exit 2, no run directory, no engine started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.test_cli import MULTISAMPLE, assert_clean_failure, write_config


def synthesize(config: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MULTISAMPLE, "synthesize", str(config), "--output-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
    )


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_an_unknown_engine_argument_names_itself(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"models:\n  - name: m\n    model: {model_folder(tmp_path)}\n"
        "    engine_args: {max_num_seq: 8}\n",
    )
    done = synthesize(config, tmp_path)
    assert_clean_failure(
        done,
        "models[0].engine_args.max_num_seq: unknown vLLM engine argument; "
        "did you mean max_num_seqs?",
    )
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_replicas_below_one_and_a_field_given_twice(tmp_path: Path) -> None:
    config = write_config(tmp_path, "models:\n  - name: m\n    model: /x\n    replicas: 0\n")
    assert_clean_failure(synthesize(config, tmp_path), f"{config}:4: models[0].replicas")
    config = write_config(
        tmp_path, "models:\n  - name: m\n    model: /x\n    engine_args: {dtype: half}\n"
    )
    assert_clean_failure(
        synthesize(config, tmp_path),
        f"{config}:4: models[0].engine_args",
        "dtype is set by this spec's own field `dtype`",
    )
    assert not (tmp_path / "runs").exists()


def test_a_hub_model_with_no_cache_offline(tmp_path: Path) -> None:
    config = write_config(tmp_path, "models:\n  - name: m\n    model: SomeOrg/Not-Cached\n")
    done = synthesize(config, tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert_clean_failure(
        done, "models[0].model: hub model 'SomeOrg/Not-Cached' is not in the Hugging Face cache"
    )
    assert not (tmp_path / "runs").exists()
