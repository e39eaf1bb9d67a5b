"""`multisample train RUN_DIR`: a LoRA adapter for one pool model from a run's pairs.

DPO on the run's preference pairs (the default), or SFT on the best answer of each prompt
(the chosen side of its pairs). The model's weights come from the run's own config.yaml;
the adapter lands in RUN_DIR/adapters/<name>/ as a standard PEFT folder, with
training.json saying what it was trained on and how. The pairs are split by prompt: no
validation prompt's pairs are trained on.

Everything the user may get wrong is checked before anything is written, and the adapter
is trained into a temporary folder renamed at the end: a killed training leaves no half
adapter under the name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field
from rich.console import Console

from multisample.engine.config import OpenAIModelSpec, VLLMModelSpec
from multisample.engine.config_files import load_config
from multisample.engine.locks import lock, unlock
from multisample.engine.model_folders import resolve_model_path
from multisample.engine.storage import CONFIG, PROGRESS, install_folder, read_jsonl
from multisample.engine.training import (
    TRAINING,
    Example,
    TrainingResult,
    TrainingSettings,
    train_adapter,
)
from multisample.engine.types import Message
from multisample.search.pairs import PairMethod, is_conversational
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import PAIRS

ADAPTERS = "adapters"


class TrainInputError(RuntimeError):
    """What the user must fix before training (one line, names the file or option)."""


class TrainOptions(TrainingSettings):
    """What `multisample train` is asked (its command-line options are these fields): how
    the adapter is trained (TrainingSettings), for which model, under which name, on
    which pairs and with which split."""

    model: str | None = None
    """Pool model of the run's config to adapt; its weights come from the run's
    config.yaml. None: the first vLLM chat model the strategy used."""
    name: str | None = None
    """Adapter name: writes RUN/adapters/NAME/. None: MODEL-METHOD."""
    validation: float = Field(0.1, ge=0.0, le=0.9)
    """Share of the prompts held out for the validation loss; split by prompt id, seeded
    by `seed`: no held-out prompt's pairs are trained on."""
    seed: int = 0
    """Seed of the split, the LoRA init and the order."""
    pairs_method: list[str] = Field(default_factory=list)
    """Train only on pairs made by this method (the option repeats), e.g.
    max_mu_minus_2sigma. Empty: all."""
    pairs_from: Literal["own", "all"] = "own"
    """own: only pairs whose two answers the model being trained wrote (on-policy, as the
    sweet-spot recipe and Co-UCB's pseudo-labels learn from the policy's own samples);
    all: other models' answers too (distillation). training.json counts each kind."""
    overwrite: bool = False
    """Replace an existing adapter of that name."""


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    method: str
    example: Example
    chosen_model: str | None = None
    rejected_model: str | None = None
    """Who wrote each answer (None in a run too old to say)."""

    def kind(self, model: str) -> str:
        """own (both answers `model`'s), chosen_other, rejected_other, both_other, or
        unknown."""
        if self.chosen_model is None or self.rejected_model is None:
            return "unknown"
        chosen, rejected = self.chosen_model == model, self.rejected_model == model
        if chosen and rejected:
            return "own"
        return "rejected_other" if chosen else "chosen_other" if rejected else "both_other"


def load_run(run: Path) -> SynthesizeConfig:
    if not (run / CONFIG).is_file():
        raise TrainInputError(f"{run}: not a run directory (no {CONFIG})")
    return load_config(run / CONFIG, SynthesizeConfig)


def pick_model(config: SynthesizeConfig, name: str | None) -> VLLMModelSpec:
    """The spec to adapt: `name`, or the first vLLM chat model the strategy used."""
    names = [m.name for m in config.models]
    if name is None:
        used = config.strategy.models_used(names)
        specs = [config.model(n) for n in used if n in names]
        chat = [s for s in specs if isinstance(s, VLLMModelSpec) and s.prompt_format == "chat"]
        if not chat:
            raise TrainInputError(
                f"--model: the run's strategy used no vLLM chat model ({', '.join(used)}); "
                f"name one of: {', '.join(names)}"
            )
        return chat[0]
    if name not in names:
        raise TrainInputError(f"--model: no model named {name!r} in the run; configured: {names}")
    spec = config.model(name)
    if isinstance(spec, OpenAIModelSpec):
        raise TrainInputError(
            f"--model: {name!r} is an OpenAI endpoint ({spec.base_url}); its weights are not "
            "here to train: choose a vLLM model"
        )
    return spec


