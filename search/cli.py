"""`multisample synthesize`, `sweep` and `show`, added to the engine's command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import networkx as nx
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from engine.cli import OutputDir, Overrides, Resume, RunName, fail, guarded, run_target
from engine.config import load_config
from engine.prompts import load_prompts
from engine.storage import SUMMARY, read_jsonl
from engine.terminal import STDERR
from engine.traps import warn
from search.base import ROOT
from search.sweep import SweepConfig, sweep
from search.synthesize import SAMPLES, SynthesizeConfig, synthesize, tree_path
from search.traps import search_traps


def register(app: typer.Typer, config_kinds: dict[str, type[BaseModel]]) -> None:
    config_kinds["synthesize"] = SynthesizeConfig
    config_kinds["sweep"] = SweepConfig
    app.command("synthesize")(synthesize_command)
    app.command("sweep")(sweep_command)
    app.command("show")(show_command)
    app.command("train")(train_command)
    app.command("export")(export_command)


def synthesize_command(
    config: Annotated[Path, typer.Argument(help="YAML config (see `multisample config schema`).")],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
) -> None:
    """Run a search strategy over a prompts file; write samples, DPO pairs and trees."""

    def body() -> dict[str, Any]:
        settings = load_config(config, SynthesizeConfig, overrides or ())
        if limit is not None:
            settings = settings.model_copy(update={"limit": limit})
        run_path, resuming = run_target(config, output_dir, settings.output_dir, name, resume)
        prompts = load_prompts(settings.prompts, settings.limit).prompts
        warn(search_traps(settings, [("strategy", settings.strategy)], prompts))
        summary = asyncio.run(synthesize(settings, run_path, resume=resuming, console=STDERR))
        summary["run_dir"] = str(run_path)
        return summary

    summary = guarded(body)
    print_summary(summary)


def sweep_command(
    config: Annotated[Path, typer.Argument(help="YAML sweep config (`config schema sweep`).")],
    name: RunName = None,
    output_dir: OutputDir = None,
    resume: Resume = None,
    overrides: Overrides = None,
) -> None:
    """Methods x budgets x seeds over one prompts file: quality against compute."""

    def body() -> dict[str, Any]:
        settings = load_config(config, SweepConfig, overrides or ())
        path, resuming = run_target(config, output_dir, settings.output_dir, name, resume)
        prompts = load_prompts(settings.prompts, settings.limit).prompts
        methods = enumerate(settings.methods)
        strategies = [(f"methods[{i}].strategy", method.strategy) for i, method in methods]
        warn(search_traps(settings, strategies, prompts))
        summary = asyncio.run(sweep(settings, path, resume=resuming, console=STDERR))
        summary["sweep_dir"] = str(path)
        return summary

    summary = guarded(body)
    console = Console()
    console.print(f"[bold]sweep:[/] {summary['sweep_dir']}")
    console.print(
        f"{summary['cells']} cells ({len(summary['methods'])} methods x "
        f"{len(summary['budgets'])} budgets x {len(summary['seeds'])} seeds), "
        f"{summary['prompts']} prompts each"
    )
    console.print("best reward at each budget (lead over the runner-up, paired t-test):")
    for lead in summary["best_per_budget"].get("best_reward", []):
        line = f"  {lead['budget']:>4} generations: {lead['method']} {lead['mean']:.3f}"
        if lead["runner_up"] is not None and lead["p_value"] is not None:
            verdict = "significant" if lead["significant"] else "not significant"
            line += (
                f" ({lead['lead']:+.3f} over {lead['runner_up']}, "
                f"p = {lead['p_value']:.2g}, {verdict})"
            )
        console.print(line, soft_wrap=True)
    console.print(f"report: {Path(summary['sweep_dir']) / 'report.md'}")


def train_command(
    run: Annotated[Path, typer.Argument(help="A synthesize run directory (with pairs.jsonl).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Pool model of the run's config to adapt; its weights come from the run's "
            "config.yaml. Default: the first vLLM chat model the strategy used."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Adapter name: writes RUN/adapters/NAME/ (default: MODEL-METHOD)."),
    ] = None,
    method: Annotated[
        Literal["dpo", "sft"],
        typer.Option(
            help="dpo: on the preference pairs; sft: on the best answer of each prompt "
            "(the chosen side of its pairs)."
        ),
    ] = "dpo",
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the training pairs.")] = 1.0,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after N optimizer steps (overrides --epochs).")
    ] = None,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 5e-5,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank (on every linear layer).")] = 16,
    alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha (scale = alpha / rank).")] = 32,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per optimizer step.")] = 4,
    beta: Annotated[float, typer.Option(min=0.0, help="DPO's KL weight (dpo only).")] = 0.1,
    max_length: Annotated[
        int, typer.Option(min=16, help="Tokens kept per example (prompt + answer).")
    ] = 384,
    validation: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of the prompts held out for the validation loss; split by prompt "
            "id, seeded by --seed: no held-out prompt's pairs are trained on.",
        ),
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split, the LoRA init and the order.")] = 0,
    pairs_method: Annotated[
        list[str] | None,
        typer.Option(
            "--pairs-method",
            help="Train only on pairs made by this method (repeatable), e.g. "
            "max_mu_minus_2sigma. Default: all.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing adapter of that name.")
    ] = False,
) -> None:
    """Train a LoRA adapter on a run's pairs (DPO, or SFT on the best answers).

    Writes RUN/adapters/NAME/ atomically: a PEFT adapter folder
    (adapter_config.json, adapter_model.safetensors) that vLLM serves beside
    its base, and training.json (source run and config hash, pairs per method,
    hyperparameters, seed, loss curve, validation loss, seconds, versions).
    Needs the `train` extra (TRL, PEFT).
    """
    from engine.training import Hyperparameters
    from search.train import TrainInputError, TrainOptions, train_run

    options = TrainOptions(
        model=model,
        name=name,
        hyperparameters=Hyperparameters(
            method=method,
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            rank=rank,
            alpha=alpha,
            batch_size=batch_size,
            beta=beta,
            max_length=max_length,
            seed=seed,
        ),
        validation=validation,
        pair_methods=tuple(pairs_method or ()),
        overwrite=overwrite,
    )

    def body() -> dict[str, Any]:
        try:
            return train_run(run, options, STDERR)
        except TrainInputError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; no adapter was written", code=130)

    record = guarded(body)
    console = Console(soft_wrap=True)
    curve = record["loss_curve"]
    console.print(f"[bold]adapter:[/] {run / 'adapters' / record['adapter']}")
    console.print(
        f"{record['method']} on {record['base_model']['name']}: {record['pairs']['train']} "
        f"training / {record['pairs']['validation']} validation examples, "
        f"{record['steps']} step{'s' * (record['steps'] != 1)} in {record['train_seconds']:.0f} s "
        f"({record['seconds_per_example']:.2f} s per example)"
    )
    if curve:
        line = f"loss {curve[0]['loss']:.4f} -> {curve[-1]['loss']:.4f}"
        if record["validation_loss"] is not None:
            line += f", validation loss {record['validation_loss']:.4f}"
        console.print(line)


def export_command(
    run: Annotated[Path, typer.Argument(help="A synthesize run directory (or a sweep cell).")],
    sft: Annotated[
        bool,
        typer.Option(
            "--sft",
            help="Export the best sample of each prompt as a TRL conversation "
            "(`messages`: system prompt, the prompt's turns, the answer).",
        ),
    ] = False,
    pairs: Annotated[
        bool, typer.Option("--pairs", help="Export the preference pairs, split the same way.")
    ] = False,
    split: Annotated[
        str | None,
        typer.Option(
            help="Hold out a share of the prompts: test=FRACTION (e.g. test=0.1). Split by "
            "prompt id, seeded by --seed, as `train` splits. Default: all in train.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
) -> None:
    """Write a run's data as training sets into RUN/export/, split by prompt.

    --sft writes sft-train.jsonl (and sft-test.jsonl), --pairs writes
    pairs-train.jsonl (and pairs-test.jsonl); neither flag: both. split.json
    lists each split's prompt ids. The folder is replaced whole, and the run's
    dataset card (README.md) then lists the files for `datasets.load_dataset`.
    """
    from search.export import ExportInputError, ExportOptions, export_run, parse_split

    def body() -> dict[str, Any]:
        try:
            test = 0.0 if split is None else parse_split(split)
            options = ExportOptions(
                sft=sft or not pairs, pairs=pairs or not sft, test=test, seed=seed
            )
            return export_run(run, options)
        except ExportInputError as exc:
            fail(str(exc))

    manifest = guarded(body)
    console = Console(soft_wrap=True)
    console.print(f"[bold]export:[/] {run / 'export'}")
    for name, rows in manifest["rows"].items():
        console.print(f"{name}: {rows} rows")
    console.print(
        f"{len(manifest['train_prompts'])} train / {len(manifest['test_prompts'])} test prompts"
    )


def print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    first, best = summary["mean_reward_first_sample"], summary["mean_reward_best"]
    console.print(f"[bold]run:[/] {summary['run_dir']}")
    console.print(
        f"{summary['prompts']} prompts, {summary['samples']} samples, {summary['pairs']} DPO pairs "
        f"({summary['strategy']})"
    )
    if first is not None and best is not None:
        console.print(
            f"mean reward: first sample {first:.3f} -> best of the search {best:.3f} "
            f"({best - first:+.3f})"
        )
    rate = summary["this_session"]["completion_tokens_per_s"]
    if rate:
        console.print(f"generated {rate:,.0f} tokens/s")


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
            print_summary(summary)
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
