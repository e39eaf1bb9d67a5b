"""Prompts held in memory, made a prompts file of the run: `<run>/inputs/prompts.jsonl`.

The run's config then names that file, so a run from memory is as reproducible and
resumable as one from a file: its config.yaml says where its prompts are, and a resume
with other prompts is refused. The records are checked by `engine.prompts.load_prompts`,
as any prompts file is, with each problem named by its index (`prompts[3]`). The file
sits in a folder of its own because a run directory's top-level *.jsonl files are its
records, which a resume trims to the prompts committed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from multisample.engine.prompts import PromptsError, load_prompts
from multisample.engine.types import Prompt

INPUTS = "inputs"
PROMPTS_FILE = "prompts.jsonl"

PromptsSource = Iterable[str | Mapping[str, Any] | Prompt] | str | os.PathLike[str]
"""A prompts file's path (or 'embedded:tasks'), or the prompts themselves: a list of
texts, of dicts with the fields of a prompts file's records (id, prompt, reference,
constraints, preference), or of `Prompt`s; a `datasets.Dataset` or a pandas DataFrame
with those columns. A text, or a record without an id, gets its index as id."""


def is_file_source(source: PromptsSource) -> bool:
    return isinstance(source, str | os.PathLike)


def prompt_records(source: PromptsSource) -> list[dict[str, Any]]:
    """The prompts of an in-memory source as prompts-file records (unchecked)."""
    if isinstance(source, Mapping):
        raise PromptsError("prompts: expected a list of prompts, got one mapping (wrap it: [...])")
    if isinstance(source, pd.DataFrame):
        source = source.to_dict("records")
    records: list[dict[str, Any]] = []
    for index, item in enumerate(source):
        if isinstance(item, Prompt):
            record = item.model_dump(mode="json", exclude_defaults=True)
        elif isinstance(item, str):
            record = {"prompt": item}
        elif isinstance(item, Mapping):
            record = _present(item)
        else:
            raise PromptsError(
                f"prompts[{index}]: expected a text, a dict or a Prompt, got {type(item).__name__}"
            )
        record.setdefault("id", str(index))
        records.append(record)
    if not records:
        raise PromptsError("prompts: no prompts given")
    return records


def _present(item: Mapping[str, Any]) -> dict[str, Any]:
    """A record without its missing values (None, or NaN from a DataFrame): a table's
    empty cell is an absent field. Constraints lose theirs too, since a table (Arrow, a
    `datasets.Dataset`) gives every constraint of a column every constraint's keys."""
    record = {k: v for k, v in item.items() if not _missing(v)}
    constraints = record.get("constraints")
    if isinstance(constraints, list | tuple):
        record["constraints"] = [
            {k: v for k, v in c.items() if not _missing(v)} if isinstance(c, Mapping) else c
            for c in constraints
        ]
    return record


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def prompts_text(records: list[dict[str, Any]]) -> str:
    """The records as a checked prompts file's text, or a PromptsError naming the
    record by its index."""
    try:
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    except (TypeError, ValueError) as exc:
        raise PromptsError(f"prompts: not JSON-serializable: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="multisample-prompts-") as folder:
        path = Path(folder) / PROMPTS_FILE
        path.write_text(text, encoding="utf-8")
        try:
            load_prompts(path)
        except PromptsError as exc:
            raise PromptsError(_by_index(str(exc), path)) from None
    return text


def _by_index(message: str, path: Path) -> str:
    """'<file>:<line>: ...' of the temporary file as 'prompts[<index>]: ...'."""
    head, _, rest = message.partition(": ")
    where, _, line = head.rpartition(":")
    if where == str(path) and line.isdigit():
        return f"prompts[{int(line) - 1}]: {rest}"
    return message.replace(str(path), "prompts")


def prompts_path(run_path: Path) -> Path:
    """Where a run keeps the prompts it was given in memory."""
    return (run_path / INPUTS / PROMPTS_FILE).resolve()


def write_prompts(run_path: Path, text: str, resume: bool) -> bool:
    """Write the run's prompts file; a resume must be given the prompts it started with.
    Returns whether the file was written (False: it already held them)."""
    path = prompts_path(run_path)
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return False
        if resume:
            raise PromptsError(
                f"{path}: resuming with other prompts than the run was started with; "
                "pass the same prompts (or start a new run)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True
