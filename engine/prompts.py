"""Reading prompts files: JSONL, one `Prompt` object per line, checked line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from engine.config import ConfigError, format_validation_error
from engine.rewards.constraints import parse_constraints
from engine.types import Prompt

EMBEDDED_TASKS = "embedded:tasks"
"""The name configs use for the task set shipped with multisample."""


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
    """Every prompt of a JSONL file (blank lines skipped), or a PromptsError naming the
    first bad line. Constraints are validated too, so a typo fails before any model runs."""
    path = resolve_prompts_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptsError(f"{path}: no such prompts file") from None
    except OSError as exc:
        raise PromptsError(f"{path}: cannot read: {exc}") from None
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
        try:
            prompt = Prompt.model_validate(data)
        except ValidationError as exc:
            raise PromptsError(format_validation_error(exc, where, data).split("\n")[0]) from None
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
