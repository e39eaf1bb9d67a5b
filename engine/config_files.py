"""Config files: YAML read into a config model, every problem reported on one line as
`file:line: field.path: message`, and `--set PATH=VALUE` overrides applied before
validation (a problem at an override names the override instead of the file).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from multisample.engine.config import SECRET_ERROR, ConfigError, format_path

Config = TypeVar("Config", bound=BaseModel)


def _yaml_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = key = None
        if isinstance(node, yaml.MappingNode):
            # Compared as text: a key written `1:` is the int 1 in `loc`, "1" in the node.
            key, child = next(
                ((k, v) for k, v in node.value if str(k.value) == str(part)), (None, None)
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            continue  # a union tag or a missing key: stay at the parent
        node = child
        line = (key or node).start_mark.line + 1  # a key's own line, not its value's
    return line


def _data_path(data: Any, loc: tuple[Any, ...], missing: bool = False) -> tuple[Any, ...]:
    """The steps of `loc` that are keys and indexes of the data the user wrote. Pydantic
    puts a tagged union's tag into `loc` ('models.0.vllm.dtype'), which the user never
    typed: a name step that is not a key of the data is such a tag, except the last step
    of a 'missing field' error."""
    steps: list[Any] = []
    for step, part in enumerate(loc):
        last = step == len(loc) - 1
        if isinstance(data, dict) and part in data:
            steps.append(str(part))  # a key, even one written `1:`; ints are list indexes
            data = data[part]
        elif isinstance(part, int):
            steps.append(part)
            data = data[part] if isinstance(data, list) and part < len(data) else None
        elif last and missing:
            steps.append(str(part))
        # else: a union tag
    return tuple(steps)


_SECRET_NAME = re.compile(
    r"(^|[_-])(api_?key|key|token|secret|password|passwd|auth|authorization|credentials?)"
    r"($|[_-])",
    re.IGNORECASE,
)


def _looks_secret(loc: tuple[Any, ...]) -> bool:
    """Whether a field's name suggests its value is a credential, never to be echoed."""
    return any(isinstance(part, str) and _SECRET_NAME.search(part) for part in loc[-1:])


def format_validation_error(
    error: ValidationError,
    source: str,
    data: Any = None,
    node: yaml.Node | None = None,
    overrides: Sequence[Override] = (),
) -> str:
    """One line per problem: 'source[:line]: field.path: message (got value)'. A problem
    at or under a `--set` override names the override instead of the file."""
    lines = []
    for item in error.errors():
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        if _looks_secret(item["loc"]) or item["type"] == SECRET_ERROR:
            shown = " (value not shown)"  # e.g. an API key pasted where it does not belong
        missing = item["type"] == "missing"
        steps = _data_path(data, item["loc"], missing)
        override = next((o for o in overrides if o.touches(steps)), None)
        message = item["msg"]
        if override is not None:
            where = f"--set {override.text}"
            if item["type"] == "extra_forbidden":
                message, shown = "no such setting", ""
        else:
            line = _yaml_line(node, item["loc"])
            where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {format_path(steps)}: {message}{shown}")
    return "\n".join(lines)


def _yaml_where(path: Path, text: str, error: yaml.YAMLError) -> str:
    """'path:line' of a YAML error, or the path alone when PyYAML gives no position."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"{path}:{mark.line + 1}"
    position = getattr(error, "position", None)  # a reader error: a character offset
    if isinstance(position, int):
        return f"{path}:{text.count(chr(10), 0, position) + 1}"
    return str(path)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's explanation on one line (its str() adds the offending text below)."""
    problem = getattr(error, "problem", None)
    if isinstance(error, yaml.reader.ReaderError) and isinstance(error.character, int):
        problem = f"unacceptable character #x{error.character:04x}: {error.reason}"
    context = getattr(error, "context", None)
    if problem is not None and context:
        problem = f"{context}, {problem}"  # e.g. "expected a single document in the stream"
    return " ".join(str(problem if problem is not None else error).split())


