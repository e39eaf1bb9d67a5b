"""`tests/mutation_score.py` on a made-up mutmut run: survivors are matched to the list of
equivalent mutants by their change, not their number; an unlisted survivor fails the run;
a listed change that no longer survives is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import mutation_score

SOURCE = """
def x_area__mutmut_orig(width, height):
    return width * height

def x_area__mutmut_1(width, height):
    return width / height

def x_area__mutmut_2(width, height):
    return width * height | 0

def x_area__mutmut_3(width, height):
    return width + height
"""


def run_here(tmp_path: Path, statuses: dict[str, int], rows: list[str]) -> None:
    """A mutants/ folder of one module, its results, and the docs' list."""
    module = tmp_path / "mutants" / "pkg" / "geometry.py"
    module.parent.mkdir(parents=True)
    module.write_text(SOURCE)
    meta = {
        "exit_code_by_key": {f"pkg.geometry.x_area__mutmut_{k}": v for k, v in statuses.items()}
    }
    module.with_suffix(".py.meta").write_text(json.dumps(meta))
    (tmp_path / "docs").mkdir()
    table = "| function | change | why |\n|---|---|---|\n" + "\n".join(rows)
    (tmp_path / "docs" / "TESTING.md").write_text(f"# Testing\n\n{table}\n")


KILLED, SURVIVED = 1, 0  # mutmut's exit codes: a failing test kills the mutant

CHANGE = "-    return width * height ⏎ +    return width * height \\| 0"
EQUIVALENT = f"| `pkg.geometry.x_area` | `{CHANGE}` | integer areas |"


def test_a_listed_change_is_equivalent_whatever_the_mutants_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_here(tmp_path, {1: KILLED, 2: SURVIVED, 3: KILLED}, [EQUIVALENT])
    monkeypatch.chdir(tmp_path)
    assert mutation_score.main(["pkg.*"]) == 0
    assert "1 survivors are listed as equivalent" in capsys.readouterr().out


def test_an_unlisted_survivor_fails_with_its_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Mutant 3 survives; the list names mutant 2's change only (as if 3 had taken the
    # number a listed mutant had before an edit renumbered them: no matter).
    run_here(tmp_path, {1: KILLED, 2: SURVIVED, 3: SURVIVED}, [EQUIVALENT])
    monkeypatch.chdir(tmp_path)
    assert mutation_score.main(["pkg.*"]) == 1
    out = capsys.readouterr().out
    assert "survived: pkg.geometry.x_area__mutmut_3" in out
    assert "+    return width + height" in out
    assert "1 mutants neither caught nor listed" in out


def test_a_listed_change_that_no_longer_survives_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_here(tmp_path, {1: KILLED, 2: KILLED, 3: KILLED}, [EQUIVALENT])
    monkeypatch.chdir(tmp_path)
    assert mutation_score.main(["pkg.*"]) == 0
    out = capsys.readouterr().out
    assert "listed, but no mutant survives with this change" in out
    assert "pkg.geometry.x_area: -    return width * height" in out


def test_a_change_is_one_cell_with_its_pipes_escaped() -> None:
    cell = mutation_score.change("-    a = b | c\n+    a = b & c")
    assert cell == "-    a = b \\| c ⏎ +    a = b & c"
    assert mutation_score.listed(f"| `m.f` | `{cell}` | why |") == {("m.f", cell)}
    assert mutation_score.function_of("m.x_f__mutmut_12") == "m.x_f"
