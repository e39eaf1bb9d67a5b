"""The classifier reward refuses a model whose head is not a single score, from the model
folder's config.json, before any engine starts (fake model folders: no weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from multisample.engine.rewards.classifier import ClassifierRewardSpec
from multisample.engine.rewards.classifier_head import (
    Head,
    check_classifier,
    head_problem,
    read_head,
)

MULTISAMPLE = str(Path(sys.executable).with_name("multisample"))

# What transformers writes for a Llama reward model with one output (Skywork-Reward-V2's
# layout), and the shapes this check must tell apart.
ONE_SCORE = {
    "architectures": ["LlamaForSequenceClassification"],
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "model_type": "llama",
}
THREE_CLASSES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "id2label": {"0": "a", "1": "b", "2": "c"},
}
ARMORM = {  # ArmoRM's shape: one label, but a custom gating head over 19 objectives
    "architectures": ["LlamaForRewardModelWithGating"],
    "id2label": {"0": "LABEL_0"},
    "num_objectives": 19,
    "auto_map": {"AutoModelForSequenceClassification": "modeling_custom.Gating"},
}
TOKEN_REWARD = {"architectures": ["InternLM2ForRewardModel"]}


def folder(tmp_path: Path, config: dict[str, Any], name: str = "rm") -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def spec(model: Path | str, **fields: Any) -> ClassifierRewardSpec:
    return ClassifierRewardSpec(kind="classifier", model=str(model), **fields)


def test_the_outputs_are_counted_as_transformers_counts_them() -> None:
    assert read_head(ONE_SCORE) == Head(("LlamaForSequenceClassification",), 1, "id2label")
    assert read_head({"num_labels": 1}).outputs == 1
    assert read_head({"num_labels": 4, "id2label": {"0": "x"}}).outputs == 1  # id2label wins
    default = read_head({"architectures": ["GPT2ForSequenceClassification"]})
    assert (default.outputs, default.outputs_from) == (
        2,
        "neither id2label nor num_labels: transformers' default",
    )


def test_a_single_score_sequence_classifier_is_served(tmp_path: Path) -> None:
    assert spec(folder(tmp_path, ONE_SCORE)).label == 0
    assert check_classifier(str(tmp_path / "rm"), 0, False) is None
    assert head_problem(read_head(ONE_SCORE), 0, label_chosen=True) is None


def test_a_head_of_several_outputs_is_refused_unless_a_label_is_chosen(tmp_path: Path) -> None:
    model = folder(tmp_path, THREE_CLASSES)
    with pytest.raises(ValidationError) as caught:
        spec(model)
    (error,) = caught.value.errors()
    assert error["type"] == "classifier_head"
    assert error["msg"] == (
        f"model {model}: {model / 'config.json'}: the head has 3 outputs (id2label), not a "
        "single score; set `label` to the output that is the reward, or score it with a "
        "callable reward instead (docs/METHODS.md, Reward models)"
    )
    assert spec(model, label=2).label == 2  # chosen: the raw logit of class 2
    with pytest.raises(ValidationError, match="label 3 is beyond the head's 3 output"):
        spec(model, label=3)


def test_a_config_without_label_fields_has_transformers_default_two_outputs(
    tmp_path: Path,
) -> None:
    model = folder(tmp_path, {"architectures": ["MistralForSequenceClassification"]})
    with pytest.raises(ValidationError, match="the head has 2 outputs \\(neither id2label"):
        spec(model)


@pytest.mark.parametrize("config", [ARMORM, TOKEN_REWARD], ids=["armorm", "token-reward"])
def test_reward_models_that_are_not_sequence_classifiers_point_to_callable(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    model = folder(tmp_path, config)
    with pytest.raises(ValidationError, match="is not a sequence classifier") as caught:
        spec(model, label=0)
    assert "callable reward" in str(caught.value)


def test_what_is_not_on_this_machine_is_left_to_the_engine(tmp_path: Path) -> None:
    # A missing folder, a folder without config.json, embedded:, and a hub id that is not
    # in the cache: nothing to read here, nothing refused (no download is attempted).
    (tmp_path / "empty").mkdir()
    for model in (
        tmp_path / "missing",
        tmp_path / "empty",
        "embedded:smollm2-135m-instruct",
        "nobody-owns/this-model-name-here",
    ):
        assert spec(model).model == str(model)


def test_a_hub_id_in_the_cache_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hugging Face cache layout: models--ORG--NAME/snapshots/REV/, refs/main = REV.
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--three-classes"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(THREE_CLASSES), encoding="utf-8")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123", encoding="utf-8")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # "org/three-classes" is no folder here
    with pytest.raises(ValidationError, match="the head has 3 outputs"):
        spec("org/three-classes")


def test_an_unreadable_config_is_named(tmp_path: Path) -> None:
    model = tmp_path / "rm"
    model.mkdir()
    (model / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValidationError, match="cannot read"):
        spec(model)


def test_config_check_refuses_it_in_one_line_naming_the_field(tmp_path: Path) -> None:
    model = folder(tmp_path, THREE_CLASSES)
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n"
        "  - name: smollm2\n"
        "    model: embedded:smollm2-135m-instruct\n"
        "reward:\n"
        "  kind: weighted\n"
        "  components:\n"
        "    - weight: 1.0\n"
        "      reward:\n"
        "        kind: classifier\n"
        f"        model: {model}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [MULTISAMPLE, "config", "check", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {config}:8: reward.components[0].reward: model {model}: ")
    assert "the head has 3 outputs (id2label), not a single score" in lines[0]
