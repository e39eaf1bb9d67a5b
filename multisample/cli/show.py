"""`multisample show`: a run directory's summary, or one prompt's samples and search tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import networkx as nx
import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from multisample.cli.common import fail, guarded
from multisample.cli.runs import print_synthesize_summary
from multisample.engine.storage import SUMMARY, checked_jsonl, read_document
from multisample.engine.terminal import shown
from multisample.search.base import ROOT
from multisample.search.synthesize.records import SAMPLES, SampleShape, tree_path


def show_command(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    prompt: Annotated[
        str | None, typer.Option(help="Show this prompt's samples, best first.")
    ] = None,
) -> None:
    """Summarize a run directory, or one prompt's samples and search tree."""
    if not (run / SAMPLES).exists():
        fail(f"{run}: not a run directory (no {SAMPLES})")
    guarded(lambda: show_run(run) if prompt is None else show_prompt(run, prompt))


def show_run(run: Path) -> None:
    """The run's summary and its spend per model."""
    summary_path = run / SUMMARY
    console = Console()
    if not summary_path.exists():
        console.print(f"{shown(run)}: incomplete run (no {SUMMARY}); resume it with --resume")
        return
    summary = read_document(summary_path)
    summary["run_dir"] = str(run)
    print_synthesize_summary(summary)
    table = Table("model", "generations", "prompt tokens", "completion tokens", "est. FLOPs")
    for model, spend in summary["spend_per_model"].items():
        table.add_row(
            shown(model),
            f"{spend['generations']:.0f}",
            f"{spend['prompt_tokens']:.0f}",
            f"{spend['completion_tokens']:.0f}",
            f"{spend.get('flops', 0):.3g}",
        )
    console.print(table)


def show_prompt(run: Path, prompt: str) -> None:
    """One prompt's samples, best first, and its search tree."""
    rows = [r for r in checked_jsonl(run / SAMPLES, SampleShape) if r["prompt_id"] == prompt]
    if not rows:
        fail(f"{run}: no samples for prompt {prompt!r}")
    table = Table("id", "model", "action", "parents", "reward", "text", show_lines=True)
    for r in sorted(rows, key=lambda r: -(r["reward"] or 0.0)):
        reward = "-" if r["reward"] is None else f"{r['reward']:.3f}"
        parents = ",".join(map(str, r.get("parents", []))) or "root"
        cells = (r["id"], r["model"], r.get("action", ""), parents, reward, r["text"][:300])
        table.add_row(*map(shown, cells))
    console = Console()
    console.print(table)
    tree_file = run / tree_path(prompt)
    if tree_file.exists():
        console.print(render_tree(read_document(tree_file)))


def render_tree(document: dict[str, Any]) -> Tree:
    """A search tree (networkx node-link) as a rich Tree, children in id order."""
    graph = nx.node_link_graph(document, edges="edges")

    def label(node: Any) -> str:
        data = graph.nodes[node]
        parts = [f"[bold]{shown(node)}[/]", shown(data.get("kind", ""))]
        if data.get("model"):
            parts.append(shown(data["model"]))
        if data.get("reward") is not None:
            parts.append(f"reward {data['reward']:.3f}")
        return " ".join(parts)

    root = ROOT if ROOT in graph else next(n for n in graph if graph.in_degree(n) == 0)
    view = Tree(label(root))
    # A node with several parents (an aggregate) is shown under each of them.
    stack = [(root, view)]
    while stack:
        node, branch = stack.pop()
        for child in sorted(graph.successors(node), key=lambda n: (type(n).__name__, n)):
            stack.append((child, branch.add(label(child))))
    return view
