"""LoRA adapter folders: the checks that run before an engine loads one.

An adapter is a folder PEFT's `save_pretrained` wrote: adapter_config.json and the
weights (adapter_model.safetensors, or adapter_model.bin). vLLM would reject a bad one only
once its engine runs, with a long traceback; these checks say what is wrong in one line.

"Built on this base" is decided from shapes, not names: `base_model_name_or_path` is
whatever path or hub id the adapter was trained from, which rarely matches the folder
it is served from. The rule: the adapter's `base_model_name_or_path`, when it names a
folder with a config.json here, must have the base's model_type and hidden_size; and
every adapted matrix in the safetensors file must fit the base: its layer index below
the base's num_hidden_layers, its input and output widths among the base's own widths
(hidden, intermediate, attention query and key/value widths, vocabulary). An adapter of a
different size of the same family (SmolLM2-360M on 135M) fails on the widths.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multisample.engine.config import ConfigError
from multisample.engine.model_folders import ModelFolderError, safetensors_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


class AdapterError(ConfigError):
    """An adapter folder that cannot be served on its base; the message says why."""


def adapter_config(folder: Path) -> dict[str, Any]:
    """adapter_config.json of a PEFT LoRA folder, or AdapterError."""
    if not folder.is_dir():
        raise AdapterError(f"no adapter folder {str(folder)!r}")
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{str(folder)!r} has no {ADAPTER_CONFIG} (not a PEFT LoRA)") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{str(path)!r} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{str(path)!r} does not hold a JSON object")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(f"{str(path)!r}: peft_type {config['peft_type']!r} is not LORA")
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise AdapterError(f"{str(folder)!r} has no {' or '.join(ADAPTER_WEIGHTS)}")
    return config


def adapter_rank(config: dict[str, Any]) -> int:
    """The largest rank in an adapter config (`r`, or a larger one in `rank_pattern`)."""
    ranks = [int(config.get("r", 8))]
    ranks += [int(r) for r in (config.get("rank_pattern") or {}).values()]
    return max(ranks)


def check_adapter(folder: Path, base_folder: Path, max_rank: int) -> None:
    """Raise AdapterError unless `folder` is a LoRA the base in `base_folder` can serve
    with ranks up to `max_rank` (the rule is in this module's docstring)."""
    config = adapter_config(folder)
    rank = adapter_rank(config)
    if rank > max_rank:
        raise AdapterError(f"rank {rank} is above the engine's max_lora_rank {max_rank}")
    base = _model_config(base_folder / "config.json")
    if base is None:
        return  # nothing to compare with (vLLM will say if it does not fit)
    _check_named_base(config, base)
    weights = folder / ADAPTER_WEIGHTS[0]
    if weights.is_file():
        _check_shapes(weights, base)


def _model_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    # Multimodal and some newer configs keep the language model's fields in text_config.
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _check_named_base(config: dict[str, Any], base: dict[str, Any]) -> None:
    named = config.get("base_model_name_or_path")
    if not named:
        return
    trained_on = _model_config(Path(str(named)).expanduser() / "config.json")
    if trained_on is None:
        return  # a hub id or a folder of another machine: the shapes decide
    for key in ("model_type", "hidden_size"):
        if key in trained_on and key in base and trained_on[key] != base[key]:
            raise AdapterError(
                f"built on {named!r} ({key} {trained_on[key]!r}), not on this base "
                f"({key} {base[key]!r})"
            )


def _widths(base: dict[str, Any]) -> set[int]:
    """Every input or output width a linear layer of the base may have."""
    hidden = int(base.get("hidden_size", 0))
    heads = int(base.get("num_attention_heads", 0) or 0)
    head_dim = int(base.get("head_dim") or (hidden // heads if heads else 0))
    kv_heads = int(base.get("num_key_value_heads") or heads)
    widths = {hidden, heads * head_dim, kv_heads * head_dim, int(base.get("vocab_size", 0))}
    for key in ("intermediate_size", "moe_intermediate_size", "ffn_dim", "n_inner"):
        if base.get(key):
            widths.add(int(base[key]))
    return widths - {0}


def _check_shapes(weights: Path, base: dict[str, Any]) -> None:
    widths = _widths(base)
    layers = base.get("num_hidden_layers")
    try:
        header = safetensors_header(weights)
    except (OSError, ModelFolderError) as exc:
        raise AdapterError(f"cannot read {str(weights)!r}: {exc}") from None
    for key, info in header.items():
        if key == "__metadata__" or ".lora_" not in key or len(info.get("shape", ())) != 2:
            continue
        rows, cols = (int(d) for d in info["shape"])
        # lora_A: (rank, input width); lora_B: (output width, rank). Embedding LoRAs
        # (lora_embedding_A/B) are laid out the other way round.
        width = cols if ".lora_A." in key or "lora_embedding_B" in key else rows
        if widths and width not in widths:
            raise AdapterError(
                f"tensor {key!r} is {rows}x{cols}: width {width} is none of the base's "
                f"{sorted(widths)} (built on another base?)"
            )
        layer = _LAYER.search(key)
        if layer and isinstance(layers, int) and int(layer.group(1)) >= layers:
            raise AdapterError(
                f"tensor {key!r} adapts layer {layer.group(1)}, but the base has "
                f"{layers} layers (built on another base?)"
            )


@dataclass(frozen=True)
class ServedAdapter:
    """One version of an adapter as its engine serves it. vLLM caches adapters by
    `lora_id`, so every version gets an id of its own."""

    name: str
    path: str
    version: int
    lora_id: int
