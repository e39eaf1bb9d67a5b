"""The mutation score of `make mutation`, per module, from mutmut's results in mutants/.

Usage: python tests/mutation_score.py PATTERN... (the mutant name patterns the run was
given; mutants outside them were not run and are not counted).

A mutant the tests kill (or that times out) counts as caught. A surviving mutant must be
listed as equivalent in docs/TESTING.md: a table row of its function (the mutmut name
without its `__mutmut_N` number) and its change (the diff's lines joined by " ⏎ ", pipes
escaped), with the reason. A row is keyed by what the mutant changes, not by its number:
mutmut numbers a function's mutants in order, so an edit renumbers them, and a real
survivor could otherwise inherit a listed name. Any other survivor, or a mutant no
selected test reaches, is printed with its diff and makes the exit status 1; a listed
row that no surviving mutant matches (killed now, or its code changed) is reported, so
the list is kept true.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
DOCS = Path("docs/TESTING.md")
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]+)` \| .* \|$", re.MULTILINE)
"""An equivalent mutant's row: | `function` | `change` | why |."""
JOIN = " ⏎ "


def results(patterns: list[str]) -> dict[str, str]:
    """Status of every mutant whose name matches one of `patterns`."""
    statuses = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                statuses[name] = status_by_exit_code[code]
    return statuses


def module_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def function_of(name: str) -> str:
    """A mutant's function: its name without the `__mutmut_N` number."""
    return name.rsplit("__mutmut_", 1)[0]


def change(diff_text: str) -> str:
    """A diff as one table cell: its lines joined, pipes escaped."""
    return JOIN.join(diff_text.splitlines()).replace("|", "\\|")


def listed(text: str) -> set[tuple[str, str]]:
    """The (function, change) of every equivalent mutant the docs list."""
    return {(function, cell) for function, cell in ROW.findall(text)}


def diff(name: str) -> str:
    """The mutant's changed lines against the original function."""
    module, function = name.rsplit(".", 1)
    source = (MUTANTS / Path(*module.split("."))).with_suffix(".py").read_text()
    bodies = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name, node.name = node.name, "f"  # compare signatures too (default arguments)
            bodies[name] = ast.unparse(node).splitlines()
    original = bodies[function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
    changed = difflib.unified_diff(original, bodies[function], lineterm="", n=0)
    return "\n".join(line for line in changed if line[:1] in "+-" and line[:3] not in "+++---")


def main(patterns: list[str]) -> int:
    statuses = results(patterns)
    if not statuses:
        print("no mutant results: run `make mutation`", file=sys.stderr)
        return 1
    rows = listed(DOCS.read_text(encoding="utf-8")) if DOCS.exists() else set()
    keys = {
        name: (function_of(name), change(diff(name)))
        for name, status in statuses.items()
        if status not in CAUGHT
    }
    equivalent = {name for name, key in keys.items() if key in rows}
    print(f"{'module':<40} {'mutants':>8} {'caught':>7} {'survived':>9} {'no tests':>9}  score")
    per_module: dict[str, Counter[str]] = {}
    for name, status in statuses.items():
        per_module.setdefault(module_of(name), Counter())[status] += 1
    total: Counter[str] = Counter()
    for module, counts in sorted(per_module.items()):
        total.update(counts)
        _row(module, counts)
    _row("all", total)
    unexplained = sorted(
        name for name, status in statuses.items() if status not in CAUGHT and name not in equivalent
    )
    listed_survivors = len(equivalent)
    print(f"\n{listed_survivors} survivors are listed as equivalent in {DOCS}.")
    in_scope = {function_of(name) for name in statuses}
    stale = sorted(r for r in rows - set(keys.values()) if r[0] in in_scope)
    for function, cell in stale:
        print("\nlisted, but no mutant survives with this change (killed now, or changed):")
        print(f"  {function}: {cell}")
    for name in unexplained:
        print(f"\n{statuses[name]}: {name}\n{diff(name)}")
    if unexplained:
        print(f"\n{len(unexplained)} mutants neither caught nor listed as equivalent.")
    return 1 if unexplained else 0


def _row(module: str, counts: Counter[str]) -> None:
    n = sum(counts.values())
    caught = sum(counts[s] for s in CAUGHT)
    print(
        f"{module:<40} {n:>8} {caught:>7} {counts['survived']:>9} {counts['no tests']:>9}"
        f"  {100 * caught / n:5.1f}%"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["*"]))
