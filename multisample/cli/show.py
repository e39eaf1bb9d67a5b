"""`multisample show`: a run directory's summary, or one prompt's samples and search tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import networkx as nx
import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from multisample.cli.common import fail
from multisample.cli.runs import print_synthesize_summary
from multisample.engine.storage import SUMMARY, read_jsonl
from multisample.search.base import ROOT
from multisample.search.synthesize.records import SAMPLES, tree_path


def show_command(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    prompt: Annotated[
        str | None, typer.Option(help="Show this prompt's samples, best first.")
    ] = None,
) -> None:
    """Summarize a run directory, or one prompt's samples and search tree."""
    summary_path = run / SUMMARY
    if not (run / SAMPLES).exists():
        fail(f"{run}: not a run directory (no {SAMPLES})")
    console = Console()
    if prompt is None:
        if summary_path.exists():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            summary["run_dir"] = str(run)
            print_synthesize_summary(summary)
            table = Table(
                "model", "generations", "prompt tokens", "completion tokens", "est. FLOPs"
            )
            for model, spend in summary["spend_per_model"].items():
                table.add_row(
                    model,
                    f"{spend['generations']:.0f}",
                    f"{spend['prompt_tokens']:.0f}",
                    f"{spend['completion_tokens']:.0f}",
                    f"{spend.get('flops', 0):.3g}",
                )
            console.print(table)
        else:
            console.print(f"{run}: incomplete run (no {SUMMARY}); resume it with --resume")
        return
    rows = [r for r in read_jsonl(run / SAMPLES) if r["prompt_id"] == prompt]
    if not rows:
        fail(f"{run}: no samples for prompt {prompt!r}")
    table = Table("id", "model", "action", "parents", "reward", "text", show_lines=True)
    for r in sorted(rows, key=lambda r: -(r["reward"] or 0.0)):
        reward = "-" if r["reward"] is None else f"{r['reward']:.3f}"
        parents = ",".join(map(str, r["parents"])) or "root"
        table.add_row(str(r["id"]), r["model"], r["action"], parents, reward, r["text"][:300])
    console.print(table)
    tree_file = run / tree_path(prompt)
    if tree_file.exists():
        console.print(render_tree(json.loads(tree_file.read_text(encoding="utf-8"))))


def render_tree(document: dict[str, Any]) -> Tree:
    """A search tree (networkx node-link) as a rich Tree, children in id order."""
    graph = nx.node_link_graph(document, edges="edges")

    def label(node: Any) -> str:
        data = graph.nodes[node]
        parts = [f"[bold]{node}[/]", str(data.get("kind", ""))]
        if data.get("model"):
            parts.append(str(data["model"]))
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