def read_pairs(run: Path) -> tuple[list[Pair], str]:
    """The run's committed pairs and their format ('conversational' or 'text', the
    format of runs made before pairs carried the conversation).

    A pair's prompt starts with the system prompt of the model that made the chosen
    answer, when that model has one: it is dropped, as the target adds its own. A system
    turn of the prompt's own (from the data) is kept."""
    path = run / PAIRS
    done = {r["prompt_id"] for r in read_jsonl(run / PROGRESS)}
    generators = load_run(run).system_prompts()
    pairs, formats = [], set()
    for record in read_jsonl(path):
        if record.get("prompt_id") not in done:
            continue  # written by a prompt that was not committed (a crash mid-prompt)
        if is_conversational(record):
            formats.add("conversational")
            turns = [Message(m["role"], m["content"]) for m in record["prompt"]]
            own = generators.get(record.get("chosen_model", ""))
            if own and turns[0] == Message("system", own):
                turns = turns[1:]
            prompt = tuple(turns)
            chosen, rejected = record["chosen"][-1]["content"], record["rejected"][-1]["content"]
        else:
            formats.add("text")
            prompt = (Message("user", record["prompt"]),)
            chosen, rejected = record["chosen"], record["rejected"]
        pairs.append(
            Pair(
                record["prompt_id"],
                record["method"],
                Example(prompt, chosen, rejected),
                record.get("chosen_model"),
                record.get("rejected_model"),
            )
        )
    return pairs, "+".join(sorted(formats)) or "none"


def split_by_prompt(
    prompt_ids: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, validation) prompt ids: a seeded shuffle of the sorted ids, the first
    `fraction` held out (at least one when fraction > 0, never all of them)."""
    ids = sorted(set(prompt_ids))
    random.Random(seed).shuffle(ids)
    held = (
        0
        if fraction <= 0 or len(ids) < 2
        else min(max(1, round(fraction * len(ids))), len(ids) - 1)
    )
    return sorted(ids[held:]), sorted(ids[:held])


def sft_examples(pairs: list[Pair]) -> list[Pair]:
    """One example per prompt: its best answer (the chosen side of its pairs)."""
    first: dict[str, Pair] = {}
    for pair in pairs:
        first.setdefault(pair.prompt_id, pair)
    return [
        Pair(
            p.prompt_id,
            "best",
            Example(p.example.prompt, p.example.chosen),
            p.chosen_model,
            p.chosen_model,
        )
        for p in first.values()
    ]


def method_counts(train: list[Pair], validation: list[Pair]) -> dict[str, dict[str, int]]:
    """Examples per pair method, in training and in validation."""
    trained, held = Counter(p.method for p in train), Counter(p.method for p in validation)
    return {m: {"train": trained[m], "validation": held[m]} for m in sorted(trained | held)}


def config_hash(run: Path) -> str:
    return hashlib.sha256((run / CONFIG).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """Everything `train` needs, checked: nothing is written before it exists."""

    spec: VLLMModelSpec
    folder: Path
    name: str
    target: Path
    train: list[Pair]
    validation: list[Pair]
    train_prompts: list[str]
    validation_prompts: list[str]
    pair_format: str
    kinds: dict[str, int]
    """The run's pairs by who wrote their answers (Pair.kind), before `pairs_from`."""


