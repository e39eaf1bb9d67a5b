"""The run directory: append-only JSONL records, atomic files, and resume bookkeeping.

Layout (DESIGN.md): config.yaml, samples.jsonl, pairs.jsonl, trees/<prompt-id>.json,
summary.json. `progress.jsonl` lists the prompts whose records are all written; it is
appended after them, so on resume the records of a prompt not listed there are dropped
and that prompt runs again. `summary.json` is written last: a run directory without it
is not complete.

What a crash can leave behind, and how resume repairs it: a torn last line (the process
died mid-write, or the disk filled up mid-write) is dropped; records of prompts without a
progress line are dropped; temporary files of an interrupted atomic write are deleted. A
failed write (disk full, a read-only or vanished directory) raises RunDirectoryError with
the file and the reason, and leaves the directory resumable.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PROGRESS = "progress.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"

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


def _append_bytes(path: Path, data: bytes) -> None:
    """Append `data` to a file and flush it to disk (the one low-level append)."""
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path, config_text: str, resume: bool) -> RunDirectory:
        """Create a new run directory, or reopen one to resume it.

        A new run refuses a directory that holds a run already (nothing a user produced
        is overwritten); a resumed run refuses a config that differs from the first one.
        """
        run = cls(path)
        config_path = path / CONFIG
        try:
            if config_path.exists():
                if not resume:
                    raise RunDirectoryError(
                        f"{path}: a run already exists here; pass --resume to continue it "
                        "or choose another --name"
                    )
                if config_path.read_text(encoding="utf-8") != config_text:
                    raise RunDirectoryError(
                        f"{path}: --resume with a different config than the run was started "
                        f"with; compare with {config_path}"
                    )
                run._repair()
            else:
                path.mkdir(parents=True, exist_ok=True)
                write_atomic(config_path, config_text)
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
        """Append records to a JSONL file in one write, flushed to disk."""
        data = "".join(dumps_line(r) for r in records).encode("utf-8")
        if not data:
            return
        path = self.path / name
        try:
            _append_bytes(path, data)
        except OSError as exc:
            raise _write_failed(path, exc) from None

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
            path = self.path / relative
            try:
                write_atomic(path, dumps_line(document))
            except OSError as exc:
                raise _write_failed(path, exc) from None
        for name, rows in records.items():
            self.append(name, rows)
        self.append(PROGRESS, [{"prompt_id": prompt_id}])

    def records(self, name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / name))

    def write_summary(self, summary: dict[str, Any]) -> None:
        path = self.path / SUMMARY
        try:
            write_atomic(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise _write_failed(path, exc) from None

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
