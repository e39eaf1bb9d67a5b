"""The run directory: append-only JSONL records, atomic files, and resume bookkeeping.

Layout (docs/ARCHITECTURE.md): config.yaml, samples.jsonl, pairs.jsonl, trees/<prompt-id>.json,
summary.json. `progress.jsonl` lists the prompts whose records are all written; it is
appended after them, so on resume the records of a prompt not listed there are dropped
and that prompt runs again. `summary.json` is written last: a run directory without it
is not complete.

What a crash can leave behind, and how resume repairs it: a torn last line (the process
died mid-write, or the disk filled up mid-write) is dropped; records of prompts without a
progress line are dropped; temporary files of an interrupted atomic write are deleted. A
failed write (disk full, a read-only or vanished directory) raises RunDirectoryError with
the file and the reason, and leaves the directory resumable.

One process at a time: a run directory is held (an flock on `.lock`) from `open` until
its summary is written, so the same run resumed twice at once is refused, not run twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config
from multisample.engine.locks import lock, locked_elsewhere, unlock

PROGRESS = "progress.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
LOCK = ".lock"

logger = logging.getLogger(__name__)


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked (exists, differs, unwritable...)."""


def dumps_line(record: dict[str, Any]) -> str:
    """One JSONL line. Non-ASCII text stays readable; a string that is not valid Unicode
    (an unpaired surrogate, e.g. from a server's JSON escape) is written as a JSON escape
    instead, which reads back as the same string, rather than failing the write."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record)
    return line + "\n"


def _write_failed(path: Path, exc: OSError) -> RunDirectoryError:
    reason = exc.strerror or str(exc)
    return RunDirectoryError(
        f"{path}: cannot write: {reason}. The prompts finished before this are kept; fix "
        "the cause (free disk space, permissions) and rerun with --resume"
    )


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a kill mid-write) is skipped.

    Read as bytes: a torn line may end inside a multi-byte character. A complete line
    that does not parse (the file was edited or damaged) is a RunDirectoryError naming
    the file and line: a record is never dropped silently."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return  # torn write: the process died mid-line
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RunDirectoryError(
                    f"{path}:{number}: damaged record ({exc}); repair or delete that line"
                ) from None
            if not isinstance(record, dict):
                raise RunDirectoryError(f"{path}:{number}: damaged record (not a JSON object)")
            yield record


def _append_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Append `data` to a file and flush it to the OS, and with `sync` to the disk (the
    one low-level append). Flushed data survives the process being killed; only a
    synced write survives the machine going down."""
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def append_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """`_append_bytes`, with a failed write a RunDirectoryError naming the file and the
    reason."""
    if not data:
        return
    try:
        _append_bytes(path, data, sync=sync)
    except OSError as exc:
        raise _write_failed(path, exc) from None


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records to a JSONL file in one write, flushed to disk."""
    append_bytes(path, "".join(dumps_line(r) for r in records).encode("utf-8"))


def cut_torn_line(path: Path) -> None:
    """Cut a torn last line (a process killed mid-write) off a JSONL file, so that the next
    append starts a line of its own. Reads the last byte; the file only when it is torn."""
    try:
        with path.open("r+b") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read()
            handle.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        return


def replace_file(path: Path, text: str) -> None:
    """`write_atomic`, with a failed write a RunDirectoryError naming the file."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise _write_failed(path, exc) from None


