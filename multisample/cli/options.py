"""Command-line options derived from a settings class, as vLLM derives its command line from
`EngineArgs`: one `--field-name` option per field, with the field's type, default and
description, checked by the class itself (so a command and a config that share a class
share its rules). A command declares its own parameters and `**options`;
`with_options(Settings)` puts the fields' options in place of `**options`, and
`parse_options(Settings, options)` turns what was given into the settings, or one line
naming the option."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from multisample.cli.common import fail

S = TypeVar("S", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _help(info: FieldInfo) -> str:
    return " ".join((info.description or "").split())


def _repeats(info: FieldInfo) -> bool:
    """A list field's option is given once per item."""
    return typing.get_origin(info.annotation) in (list, tuple)


def _option(name: str, info: FieldInfo) -> inspect.Parameter:
    bounds: dict[str, Any] = {}
    for rule in info.metadata:
        if isinstance(rule, Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, Le):
            bounds["max"] = rule.le
    default = info.get_default(call_default_factory=True)
    annotation = info.annotation
    if _repeats(info):
        annotation, default = list[str] | None, None  # typer's form of a repeated option
    option = typer.Option(option_name(name), help=_help(info), show_default=True, **bounds)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )


def with_options(settings: type[BaseModel]) -> Callable[[F], F]:
    """Give a command one option per field of `settings`, in place of its `**options`."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        fields = [_option(name, info) for name, info in settings.model_fields.items()]
        command.__signature__ = signature.replace(parameters=[*own, *fields])  # type: ignore[attr-defined]
        return command

    return decorate


def parse_options(settings: type[S], options: dict[str, Any]) -> S:
    """The settings the options give, or a one-line error naming the first bad option."""
    values = {name: options[name] for name in settings.model_fields if name in options}
    for name, info in settings.model_fields.items():
        if values.get(name) is None and _repeats(info):
            values[name] = []  # the option was not given
    try:
        return settings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        fail(f"{option_name(field)}: {error['msg']} (got {error.get('input')!r})")
