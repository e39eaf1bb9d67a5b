"""engine.model_folders without any conversion: parameter counts from hand-made safetensors
headers, and which error a bad folder raises (a folder problem is not an embedded-model
problem)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from engine.embedded import EmbeddedModelError
from engine.model_folders import ModelFolderError, parameter_count, resolve_model_path


def _safetensors(path: Path, header: object) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_parameter_count_sums_shapes_over_files(tmp_path: Path) -> None:
    _safetensors(
        tmp_path / "a.safetensors",
        {"__metadata__": {"format": "pt"}, "w": {"dtype": "BF16", "shape": [3, 4]}},
    )
    _safetensors(tmp_path / "b.safetensors", {"bias": {"dtype": "BF16", "shape": [5]}})
    assert parameter_count(tmp_path) == 17.0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x01", "too short"),
        (struct.pack("<Q", 1 << 40), "implausible"),
        (struct.pack("<Q", 3) + b"{no", "corrupt"),
        (struct.pack("<Q", 2) + b"[]", "corrupt"),
    ],
)
def test_bad_safetensors_header_names_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFolderError, match=problem) as info:
        parameter_count(tmp_path)
    assert str(path) in str(info.value)


def test_folder_errors_are_not_embedded_model_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelFolderError, match="is not a folder") as info:
        resolve_model_path(str(tmp_path / "file"))
    assert not isinstance(info.value, EmbeddedModelError)
    with pytest.raises(EmbeddedModelError, match="unknown embedded model"):
        resolve_model_path("embedded:nope", tmp_path)
    with pytest.raises(EmbeddedModelError, match="not prepared"):
        resolve_model_path("embedded:gemma3-270m", tmp_path)