def config_text(config: BaseModel, exclude: set[str] | None = None) -> str:
    """What a run directory keeps of its config (config.yaml): every field, defaults
    included, so the file alone says how the run was made."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude=exclude), sort_keys=False)


def _differences(saved: Any, new: Any, where: str = "") -> list[str]:
    """Dotted paths of the fields that differ between two dumped configs."""
    if isinstance(saved, dict) and isinstance(new, dict):
        children = [(f"{where}.{k}", saved.get(k), new.get(k)) for k in {**saved, **new}]
    elif isinstance(saved, list) and isinstance(new, list) and len(saved) == len(new):
        children = [(f"{where}[{i}]", saved[i], new[i]) for i in range(len(saved))]
    else:
        return [] if saved == new else [where.lstrip(".")]
    return [path for at, a, b in children for path in _differences(a, b, at)]


def check_run_directory(
    path: Path, config: BaseModel, resume: bool, exclude: set[str] | None = None
) -> bool:
    """Whether a run exists at `path`. Refuses, with one line (and commands call it before
    any engine starts): a new run over an existing one (nothing a user produced is
    overwritten), a resume with another config than the run was started with, a run
    another process is using, and a path where no directory can be made.

    The configs are compared parsed, not as text: a field that a later version of
    multisample added (with its default) does not block resuming an older run. `exclude`
    names fields a resume may change (e.g. how many rounds to play); they need defaults.
    """
    saved_path = path / CONFIG
    if not saved_path.exists():
        _check_creatable(path)
        return False
    if not resume:
        raise RunDirectoryError(
            f"{path}: a run already exists here; pass --resume to continue it "
            "or choose another --name"
        )
    if _held_elsewhere(path):
        raise _in_use(path)
    try:
        saved = load_config(saved_path, type(config))
    except ConfigError as exc:
        raise RunDirectoryError(
            f"cannot resume: the run's saved config does not load: {exc}"
        ) from None
    new = config.model_dump(mode="json", exclude=exclude)
    differ = _differences(saved.model_dump(mode="json", exclude=exclude), new)
    if differ:
        named = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise RunDirectoryError(
            f"{path}: --resume with a different config than the run was started with "
            f"({named} differ); compare with {saved_path}"
        )
    return True


def _check_creatable(path: Path) -> None:
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        reason = f"{existing} is a file, not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    else:
        return
    raise RunDirectoryError(f"{path}: cannot write the run directory: {reason}")


_HELD: dict[Path, int] = {}  # run directories whose lock this process holds -> the lock's fd


def _acquire(path: Path) -> bool:
    """Hold `path`'s lock: one process at a time appends to a run directory (the same
    --resume started twice would run, and write, the unfinished prompts twice). It is an
    flock, so the OS releases it when the process ends, however it ends. False if this
    process held it already."""
    key = path.resolve()
    if key in _HELD:
        return False
    fd = lock(key / LOCK, wait=False)
    if fd is None:
        raise _in_use(path)
    _HELD[key] = fd
    return True


def _held_elsewhere(path: Path) -> bool:
    """Does another process hold `path`'s lock? (Asked without creating anything.)"""
    return path.resolve() not in _HELD and locked_elsewhere(path / LOCK)


def _in_use(path: Path) -> RunDirectoryError:
    return RunDirectoryError(
        f"{path}: another multisample process is using this run directory; let it finish "
        "(or stop it) before resuming"
    )


def _release(path: Path) -> None:
    fd = _HELD.pop(path.resolve(), None)
    if fd is not None:
        unlock(fd)


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(
        cls, path: Path, config: BaseModel, resume: bool, exclude: set[str] | None = None
    ) -> RunDirectory:
        """Create a new run directory, or reopen one to resume it, and hold it until its
        summary is written (`check_run_directory` says what is refused)."""
        run = cls(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            acquired = _acquire(path)  # before anything is read or repaired
            try:
                exists = check_run_directory(path, config, resume, exclude)
            except RunDirectoryError:
                if acquired:
                    _release(path)
                raise
            if exists:
                run._repair()
            else:
                write_atomic(path / CONFIG, config_text(config, exclude))
        except OSError as exc:
            blocker = next((p for p in (path, *path.parents) if p.is_file()), None)
            if blocker is not None:
                reason = f"{blocker} is a file, not a directory"
            else:
                reason = exc.strerror or str(exc)
                if exc.filename and Path(exc.filename) != path:
                    reason += f" ({exc.filename})"
            raise RunDirectoryError(f"{path}: cannot write the run directory: {reason}") from None
        return run

    def completed(self) -> set[str]:
        """Ids of the prompts whose records are all on disk."""
        return {r["prompt_id"] for r in read_jsonl(self.path / PROGRESS)}

    def is_complete(self) -> bool:
        return (self.path / SUMMARY).exists()

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        """Append records to one of the run's JSONL files in one write, flushed to disk."""
        append_records(self.path / name, records)

    def commit_prompt(
        self,
        prompt_id: str,
        records: dict[str, list[dict[str, Any]]],
        files: dict[str, Any] | None = None,
    ) -> None:
        """Write everything one prompt produced, then mark it done.

        `records` maps JSONL file names to their new records; `files` maps relative paths
        to JSON documents written atomically (e.g. the prompt's tree).
        """
        for relative, document in (files or {}).items():
            replace_file(self.path / relative, dumps_line(document))
        for name, rows in records.items():
            self.append(name, rows)
        self.append(PROGRESS, [{"prompt_id": prompt_id}])

    def records(self, name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / name))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json, which marks the run complete, and let go of the directory."""
        replace_file(self.path / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        _release(self.path)

    def _repair(self) -> None:
        """Drop records of prompts that were not marked done, torn lines, and temporary
        files of interrupted atomic writes."""
        (self.path / SUMMARY).unlink(missing_ok=True)
        for temp in self.path.rglob(".*.tmp"):
            temp.unlink(missing_ok=True)
        done = self.completed()
        for file in self.path.glob("*.jsonl"):
            kept = [
                r for r in read_jsonl(file) if file.name == PROGRESS or r.get("prompt_id") in done
            ]
            data = "".join(dumps_line(r) for r in kept).encode("utf-8")
            if data != file.read_bytes():
                dropped = len(list(read_jsonl(file))) - len(kept)
                logger.info("%s: dropped %d record(s) of unfinished prompts", file, dropped)
                write_atomic(file, data.decode("utf-8"))
