"""The run directory: append-only JSONL records, atomic files, and resume bookkeeping.

Layout (DESIGN.md): config.yaml, samples.jsonl, pairs.jsonl, trees/<prompt-id>.json,
summary.json. `progress.jsonl` lists the prompts whose records are all written; it is
appended after them, so on resume the records of a prompt not listed there are dropped
and that prompt runs again. `summary.json` is written last: a run directory without it
is not complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PROGRESS = "progress.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked (exists, differs, unwritable...)."""


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

    Read as bytes: a torn line may end inside a multi-byte character."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                return  # torn write: the process died mid-line
            if line.strip():
                yield json.loads(line.decode("utf-8"))


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
            raise RunDirectoryError(f"{path}: cannot write the run directory: {exc}") from None
        return run

    def completed(self) -> set[str]:
        """Ids of the prompts whose records are all on disk."""
        return {r["prompt_id"] for r in read_jsonl(self.path / PROGRESS)}

    def is_complete(self) -> bool:
        return (self.path / SUMMARY).exists()

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        """Append records to a JSONL file in one write, flushed to disk."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        with (self.path / name).open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

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
            write_atomic(self.path / relative, json.dumps(document, ensure_ascii=False))
        for name, rows in records.items():
            self.append(name, rows)
        self.append(PROGRESS, [{"prompt_id": prompt_id}])

    def records(self, name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path / name))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    def _repair(self) -> None:
        """Drop records of prompts that were not marked done, and torn lines."""
        (self.path / SUMMARY).unlink(missing_ok=True)
        done = self.completed()
        for file in self.path.glob("*.jsonl"):
            kept = [
                r for r in read_jsonl(file) if file.name == PROGRESS or r.get("prompt_id") in done
            ]
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            if text.encode() != file.read_bytes():
                write_atomic(file, text)
