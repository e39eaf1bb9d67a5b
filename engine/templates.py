"""Prompt templates read from files (a strategy's, a judge's): `str.format` templates,
checked whole when they are read, before any engine starts, so that none fails at its
first use with the engines up, or builds a prompt of unbounded size."""

from __future__ import annotations

import string
from collections.abc import Collection
from pathlib import Path

from multisample.engine.config import ConfigError


def read_template(
    path: str | Path, allowed: Collection[str], required: Collection[str] = (), reader: str = ""
) -> str:
    """The text of template file `path`: UTF-8, every `{field}` one of `allowed` (each of
    `required` used), with no positional `{}`, attribute, index or format spec (`{x:>9}`
    could make a prompt of any size), and a conversion only `!r`, `!s` or `!a`; literal
    braces doubled. ConfigError says what is wrong, naming the file (and `reader`, who
    must be shown a required field)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    names = " ".join("{" + f + "}" for f in sorted(allowed))
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not a template ({exc}; write {{{{ and }}}} for braces)"
        ) from None
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed:
            shown = "{" + field + "}"
            raise ConfigError(f"{path}: unknown field(s) {shown}; allowed: {names}")
        if spec:
            raise ConfigError(
                f"{path}: {{{field}:{spec}}}: a template's fields take no format spec"
            )
        if conversion not in (None, "r", "s", "a"):
            raise ConfigError(f"{path}: {{{field}!{conversion}}}: not a conversion (r, s or a)")
        used.add(field)
    for field in sorted(set(required) - used):
        who = reader or "the model"
        raise ConfigError(f"{path}: the template never shows {who} the {{{field}}}")
    return text
