from __future__ import annotations

import re
from pathlib import Path

import pytest

from multisample.engine.config import ConfigError
from multisample.search.templates import FIELDS, load_templates


def test_built_in_templates_use_only_their_fields() -> None:
    import string

    templates = load_templates()
    assert set(templates) == set(FIELDS)
    for name, text in templates.items():
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        assert used == FIELDS[name], name


def test_an_override_replaces_one_template(tmp_path: Path) -> None:
    path = tmp_path / "refine.txt"
    path.write_text("Improve: {answer} (for {question})", encoding="utf-8")
    templates = load_templates({"refine": str(path)})
    assert templates["refine"].format(answer="A", question="Q") == "Improve: A (for Q)"
    assert templates["aggregate"] == load_templates()["aggregate"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("nope", "x", "templates.nope: unknown template"),
        ("refine", "{answer} {typo}", "unknown field(s) {typo}"),
    ],
)
def test_bad_overrides_are_config_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_templates({name: str(path)})


def test_a_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"templates\.refine: cannot read"):
        load_templates({"refine": str(tmp_path / "missing.txt")})
