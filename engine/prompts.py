"""Reading prompts files.

A plain path names a JSONL file, one `Prompt` object per line, checked line by line with
unknown fields refused (a typo in a field name fails). A .parquet, .arrow, .csv or .json
file, a `Dataset.save_to_disk` folder, or any file given as `{path, columns}`
(`PromptsSpec`) is read through a column mapping: the columns named in it (or named as
the fields) fill the prompt, and every other column is kept in `Prompt.metadata`.
JSONL is always read line by line here, so errors name the line; the other formats go
through Hugging Face `datasets`, and errors name the row (1-based). A generated task set
(`{generate: arithmetic, ...}`, engine.arithmetic) is made here, its problems numbered
as rows.

Rows without an id get `sha256(conversation)[:12]` (a repeat of the same conversation
gets `-2`, `-3`... in file order), so the same prompt keeps its id across files and
runs, and `--resume` finds it. A `messages` column (a list of {role, content} turns)
makes a multi-turn prompt: the last user turn is `prompt`, the turns before it are
`history` (sent before every call a strategy makes for it; a system turn only first),
and the turns after it are dropped from the prompt: a single assistant turn becomes the
reference when the row has none, anything else is kept in metadata as
`messages_after_prompt`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, get_args

from pydantic import TypeAdapter, ValidationError

from multisample.engine import arithmetic, instructions
from multisample.engine.config import (
    EMBEDDED_TASKS,
    ArithmeticTasks,
    ConfigError,
    InstructionTasks,
    PromptField,
    PromptsSpec,
)
from multisample.engine.config_files import format_validation_error
from multisample.engine.rewards.constraints import parse_constraints
from multisample.engine.types import Message, Prompt


class PromptsError(ConfigError):
    """A prompts file is missing or malformed; the message names the file and line."""


def tasks_path() -> Path:
    """The shipped IFEval-style task set."""
    return Path(str(resources.files("multisample.engine") / "data" / "tasks.jsonl"))


def resolve_prompts_path(path: str | Path) -> Path:
    return tasks_path() if str(path) == EMBEDDED_TASKS else Path(path)


@dataclass(frozen=True)
class PromptFile:
    path: Path
    prompts: list[Prompt]
    lines: dict[str, int]
    """Line number (JSONL) or 1-based row number (other formats) of each prompt id, for
    error messages."""
    rows: bool = False
    """Whether `lines` holds row numbers (a file read through `datasets`)."""

    def where(self, prompt_id: str) -> str:
        return location(self.path, self.lines[prompt_id], self.rows)


def location(path: Path, number: int, rows: bool) -> str:
    """'path:line' of a JSONL line, 'path row N' of a row read through `datasets`."""
    return f"{path} row {number}" if rows else f"{path}:{number}"


DATASET_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json"}
"""File suffixes read through `datasets`, and the builder that reads each."""

FIELDS: tuple[PromptField, ...] = get_args(PromptField)


def load_prompts(
    source: str | Path | PromptsSpec | ArithmeticTasks | InstructionTasks,
    limit: int | None = None,
) -> PromptFile:
    """Every prompt of a prompts file, or a PromptsError naming the first bad line or row.

    Blank lines are skipped, and so is a UTF-8 byte-order mark at the start of the file
    (some editors write one); nothing else is. A line fails if it is not valid UTF-8, not
    a JSON object, has a field of the wrong type or (in a plain JSONL file) an unknown
    one, an empty or blank id or prompt, a repeated id, or a constraint that does not
    parse: the whole file is checked before any model starts, so no run begins on input
    it would choke on later. A generated task set is generated here."""
    if isinstance(source, ArithmeticTasks | InstructionTasks):
        generate = (
            arithmetic.generate if isinstance(source, ArithmeticTasks) else instructions.generate
        )
        prompts = generate(source)[:limit]
        return PromptFile(
            Path(str(source)), prompts, {p.id: n for n, p in enumerate(prompts, 1)}, True
        )
    if isinstance(source, PromptsSpec):
        path, columns, mapped = resolve_prompts_path(source.path), source.columns, True
    else:
        path, columns = resolve_prompts_path(source), {}
        mapped = path.suffix.lower() in DATASET_FORMATS or _is_saved_dataset(path)
    if not mapped:
        return _collect(path, ((n, p, p) for n, p in _strict_lines(path)), limit, rows=False)
    if path.suffix.lower() == ".jsonl" or (
        path.suffix.lower() not in DATASET_FORMATS and not _is_saved_dataset(path)
    ):
        records: Iterator[tuple[int, dict[str, Any]]] = _json_lines(path)
        rows = False
    else:
        records, rows = enumerate(_dataset_rows(path, columns), start=1), True
    mapping = _Mapping(columns)
    return _collect(
        path,
        (mapping.numbered(n, data, location(path, n, rows)) for n, data in records),
        limit,
        rows,
    )


def _collect(
    path: Path, prompts: Iterable[tuple[int, Prompt | None, Prompt]], limit: int | None, rows: bool
) -> PromptFile:
    """The prompts in order, ids checked for repeats. Each item is (number, the prompt
    or None, the prompt with an id of its conversation): the second where the row had
    no id, and then a repeated conversation's id gets a suffix."""
    kept: list[Prompt] = []
    first: dict[str, int] = {}
    repeats: dict[str, int] = {}
    for number, given, unnamed in prompts:
        where = location(path, number, rows)
        prompt = given
        if prompt is None:
            repeats[unnamed.id] = repeats.get(unnamed.id, 0) + 1
            count = repeats[unnamed.id]
            prompt = (
                unnamed.model_copy(update={"id": f"{unnamed.id}-{count}"}) if count > 1 else unnamed
            )
        if prompt.id in first:
            unit = "row" if rows else "line"
            raise PromptsError(
                f"{where}: duplicate id {prompt.id!r} (first on {unit} {first[prompt.id]})"
            )
        first[prompt.id] = number
        kept.append(prompt)
        if limit is not None and len(kept) >= limit:
            break
    if not kept:
        raise PromptsError(f"{path}: no prompts in file")
    return PromptFile(path, kept, first, rows)


