"""vLLM's engine arguments, checked before any engine starts: every `engine_args` entry of
a config must be a field of the installed vLLM's AsyncEngineArgs, with a value of its
type (as far as YAML can give one), or the run stops with one line naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from multisample.engine.config import ConfigError

logger = logging.getLogger(__name__)


def vllm_engine_fields() -> dict[str, Any] | None:
    """vLLM's engine arguments (AsyncEngineArgs fields) and their annotations, or None
    where vLLM is not installed (a driver of a cluster whose nodes have it)."""
    quiet = logging.getLogger("vllm")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # vLLM's import-time notices are not the user's business here
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    finally:
        quiet.setLevel(level)
    return {f.name: f.type for f in dataclasses.fields(AsyncEngineArgs) if f.name[0] != "_"}


_PLAIN = (bool, int, float, str, type(None))


def _checkable(hint: Any) -> bool:
    """Whether a value's type can be checked against `hint` as YAML gives it: plain
    scalars, literals, unions, lists and string-keyed dicts of those (vLLM's config
    objects, enums and string annotations are left to vLLM)."""
    if hint is Any or hint in _PLAIN or hint in (list, dict):
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, dict):
        return all(_checkable(a) for a in typing.get_args(hint))
    return False


def _type_text(hint: Any) -> str:
    """`hint` as a reader would write it: 'int or None', "one of 'auto', 'fp8'"."""
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return hint.__name__
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    return str(hint).replace("typing.", "")


def engine_args_problem(
    engine_args: dict[str, Any], fields: dict[str, Any]
) -> tuple[str, str] | None:
    """The first engine argument that is not one of vLLM's `fields` or whose value does not
    fit its annotation: (its name, what is wrong); None when all fit."""
    for name, value in engine_args.items():
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return name, f"unknown vLLM engine argument{hint}"
        hint = fields[name]
        if not _checkable(hint):
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            return name, f"vLLM expects {_type_text(hint)} (got {value!r})"
    return None


def check_engine_args(specs: Sequence[tuple[str, Any]]) -> None:
    """Refuse, before any engine starts, an `engine_args` entry of these (config path,
    spec) pairs that vLLM does not know or whose value has the wrong type: ConfigError
    naming the field. vLLM is imported only when some spec has engine_args."""
    given = [(path, spec) for path, spec in specs if getattr(spec, "engine_args", None)]
    if not given:
        return
    fields = vllm_engine_fields()
    if fields is None:
        logger.info("vLLM is not installed here: the engines check their engine_args")
        return
    for path, spec in given:
        problem = engine_args_problem(spec.engine_args, fields)
        if problem is not None:
            name, message = problem
            raise ConfigError(f"{path}.engine_args.{name}: {message}")
