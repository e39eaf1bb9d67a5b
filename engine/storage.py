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

Durable: every append and every whole file is flushed to the disk (fsync) before it
counts, and so is the directory after a file is created or renamed into it, so a power
loss cannot leave a committed record pointing at a file the disk never got. Files are
created with the permissions the umask gives, as any other program's.

Nothing else is touched: a new run starts only in a new or empty folder, and a resume
repairs only the run's own record files (`RunDirectory.RECORDS`).

One process at a time: a run directory is held (an flock on `.lock`) from `open` until
its summary is written, so the same run resumed twice at once is refused, not run twice.
On a network filesystem, Linux emulates flock with the server's byte-range locks (NFSv4,
or NLM on NFSv3): two machines are kept off one run where the server grants locks; on a
mount without them (`nolock`) the lock holds only among the processes of one machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ValidationError

from multisample.engine.config import OPERATIONAL_FIELDS, ConfigError, format_path
from multisample.engine.config_files import load_config
from multisample.engine.locks import lock, locked_elsewhere, unlock

PROGRESS = "progress.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
LOCK = ".lock"
INPUTS = "inputs"
"""What a run was given in memory (its prompts file), written before the run starts."""
BEFORE_START = {LOCK, INPUTS}
"""What a run's folder may hold before the run starts: a new run takes a folder that is
new, empty, or holds only these."""

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


def sync_directory(path: Path) -> None:
    """Flush a directory's entries to the disk (a file created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder` to the disk (a folder written file by
    file, such as an adapter, before it is renamed into place and committed)."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        else:
            sync_directory(path)
    sync_directory(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
"""The process's umask, read once: what permissions new files and folders get."""


def install_folder(partial: Path, target: Path) -> None:
    """Put a folder written whole in `partial` at `target` (an adapter, an export): its
    files and names flushed to the disk first, a folder already at `target` moved aside
    and deleted only once the new one is in place, and the permissions the umask gives
    (a temporary folder is made private)."""
    partial.chmod(0o777 & ~UMASK)
    sync_tree(partial)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        target.rename(old)
    partial.rename(target)
    sync_directory(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix,
    and both the file and its name are on the disk when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # Created as open() creates a file, so the umask decides its permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a kill mid-write) is skipped.

    Read as bytes: a torn line may end inside a multi-byte character. A complete line
    that does not parse (the file was edited or damaged) is a RunDirectoryError naming
    the file and line: a record is never dropped silently."""
    return (record for _, record in numbered_jsonl(path))


def numbered_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """`read_jsonl` with each record's line number, for messages about one record."""
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
            yield number, record


def checked_jsonl(path: Path, shape: type[BaseModel]) -> Iterator[dict[str, Any]]:
    """`read_jsonl`, each record checked against `shape` (the fields a reader relies on;
    others pass): one that does not fit is a RunDirectoryError naming the file, the line
    and the field, instead of a failure far from the cause."""
    for number, record in numbered_jsonl(path):
        try:
            shape.model_validate(record)
        except ValidationError as exc:
            item = exc.errors()[0]
            raise RunDirectoryError(
                f"{path}:{number}: {format_path(item['loc'])}: {item['msg']}; repair or "
                "delete that line"
            ) from None
        yield record


def read_document(path: Path) -> dict[str, Any]:
    """A JSON file of the run directory (summary.json, state.json): a damaged one (torn,
    edited) is a RunDirectoryError naming it."""
    try:
        document = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(f"{path}: damaged ({exc}); repair or delete it") from None
    if not isinstance(document, dict):
        raise RunDirectoryError(f"{path}: damaged (not a JSON object); repair or delete it")
    return document


def _append_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Append `data` to a file and flush it to the OS, and with `sync` to the disk (the
    one low-level append). Flushed data survives the process being killed; only a
    synced write survives the machine going down."""
    created = not path.exists()
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
    if sync and created:
        sync_directory(path.parent)  # the new file's name, too


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
    The operational fields (engine.config.OPERATIONAL_FIELDS: timeouts, logs) may always
    change.
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
    ignored = set(exclude or ()) | OPERATIONAL_FIELDS
    new = config.model_dump(mode="json", exclude=ignored)
    differ = _differences(saved.model_dump(mode="json", exclude=ignored), new)
    if differ:
        named = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise RunDirectoryError(
            f"{path}: --resume with a different config than the run was started with "
            f"({named} differ); compare with {saved_path}"
        )
    return True


def _check_creatable(path: Path) -> None:
    """A new run goes into a new folder, an empty one, or one holding only what a run
    writes before it starts: never among files that are not a run's."""
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in BEFORE_START)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise RunDirectoryError(
                f"{path}: not a run directory (no {CONFIG}) and not empty ({shown}); a new "
                "run takes a new or empty folder: choose another --name or output directory"
            )
        return
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


class _ProgressShape(BaseModel):
    prompt_id: str


class RunDirectory:
    """A run directory whose unit of commit is a prompt (progress.jsonl)."""

    RECORDS: ClassVar[tuple[str, ...]] = ()
    """The run's own JSONL files of prompt records, which a resume repairs; a subclass
    names them (a synthesize run its samples, pairs and prompts). Nothing else is
    rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(
        cls,
        path: Path,
        config: BaseModel,
        resume: bool,
        exclude: set[str] | None = None,
        *,
        lock: bool = True,
    ) -> RunDirectory:
        """Create a new run directory, or reopen one to resume it, and hold it until its
        summary is written (`check_run_directory` says what is refused). `lock=False`
        for a directory inside one its process holds already (a sweep's cells)."""
        run = cls(path)
        check_run_directory(path, config, resume, exclude)  # before anything is created
        try:
            if not path.exists():
                path.mkdir(parents=True)
                sync_directory(path.parent)
            acquired = lock and _acquire(path)  # before anything is read or repaired
            try:  # again, now that no other process can start here
                exists = check_run_directory(path, config, resume, exclude)
            except RunDirectoryError:
                if acquired:
                    _release(path)
                raise
            if exists:
                run._repair()
            else:
                write_atomic(path / CONFIG, config_text(config, exclude))
            run._create_records()
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
        return {r["prompt_id"] for r in checked_jsonl(self.path / PROGRESS, _ProgressShape)}

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

    def _create_records(self) -> None:
        """Create the record files a run has none of yet, empty: a run that produced no
        pairs (every reward tied) still has its pairs.jsonl for a reader to load."""
        missing = [self.path / name for name in self.RECORDS if not (self.path / name).exists()]
        for file in missing:
            file.touch()
        if missing:
            sync_directory(self.path)

    def _repair(self) -> None:
        """Drop the records of prompts that were not marked done, and torn lines, from the
        run's own record files; delete temporary files of interrupted atomic writes."""
        (self.path / SUMMARY).unlink(missing_ok=True)
        for temp in self.path.rglob(".*.tmp"):
            temp.unlink(missing_ok=True)
        cut_torn_line(self.path / PROGRESS)
        done = self.completed()
        for file in [self.path / name for name in self.RECORDS]:
            if not file.exists():
                continue
            kept = [r for r in read_jsonl(file) if r.get("prompt_id") in done]
            data = "".join(dumps_line(r) for r in kept).encode("utf-8")
            if data != file.read_bytes():
                dropped = len(list(read_jsonl(file))) - len(kept)
                logger.info("%s: dropped %d record(s) of unfinished prompts", file, dropped)
                write_atomic(file, data.decode("utf-8"))
