"""The mutation score of `make mutation`, per module, from mutmut's results in mutants/.

Usage: python tests/mutation_score.py PATTERN... (the mutant name patterns the run was
given; mutants outside them were not run and are not counted).

A mutant the tests kill (or that times out) counts as caught. A surviving mutant must be
listed as equivalent in docs/TESTING.md (its mutmut name in backticks, with the reason);
any other survivor, or a mutant no selected test reaches, is printed with its diff and
makes the exit status 1.
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
NAME = re.compile(r"`([\w.]+__mutmut_\d+)`")


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
    equivalent = set(NAME.findall(DOCS.read_text())) if DOCS.exists() else set()
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
    listed = sum(
        1 for name, status in statuses.items() if status not in CAUGHT and name in equivalent
    )
    print(f"\n{listed} survivors are listed as equivalent in {DOCS}.")
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
