"""engine.model_folders without any conversion: parameter counts from hand-made safetensors
headers, and which error a bad folder raises (a folder problem is not an embedded-model
problem)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from multisample.engine.embedded import EmbeddedModelError
from multisample.engine.model_folders import ModelFolderError, parameter_count, resolve_model_path


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


# --------------------------------------------------------------------------- hub ids


def _fake_hub_cache(root: Path, repo: str, files: dict[str, str]) -> Path:
    """A Hugging Face cache holding one snapshot of `repo` on branch main, laid out as
    huggingface_hub lays it out (refs/main names the snapshot's commit)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    storage = root / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, the hub switched off: this machine cannot reach it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so 'owner/name' is no folder here
    return cache


def test_a_hub_id_resolves_to_its_cached_snapshot(hub_cache: Path) -> None:
    snapshot = _fake_hub_cache(hub_cache, "Org/Tiny-Model", {"config.json": "{}"})
    assert resolve_model_path("Org/Tiny-Model") == snapshot


def test_a_hub_id_missing_offline_is_one_line_naming_the_model(hub_cache: Path) -> None:
    with pytest.raises(ModelFolderError) as info:
        resolve_model_path("Org/Absent")
    message = str(info.value)
    assert "\n" not in message
    assert "'Org/Absent' is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message
    assert "hf download Org/Absent" in message


def test_a_cached_hub_snapshot_without_config_is_refused(hub_cache: Path) -> None:
    _fake_hub_cache(hub_cache, "Org/Weights-Only", {"model.safetensors": ""})
    with pytest.raises(ModelFolderError, match=r"'Org/Weights-Only' has no config\.json"):
        resolve_model_path("Org/Weights-Only")


def test_the_hub_is_asked_only_when_it_is_not_switched_off(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    asked: list[dict[str, object]] = []
    snapshot = _fake_hub_cache(hub_cache, "Org/M", {"config.json": "{}"})

    def fake_download(repo: str, **options: object) -> str:
        asked.append({"repo": repo, **options})
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_model_path("Org/M", revision="v2") == snapshot
    [call] = asked
    assert call["repo"] == "Org/M" and call["revision"] == "v2"
    assert call["local_files_only"] is False
    assert "*.safetensors" in call["allow_patterns"]  # type: ignore[operator]
    assert "*.bin" not in call["allow_patterns"]  # type: ignore[operator]


def test_an_existing_folder_shaped_like_a_hub_id_is_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    assert resolve_model_path("models/mine") == Path("models/mine")


def test_an_unreachable_hub_without_a_cache_says_so(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo: str, **options: object) -> str:
        raise LocalEntryNotFoundError("Got: ConnectError\nplease check your connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelFolderError, match="not in the Hugging Face cache and the hub cannot"):
        resolve_model_path("Org/M")