def conversation_id(prompt: Prompt) -> str:
    """The id of a prompt given without one: a digest of the turns a model is sent."""
    turns = [[m.role, m.content] for m in prompt.conversation()]
    text = json.dumps(turns, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise PromptsError(f"{path}: no such prompts file") from None
    except OSError as exc:
        raise PromptsError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line, read one line at a time (a `limit`
    reads no further), or a PromptsError naming the line."""
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PromptsError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PromptsError(
                    f"{where}: not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except RecursionError:
                raise PromptsError(f"{where}: not valid JSON: nested too deeply") from None
            if not isinstance(data, dict):
                raise PromptsError(f"{where}: expected a JSON object, got {type(data).__name__}")
            broken = _unpaired_surrogate(data)
            if broken is not None:
                # JSON may escape half of a surrogate pair ("\\ud800"); no text holds one, and
                # tokenizers and files reject it later, in the middle of a run.
                raise PromptsError(f"{where}: {broken}: not valid Unicode (an unpaired surrogate)")
            yield number, data


def _strict_lines(path: Path) -> Iterator[tuple[int, Prompt]]:
    """The prompts of a plain JSONL file: each line a `Prompt`, unknown fields refused."""
    for number, data in _json_lines(path):
        where = f"{path}:{number}"
        try:
            prompt = Prompt.model_validate(data)
        except ValidationError as exc:
            raise PromptsError(format_validation_error(exc, where, data).split("\n")[0]) from None
        _check(prompt, where, {})
        yield number, prompt


def _check(prompt: Prompt, where: str, names: Mapping[str, str]) -> None:
    """What pydantic does not check: blank text and constraints that do not parse.
    `names` gives the column each field came from, where it differs."""
    for name in ("id", "prompt"):
        if not getattr(prompt, name).strip():
            raise PromptsError(f"{where}: {_named(name, names)}: is blank (only whitespace)")
    try:
        parse_constraints(prompt.constraints)
    except ValueError as exc:
        raise PromptsError(f"{where}: {_renamed(str(exc), names)}") from None


def _named(field: str, names: Mapping[str, str]) -> str:
    """A field as an error names it: 'column (field)' where the column is named otherwise."""
    return f"{names[field]} ({field})" if field in names else field


def _renamed(message: str, names: Mapping[str, str]) -> str:
    """A message that starts with a field's name, naming its column instead."""
    for field in names:
        if message.startswith(field) and message[len(field) : len(field) + 1] in (".", ":", "["):
            return _named(field, names) + message[len(field) :]
    return message


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file()


def _dataset_rows(path: Path, columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rows of a file `datasets` reads, every mapped column checked to exist."""
    if not path.exists():
        raise PromptsError(f"{path}: no such prompts file")
    import datasets  # only a file in one of its formats pays for the import

    # Quiet while reading (its own error lines would add to ours), as the caller had it after.
    verbosity, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        if _is_saved_dataset(path):
            dataset = datasets.load_from_disk(str(path))
        else:
            builder = DATASET_FORMATS.get(path.suffix.lower())
            if builder is None:
                raise PromptsError(
                    f"{path}: cannot tell the format; name a file ending in .jsonl, "
                    + ", ".join(DATASET_FORMATS)
                )
            # A private cache: reading a prompts file leaves nothing behind.
            with tempfile.TemporaryDirectory(prefix="multisample-prompts-") as cache:
                dataset = datasets.load_dataset(
                    builder,
                    data_files=str(path),
                    split="train",
                    cache_dir=cache,
                    keep_in_memory=True,
                )
    except PromptsError:
        raise
    except Exception as exc:  # pyarrow, pandas and datasets raise many kinds
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PromptsError(
            f"{path}: cannot read as {path.suffix or 'a dataset'}: {reason}"
        ) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
    if isinstance(dataset, datasets.DatasetDict):
        raise PromptsError(f"{path}: holds several splits ({', '.join(dataset)}); name one folder")
    names = list(dataset.column_names)
    for field, column in columns.items():
        if column not in names:
            raise PromptsError(
                f"{path}: columns.{field}: no column {column!r} (the file has: {', '.join(names)})"
            )
    return dataset.to_list()


class _Mapping:
    """Turns one row (a dict of columns) into a Prompt through the column mapping."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = dict(columns)

    def numbered(
        self, number: int, row: dict[str, Any], where: str
    ) -> tuple[int, Prompt | None, Prompt]:
        """(number, the row's prompt or None when it has no id, the prompt with an id
        of its conversation): what `_collect` takes."""
        prompt, has_id = self.prompt(row, where)
        if has_id:
            return number, prompt, prompt
        return number, None, prompt.model_copy(update={"id": conversation_id(prompt)})

    def prompt(self, row: dict[str, Any], where: str) -> tuple[Prompt, bool]:
        """The row's prompt, and whether it has an id of its own (else its id is '-')."""
        fields = self._fields(row, where)
        names = {f: c for f, c in fields.items() if f != c}
        used = set(fields.values())
        data: dict[str, Any] = {}
        for field, column in fields.items():
            value = row[column]
            if value is None:
                continue  # a missing value (null in the file): the field's default
            data[field] = _plain(field, value, where, column)
        metadata = {k: _json_value(v) for k, v in row.items() if k not in used}
        if "messages" in data:
            data.update(
                self._turns(
                    data.pop("messages"), where, names.get("messages", "messages"), data, metadata
                )
            )
        if metadata:
            data["metadata"] = metadata
        has_id = "id" in data
        data.setdefault("id", "-")  # replaced by the conversation's id (`numbered`)
        if "prompt" not in data:
            column = names.get("prompt") or names.get("messages") or fields.get("prompt", "prompt")
            raise PromptsError(f"{where}: {column}: is empty (no value)")
        try:
            prompt = Prompt.model_validate(data)
        except ValidationError as exc:
            message = format_validation_error(exc, where, data).split("\n")[0]
            raise PromptsError(where + ": " + _renamed(message[len(where) + 2 :], names)) from None
        _check(prompt, where, names)
        return prompt, has_id

    def _fields(self, row: Mapping[str, Any], where: str) -> dict[str, str]:
        """The column of each field this row has, the mapping checked against it."""
        fields: dict[str, str] = {}
        for field in FIELDS:
            column = self.columns.get(field)
            if column is not None:
                if column not in row:
                    raise PromptsError(f"{where}: no column {column!r} (columns.{field})")
                fields[field] = column
            elif field in row and not self._other_text_mapped(field):
                fields[field] = field
        if "prompt" in fields and "messages" in fields:
            raise PromptsError(
                f"{where}: both prompt and messages columns; map one of them in columns"
            )
        if "prompt" not in fields and "messages" not in fields:
            raise PromptsError(
                f"{where}: no prompt: name a column in columns.prompt or columns.messages "
                f"(columns: {', '.join(row) or 'none'})"
            )
        return fields

    def _other_text_mapped(self, field: str) -> bool:
        """Whether `field` (prompt or messages) yields to the other one, mapped."""
        other = {"prompt": "messages", "messages": "prompt"}.get(field)
        return other is not None and other in self.columns

    @staticmethod
    def _turns(
        value: Any, where: str, column: str, data: dict[str, Any], metadata: dict[str, Any]
    ) -> dict[str, Any]:
        """prompt and history (and maybe reference) from a conversation's turns."""
        try:
            turns = TURNS.validate_python(value)
        except ValidationError as exc:
            item = exc.errors()[0]
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
            raise PromptsError(f"{where}: {column}{path}: {item['msg']}") from None
        users = [i for i, turn in enumerate(turns) if turn.role == "user"]
        if not users:
            raise PromptsError(f"{where}: {column}: no user turn")
        for i, turn in enumerate(turns):
            if turn.role == "system" and i > 0:
                raise PromptsError(
                    f"{where}: {column}[{i}]: a system turn comes first or not at all"
                )
        last = users[-1]
        fields: dict[str, Any] = {"prompt": turns[last].content, "history": turns[:last]}
        after = turns[last + 1 :]
        if len(after) == 1 and after[0].role == "assistant" and "reference" not in data:
            fields["reference"] = after[0].content
        elif after:
            metadata["messages_after_prompt"] = [asdict(t) for t in after]
        return fields


TURNS = TypeAdapter(list[Message])


def _plain(field: str, value: Any, where: str, column: str) -> Any:
    """A column's value in the shape the field takes: what a CSV or an Arrow schema
    changes (numbers for text, JSON text for lists, nulls filled into structs) undone."""
    if field in ("id", "reference") and isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a CSV's integer column with a gap reads as floats
        if not isinstance(value, bool):
            return str(value)
    if field in ("constraints", "messages") and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PromptsError(
                f"{where}: {column}: not a list nor JSON text of one ({exc.msg})"
            ) from None
    if field in ("constraints", "messages") and isinstance(value, list):
        # Arrow gives every struct in a column the union of their keys, the absent as null.
        return [
            {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
            for item in value
        ]
    return value


def _json_value(value: Any) -> Any:
    """A metadata value as JSON holds it (dates as ISO text, bytes as their repr)."""
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
    except (TypeError, ValueError):
        return str(value)


def _json_default(value: Any) -> Any:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


def _unpaired_surrogate(value: object, path: str = "") -> str | None:
    """The field path of the first string (key or value) holding an unpaired surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(top level)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            found = _unpaired_surrogate(key, here) or _unpaired_surrogate(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _unpaired_surrogate(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def refuse_two_system_turns(
    prompts: PromptFile, system_prompts: Mapping[str, str | None], who: str
) -> None:
    """A prompt with a system turn of its own cannot go to a `who` (a model, a candidate)
    whose `system_prompts` entry is set: the conversation would hold two. Checked before
    any engine starts."""
    own = next((p for p in prompts.prompts if p.has_system_turn), None)
    if own is None:
        return
    for name, system_prompt in system_prompts.items():
        if system_prompt:
            raise PromptsError(
                f"{prompts.where(own.id)}: prompt {own.id!r} has a system turn of its own, and "
                f"{who} {name!r} has a system_prompt: a conversation takes one; drop either"
            )
