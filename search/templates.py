"""Prompt templates of the strategies: the project's own, in files a user can override.

Each template is a text file formatted with `str.format`; the fields a template may use:
- refine: {question}, {answer}
- aggregate: {question}, {references} (MoA's aggregator as a user turn)
- aggregate_system: {references} (MoA's aggregator as a system message; the question
  follows as the user turn)
- feedback: {question}, {answer}, {preference}
- corrector: {question}, {answer}, {preference}, {feedback}
"""

from __future__ import annotations

from importlib import resources

from multisample.engine.config import ConfigError
from multisample.engine.templates import read_template

FIELDS: dict[str, set[str]] = {
    "refine": {"question", "answer"},
    "aggregate": {"question", "references"},
    "aggregate_system": {"references"},
    "feedback": {"question", "answer", "preference"},
    "corrector": {"question", "answer", "preference", "feedback"},
}


def default_template(name: str) -> str:
    folder = resources.files("multisample.search") / "templates"
    return (folder / f"{name}.txt").read_text(encoding="utf-8")


def load_templates(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The built-in templates with the files named in `overrides` ({name: path}) in
    their place; a missing file, an unknown name or a template that cannot work
    (engine.templates) is a ConfigError."""
    templates = {name: default_template(name) for name in FIELDS}
    for name, path in (overrides or {}).items():
        if name not in FIELDS:
            raise ConfigError(f"templates.{name}: unknown template; known: {', '.join(FIELDS)}")
        try:
            templates[name] = read_template(path, FIELDS[name])
        except ConfigError as exc:
            raise ConfigError(f"templates.{name}: {exc}") from None
    return templates
