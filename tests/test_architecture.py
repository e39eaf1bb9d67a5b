"""The layout as docs/ARCHITECTURE.md draws it, checked from the code: every import between
the project's modules (TYPE_CHECKING and function-level ones included) points down the
layers and never round in a circle; every package folder is installed; importing one part
of the package does not load the rest."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"multisample": "multisample", "engine": "multisample.engine"}
FOLDERS |= {"search": "multisample.search", "bandits": "multisample.bandits"}
"""Each source folder at the repository's top and the package it installs as."""

LAYERS = {
    "multisample.engine": {"multisample.engine"},
    "multisample.search": {"multisample.engine", "multisample.search"},
    "multisample.bandits": {"multisample.engine", "multisample.bandits"},
    "multisample.serve": {"multisample.engine", "multisample.search", "multisample.bandits"},
    "multisample.jobs": {
        "multisample.engine",
        "multisample.search",
        "multisample.bandits",
        "multisample.serve",
    },
    "multisample.api": {"multisample.engine", "multisample.jobs", "multisample.serve"},
    "multisample.cli": {
        "multisample.engine",
        "multisample.search",
        "multisample.bandits",
        "multisample.jobs",
        "multisample.version",
    },
}
"""What each part may import besides itself: engine below everything; search and bandits
beside each other, never into one another; the gateway over them; the jobs above; the
command line and the Python API on top, neither importing the other."""


def modules() -> dict[str, Path]:
    """Every project module by its installed name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                if target in known and target != name:
                    graph.add_edge(name, target)
    return graph


def part(module: str) -> str:
    """The layer a module belongs to: its first two name parts (or the facade's own)."""
    return ".".join(module.split(".")[:2])


def test_no_import_circles() -> None:
    circles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert circles == []


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{source} imports {target}"
        for source, target in import_graph().edges
        if part(source) in LAYERS
        and part(target) != part(source)
        and part(target) not in LAYERS[part(source)]
    ]
    assert wrong == []


def test_every_package_folder_is_installed() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert listed == packages
    mapping = pyproject["tool"]["setuptools"]["package-dir"]
    assert mapping == {package: folder for folder, package in FOLDERS.items()}


@pytest.mark.parametrize(
    "module",
    ["multisample", "multisample.engine.rewards.constraints", "multisample.engine.config"],
)
def test_importing_one_part_loads_no_engine(module: str) -> None:
    heavy = ["ray", "vllm", "torch", "transformers", "multisample.engine.pool"]
    script = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_command_line_starts_without_what_only_a_run_needs() -> None:
    """`multisample --help` and a config's errors need neither scipy nor pandas nor vLLM:
    the jobs' run functions and result readers are imported when called (jobs.registry)."""
    heavy = ["scipy", "pandas", "vllm", "torch"]
    script = (
        "import sys\nfrom multisample.cli import main\nsys.argv = ['multisample', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


def test_every_job_names_functions_that_exist() -> None:
    from multisample.bandits.select.loop import run_select
    from multisample.jobs.registry import JOBS
    from multisample.jobs.results import RunResult, SelectResult, ServeResult, SweepResult
    from multisample.search.sweep.run import sweep
    from multisample.search.synthesize.run import synthesize
    from multisample.serve.run import serve

    found = {name: (job.run.resolve(), job.result.resolve()) for name, job in JOBS.items()}
    assert found == {
        "synthesize": (synthesize, RunResult.load),
        "sweep": (sweep, SweepResult.load),
        "select": (run_select, SelectResult.load),
        "serve": (serve, ServeResult.load),
    }