@dataclass(frozen=True)
class Override:
    """One `--set PATH=VALUE`: a config value given on the command line."""

    text: str
    """As the user typed it, for messages."""
    steps: tuple[str, ...]
    """PATH split at dots ('models[0]' is 'models', '0')."""
    value: Any
    """VALUE parsed as YAML: 8 is an int, true a bool, [1, 2] a list, null None."""
    resolved: tuple[Any, ...] = ()
    """The steps as keys and indexes of the data it was applied to."""

    @classmethod
    def parse(cls, text: str) -> Override:
        path, equals, value = text.partition("=")
        steps = tuple(path.replace("[", ".").replace("]", "").strip().split("."))
        if not equals or not all(steps):
            raise ConfigError(f"--set {text:.200}: expected PATH=VALUE, e.g. budget.generations=8")
        too_deep = ConfigError(f"--set {text:.200}: nested deeper than {MAX_DEPTH} levels")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--set {text:.200}: not a YAML value: {_yaml_problem(exc)}"
            ) from None
        except RecursionError:
            raise too_deep from None
        if len(steps) + depth(parsed) > MAX_DEPTH:
            raise too_deep
        return cls(text, steps, parsed)

    def touches(self, steps: tuple[Any, ...]) -> bool:
        """Whether a problem at `steps` is at, above or below this override's path."""
        shorter = min(len(steps), len(self.resolved))
        return bool(steps) and steps[:shorter] == self.resolved[:shorter]

    def apply(self, data: dict[str, Any]) -> Override:
        """Set the value in `data` (mappings on the way are created; a list's entry is
        picked by index or by its `name`); returns this override with its resolved path."""
        node: Any = data
        resolved: list[Any] = []
        for number, step in enumerate(self.steps):
            last = number == len(self.steps) - 1
            here = format_path(resolved)
            if isinstance(node, list):
                key: Any = self._entry(node, step, here)
            elif isinstance(node, dict):
                key = step
                if not last and node.get(key) is None:
                    node[key] = {}
            else:
                raise ConfigError(f"--set {self.text}: {here} is {node!r}, not a mapping")
            resolved.append(key)
            if last:
                node[key] = self.value
            else:
                node = node[key]
        return Override(self.text, self.steps, self.value, tuple(resolved))

    def _entry(self, items: list[Any], step: str, here: str) -> int:
        if step.isdigit():
            if int(step) < len(items):
                return int(step)
        else:
            named = [i for i, item in enumerate(items) if isinstance(item, dict)]
            for index in named:
                if items[index].get("name") == step:
                    return index
        raise ConfigError(
            f"--set {self.text}: {here} has no entry {step!r} "
            f"(an index below {len(items)}, or an entry's name)"
        )


MAX_DEPTH = 32
"""The deepest nesting a config may have (its deepest setting is 6 levels down): deeper
data is refused in one line before it reaches anything recursive."""


def depth(value: Any) -> int:
    """How deeply `value` nests lists and mappings (a scalar: 0), counted without
    recursion, up to MAX_DEPTH + 1."""
    deepest, level = 0, [value]
    while level and deepest <= MAX_DEPTH:
        level = [
            child
            for item in level
            if isinstance(item, dict | list | tuple)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        deepest += bool(level) or 0
        if not level:
            break
    return deepest


def check_depth(data: Any, source: str) -> None:
    """ConfigError when `data` nests deeper than MAX_DEPTH."""
    if depth(data) > MAX_DEPTH:
        raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels")


def _read_yaml(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where, problem = _yaml_where(path, text, exc), _yaml_problem(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    check_depth(data, str(path))
    return text, data


def read_config(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[str, dict[str, Any], list[Override]]:
    """A YAML config file's text and settings, with the `--set PATH=VALUE` overrides
    applied in order (before any validation); ConfigError names the file or the override."""
    text, data = _read_yaml(Path(path))
    applied = [Override.parse(o).apply(data) for o in overrides]
    return text, data, applied


def validate_config(
    path: str | Path,
    model: type[Config],
    text: str,
    data: dict[str, Any],
    overrides: Sequence[Override] = (),
) -> Config:
    """`data` (read from `path`) as `model`, or ConfigError naming the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raise ConfigError(format_validation_error(exc, str(path), data, node, overrides)) from None


def load_config(path: str | Path, model: type[Config], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML file into `model`, with `--set PATH=VALUE` overrides applied first, or
    raise ConfigError naming the file (or the override) and the fields."""
    text, data, applied = read_config(path, overrides)
    return validate_config(path, model, text, data, applied)
