"""Reading prompts files: JSONL, one `Prompt` object per line, checked line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from engine.config import EMBEDDED_TASKS, ConfigError, format_validation_error
from engine.rewards.constraints import parse_constraints
from engine.types import Prompt


class PromptsError(ConfigError):
    """A prompts file is missing or malformed; the message names the file and line."""


def tasks_path() -> Path:
    """The shipped IFEval-style task set."""
    return Path(str(resources.files("engine") / "data" / "tasks.jsonl"))


def resolve_prompts_path(path: str | Path) -> Path:
    return tasks_path() if str(path) == EMBEDDED_TASKS else Path(path)


@dataclass(frozen=True)
class PromptFile:
    path: Path
    prompts: list[Prompt]
    lines: dict[str, int]
    """Line number of each prompt id, for error messages."""

    def where(self, prompt_id: str) -> str:
        return f"{self.path}:{self.lines[prompt_id]}"


def load_prompts(path: str | Path, limit: int | None = None) -> PromptFile:
    """Every prompt of a JSONL file, or a PromptsError naming the first bad line.

    Blank lines are skipped, and so is a UTF-8 byte-order mark at the start of the file
    (some editors write one); nothing else is. A line fails if it is not valid UTF-8, not
    a JSON object, has a field of the wrong type or an unknown one, an empty or blank id
    or prompt, a repeated id, or a constraint that does not parse: the whole file is
    checked before any model starts, so no run begins on input it would choke on later."""
    path = resolve_prompts_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptsError(f"{path}: no such prompts file") from None
    except OSError as exc:
        raise PromptsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
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
            raise PromptsError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise PromptsError(f"{where}: not valid JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise PromptsError(f"{where}: expected a JSON object, got {type(data).__name__}")
        broken = _unpaired_surrogate(data)
        if broken is not None:
            # JSON may escape half of a surrogate pair ("\\ud800"); no text holds one, and
            # tokenizers and files reject it later, in the middle of a run.
            raise PromptsError(f"{where}: {broken}: not valid Unicode (an unpaired surrogate)")
        try:
            prompt = Prompt.model_validate(data)
        except ValidationError as exc:
            raise PromptsError(format_validation_error(exc, where, data).split("\n")[0]) from None
        for name in ("id", "prompt"):
            if not getattr(prompt, name).strip():
                raise PromptsError(f"{where}: {name}: is blank (only whitespace)")
        try:
            parse_constraints(prompt.constraints)
        except ValueError as exc:
            raise PromptsError(f"{where}: {exc}") from None
        if prompt.id in first_line:
            raise PromptsError(
                f"{where}: duplicate id {prompt.id!r} (first on line {first_line[prompt.id]})"
            )
        first_line[prompt.id] = number
        prompts.append(prompt)
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise PromptsError(f"{path}: no prompts in file")
    return PromptFile(path, prompts, first_line)


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
