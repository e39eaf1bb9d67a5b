"""What a reward model's config.json says about its head, read before any engine starts.

The classifier reward runs vLLM's `classify` pooling task, which serves sequence
classifiers (`*ForSequenceClassification`): one vector of outputs per (prompt, response),
of which the reward is one. A head of one output is a reward model's score; a head of
several is a classifier whose outputs are classes, and a multi-objective or token-level
reward model (ArmoRM's gating head, InternLM2 or Qwen2 `*ForRewardModel`) is not a sequence
classifier at all. Those are refused here with what to do instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEQUENCE_CLASSIFIER = "ForSequenceClassification"
"""The suffix of the architectures vLLM's classify task serves."""

ALTERNATIVE = "score it with a callable reward instead (docs/METHODS.md, Reward models)"


@dataclass(frozen=True)
class Head:
    """A model's head as its config.json describes it."""

    architectures: tuple[str, ...]
    outputs: int
    """How many outputs the classification head has."""
    outputs_from: str
    """Which config.json field said so."""


def read_head(config: dict[str, Any]) -> Head:
    """The head a config.json describes. Transformers counts the outputs by `id2label`
    when it is there, else by `num_labels`, else 2 (its default)."""
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    if isinstance(config.get("id2label"), dict):
        return Head(architectures, len(config["id2label"]), "id2label")
    if isinstance(config.get("num_labels"), int):
        return Head(architectures, config["num_labels"], "num_labels")
    return Head(architectures, 2, "neither id2label nor num_labels: transformers' default")


def head_problem(head: Head, label: int, label_chosen: bool) -> str | None:
    """Why the classifier reward cannot take output `label` of `head` as the reward (None
    when it can). A head of several outputs is taken only when `label` was chosen."""
    if head.architectures and not any(a.endswith(SEQUENCE_CLASSIFIER) for a in head.architectures):
        return (
            f"architectures {list(head.architectures)} is not a sequence classifier "
            f"(*{SEQUENCE_CLASSIFIER}), which is all vLLM's classify task serves; {ALTERNATIVE}"
        )
    if head.outputs != 1 and not label_chosen:
        return (
            f"the head has {head.outputs} outputs ({head.outputs_from}), not a single score; "
            f"set `label` to the output that is the reward, or {ALTERNATIVE}"
        )
    if label >= head.outputs:
        return f"label {label} is beyond the head's {head.outputs} output(s) ({head.outputs_from})"
    return None


def config_json_of(model: str) -> Path | None:
    """The config.json of `model` on this machine without downloading anything: a
    folder's own, or a hub id's in the Hugging Face cache; None when neither is here (the
    engine then finds out when it loads the model)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / "config.json"
        return path if path.is_file() else None
    if model.count("/") != 1 or folder.exists():
        return None  # neither a folder nor a hub id ("embedded:...", a missing path)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repository id
        return None
    return Path(cached) if isinstance(cached, str) else None


def check_classifier(model: str, label: int, label_chosen: bool) -> str | None:
    """The problem with serving output `label` of `model` as a reward, when its
    config.json is on this machine and says there is one; None otherwise."""
    path = config_json_of(model)
    if path is None:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {exc}"
    if not isinstance(config, dict):
        return f"{path} is not a JSON object"
    problem = head_problem(read_head(config), label, label_chosen)
    return None if problem is None else f"{path}: {problem}"
