"""`multisample train` and `multisample export`: adapters and training sets from a finished
synthesize run (multisample.jobs.train, multisample.jobs.export). `train`'s options are
derived from its settings class, `TrainOptions`, which select's `adapt:` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from multisample.cli.common import fail, guarded
from multisample.cli.options import parse_options, with_options
from multisample.engine.terminal import STDERR, shown
from multisample.jobs.train import TrainInputError, TrainOptions, train_run


@with_options(TrainOptions)
def train_command(
    run: Annotated[Path, typer.Argument(help="A synthesize run directory (with pairs.jsonl).")],
    **options: Any,
) -> None:
    """Train a LoRA adapter on a run's pairs (DPO, or SFT on the best answers).

    Writes RUN/adapters/NAME/ atomically: a PEFT adapter folder
    (adapter_config.json, adapter_model.safetensors) that vLLM serves beside
    its base, and training.json (source run and config hash, pairs per method,
    hyperparameters, seed, loss curve, validation loss, seconds, versions).
    Needs the `train` extra (TRL, PEFT).
    """
    settings = parse_options(TrainOptions, options)

    def body() -> dict[str, Any]:
        try:
            return train_run(run, settings, STDERR)
        except TrainInputError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; no adapter was written", code=130)

    record = guarded(body)
    console = Console(soft_wrap=True)
    curve = record["loss_curve"]
    console.print(f"[bold]adapter:[/] {shown(run / 'adapters' / record['adapter'])}")
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
    from multisample.jobs.export import ExportInputError, ExportOptions, export_run, parse_split

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
    console.print(f"[bold]export:[/] {shown(run / 'export')}")
    for name, rows in manifest["rows"].items():
        console.print(f"{name}: {rows} rows")
    console.print(
        f"{len(manifest['train_prompts'])} train / {len(manifest['test_prompts'])} test prompts"
    )