def plan(run: Path, options: TrainOptions) -> Plan:
    config = load_run(run)
    unknown = set(options.pairs_method) - set(get_args(PairMethod))
    if unknown:
        raise TrainInputError(
            f"--pairs-method: unknown {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(get_args(PairMethod))}"
        )
    spec = pick_model(config, options.model)
    name = options.name or f"{spec.name}-{options.method}"
    if not name or "/" in name or name.startswith("."):
        raise TrainInputError(f"--name: {name!r} is not a folder name")
    target = run / ADAPTERS / name
    if target.exists() and not options.overwrite:
        raise TrainInputError(
            f"{target}: an adapter of that name exists; pass --overwrite or another --name"
        )
    pairs, pair_format = read_pairs(run)
    if not pairs:
        raise TrainInputError(f"{run / PAIRS}: the run has no pairs to train on")
    own = next((p for p in pairs if p.example.prompt[0].role == "system"), None)
    if own is not None and spec.system_prompt:
        raise TrainInputError(
            f"{run / PAIRS}: prompt {own.prompt_id!r} has a system turn of its own, and "
            f"model {spec.name!r} has a system_prompt: a conversation takes one; train a "
            "model without one"
        )
    if options.pairs_method:
        pairs = [p for p in pairs if p.method in options.pairs_method]
        if not pairs:
            raise TrainInputError(
                f"--pairs-method: no pairs made by {', '.join(options.pairs_method)} "
                f"in {run / PAIRS}"
            )
    kinds = dict(sorted(Counter(p.kind(spec.name) for p in pairs).items()))
    if options.pairs_from == "own":
        pairs = [p for p in pairs if p.kind(spec.name) == "own"]
        if not pairs:
            raise TrainInputError(
                f"--pairs-from own: no pair of {run / PAIRS} has two answers of model "
                f"{spec.name!r} (its pairs by author: {kinds}); train on other models' "
                "answers with --pairs-from all"
            )
    if options.method == "sft":
        pairs = sft_examples(pairs)
    missing = [m for m in ("trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainInputError(
            f"training needs {' and '.join(missing)}: install the train extra "
            "(pip install 'multisample[train]')"
        )
    seed = options.seed
    train_ids, validation_ids = split_by_prompt(
        [p.prompt_id for p in pairs], options.validation, seed
    )
    held = set(validation_ids)
    return Plan(
        spec=spec,
        folder=resolve_model_path(spec.model),
        name=name,
        target=target,
        train=[p for p in pairs if p.prompt_id not in held],
        validation=[p for p in pairs if p.prompt_id in held],
        train_prompts=train_ids,
        validation_prompts=validation_ids,
        pair_format=pair_format,
        kinds=kinds,
    )


def training_record(
    run: Path, ready: Plan, options: TrainOptions, result: TrainingResult
) -> dict[str, Any]:
    """training.json: what the adapter was trained on, how, and how long it took."""
    return {
        "adapter": ready.name,
        "method": options.method,
        "source_run": str(run.resolve()),
        "config_sha256": config_hash(run),
        "base_model": {
            "name": ready.spec.name,
            "model": ready.spec.model,
            "folder": str(ready.folder),
            "prompt_format": ready.spec.prompt_format,
            "system_prompt": ready.spec.system_prompt,
        },
        "pairs": {
            "file": PAIRS,
            "format": ready.pair_format,
            "methods_filter": list(options.pairs_method) or None,
            "from": options.pairs_from,
            "by_author": ready.kinds,
            "train": len(ready.train),
            "validation": len(ready.validation),
            "methods": method_counts(ready.train, ready.validation),
        },
        "prompts": {"train": ready.train_prompts, "validation": ready.validation_prompts},
        "validation_fraction": options.validation,
        "hyperparameters": options.record(options.seed),
        "seed": options.seed,
        "steps": result.steps,
        "loss_curve": result.loss_curve,
        "validation_loss": result.validation_loss,
        "seconds": result.seconds,
        "train_seconds": result.train_seconds,
        "examples_seen": result.examples_seen,
        "seconds_per_example": round(result.train_seconds / max(result.examples_seen, 1), 3),
        "versions": result.versions,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def train_run(run: Path, options: TrainOptions, console: Console | None = None) -> dict[str, Any]:
    """Train the adapter `options` describe from `run`'s pairs; return training.json."""
    ready = plan(run, options)
    adapters = run / ADAPTERS
    adapters.mkdir(exist_ok=True)
    held = lock(adapters / f".{ready.name}.lock", wait=False)
    if held is None:
        raise TrainInputError(f"{ready.target}: another process is training this adapter")
    try:
        for stale in [
            *adapters.glob(f".{ready.name}.partial-*"),
            *adapters.glob(f".{ready.name}.old-*"),
        ]:  # left by a training killed before its rename
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(dir=adapters, prefix=f".{ready.name}.partial-"))
        try:
            result = train_adapter(
                ready.folder,
                [p.example for p in ready.train],
                [p.example for p in ready.validation],
                options,
                partial,
                seed=options.seed,
                prompt_format=ready.spec.prompt_format,
                system_prompt=ready.spec.system_prompt,
                console=console,
            )
            record = training_record(run, ready, options, result)
            text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
            (partial / TRAINING).write_text(text, encoding="utf-8")
            install_folder(partial, ready.target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        unlock(held)
    return record
