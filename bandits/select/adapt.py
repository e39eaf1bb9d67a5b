"""Online adaptation in `select`: the Co-UCB paper's collaborative update.

After every `adapt.every` rounds, each adapted candidate that learned something since its
last update trains its LoRA further (a new version), which is then served without an
engine restart and played from the next round on:
- from a duel, both candidates of the pair learn from the preferred answer (sft, the
  paper's pseudo-label) or from (preferred, other) (dpo): the adaptation/ files;
- from a single-model round (UCB1, fixed), the model trains on its own answers that the
  feedback accepted (the authors' UCB1 baseline trains only where its answer was right;
  `accept: null` trains on every answer, plain self-training).

Serving and training take turns on the machine: a round generates (the engines busy), then
the update trains in this process (the engines idle), so the two never compete for cores.
Each version is written to its own folder and committed in state.json before the next is
trained, so a killed run retrains at most the version it was writing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from multisample.bandits.adaptation import dpo_file, sft_file
from multisample.bandits.select.config import (
    AdaptSettings,
    CandidateSpec,
    SelectConfig,
    adapter_name,
)
from multisample.bandits.select.state import (
    ANSWERS,
    AdapterVersion,
    SelectRun,
    SelectState,
    merged_folder,
    version_folder,
)
from multisample.engine.config import VLLMModelSpec
from multisample.engine.model_folders import resolve_model_path
from multisample.engine.pool import ModelPool
from multisample.engine.seeds import derive_seed
from multisample.engine.storage import install_folder, read_jsonl, write_atomic
from multisample.engine.training import TRAINING, Example, TrainingResult, TrainingSettings
from multisample.engine.types import Message


@dataclass(frozen=True)
class TrainingJob:
    """One new adapter version to train: what the trainer needs, nothing of the run."""

    base: Path
    """The candidate's base model folder."""
    examples: list[Example]
    settings: TrainingSettings
    seed: int
    start_from: Path | None
    """The previous version's folder; None trains a new LoRA."""
    output: Path
    prompt_format: Literal["chat", "base"]
    system_prompt: str | None
    """The model's own system prompt (a candidate's is in the examples' prompts)."""
    carry_optimizer: bool = False
    """Save the optimizer's state with the version, and start from the previous one's."""
    full: bool = False
    """Train every weight (the version is a whole model folder), not a LoRA."""


Trainer = Callable[[TrainingJob], TrainingResult]
"""Writes a PEFT LoRA folder (a model folder with job.full) to job.output (blocking; it
runs in a worker thread)."""
Merger = Callable[[Path, Path, Path], None]
"""(base, adapter, output): writes the base's weights with the adapter merged in."""


def train_with_trl(job: TrainingJob) -> TrainingResult:
    from multisample.engine.training import train_adapter

    return train_adapter(
        job.base,
        job.examples,
        [],
        job.settings,
        job.output,
        seed=job.seed,
        prompt_format=job.prompt_format,
        system_prompt=job.system_prompt,
        start_from=job.start_from,
        progress=False,  # select's own bar says what is training
        carry_optimizer=job.carry_optimizer,
        full=job.full,
    )


def merge_with_peft(base: Path, adapter: Path, output: Path) -> None:
    from multisample.engine.training import merge_adapter

    merge_adapter(base, adapter, output)


def _turns(messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in messages)


def duel_examples(
    run: Path, candidate: str, method: str, after: int, through: int
) -> list[Example]:
    """What a candidate's duels of rounds after..through taught it (adaptation files)."""
    if method == "dpo":
        return [
            Example(_turns(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"])
            for r in _rows(run / dpo_file(candidate), after, through)
        ]
    return [
        Example(_turns(r["messages"][:-1]), r["messages"][-1]["content"])
        for r in _rows(run / sft_file(candidate), after, through)
    ]


def own_examples(
    run: Path, candidate: CandidateSpec, after: int, through: int, accept: float | None
) -> list[Example]:
    """A candidate's own answers in its single-model rounds of after..through that the
    feedback accepts (a reward of at least `accept`; every answer when it is None)."""
    system = (Message("system", candidate.system_prompt),) if candidate.system_prompt else ()
    return [
        Example(
            (*system, *_turns(r.get("history", [])), Message("user", r["prompt"])),
            r["first_answer"],
        )
        for r in _rows(run / ANSWERS, after, through)
        if r["first"] == r["second"] == candidate.name
        and (accept is None or (r["first_score"] is not None and r["first_score"] >= accept))
    ]


def _rows(path: Path, after: int, through: int) -> Iterator[dict[str, Any]]:
    if path.exists():
        yield from (r for r in read_jsonl(path) if after < r["round"] <= through)


class Adaptation:
    """The adapted candidates of one `select` run: which model serves each, and their
    updates. `trainer` and `merger` are the real TRL / PEFT ones unless a test swaps them."""

    def __init__(
        self,
        config: SelectConfig,
        pool: ModelPool,
        run: SelectRun,
        trainer: Trainer = train_with_trl,
        merger: Merger = merge_with_peft,
    ) -> None:
        assert config.adapt is not None
        self.settings: AdaptSettings = config.adapt
        self.config = config
        self.pool = pool
        self.run = run
        self.trainer = trainer
        self.merger = merger
        self.candidates = {c.name: c for c in config.adapted()}
        self.served: dict[str, str] = {c.name: c.model for c in config.candidates}
        """The pool model that answers for each candidate: its adapter once it has one."""

    def spec(self, candidate: str) -> VLLMModelSpec:
        spec = self.config.model(self.candidates[candidate].model)
        assert isinstance(spec, VLLMModelSpec)  # the config refuses endpoints
        return spec

    async def restore(self, state: SelectState) -> None:
        """Serve each candidate's committed version (a resumed run on fresh engines)."""
        for name, adapter in state.adapters.items():
            await self.load_version(name, adapter.version)

    async def update(self, state: SelectState, say: Callable[[str], None]) -> None:
        """Train and serve a new version of every adapted candidate with something new to
        learn, when the committed round is due; each version is committed on its own."""
        if state.round == 0 or state.round % self.settings.every:
            return
        for name in self.candidates:
            after = state.trained_through(name)
            examples = self.examples(name, after, state.round)
            if not examples:  # also where it is trained through this round already
                continue
            version = state.version(name) + 1
            say(f"training {name} v{version} on {len(examples)} examples")
            record = await self.train(name, version, examples, after, state.round)
            started = time.perf_counter()
            await self.load_version(name, version)
            record["serve_seconds"] = round(time.perf_counter() - started, 2)
            folder = version_folder(self.run.path, name, version)
            write_atomic(folder / TRAINING, json.dumps(record, indent=1) + "\n")
            state.adapters[name] = AdapterVersion(version, state.round)
            self.run.commit_state(state)

    def examples(self, name: str, after: int, through: int) -> list[Example]:
        candidate = self.candidates[name]
        duels = duel_examples(self.run.path, name, self.settings.method, after, through)
        own = own_examples(self.run.path, candidate, after, through, self.settings.accept)
        return duels + own if self.settings.method == "sft" else duels

    def seed(self, name: str, version: int) -> int:
        """The training seed of a candidate's version (its LoRA init and example order)."""
        return derive_seed(self.config.seed, "adapt", name, version)

    async def train(
        self, name: str, version: int, examples: list[Example], after: int, through: int
    ) -> dict[str, Any]:
        """Train version `version` into its folder (written whole, then renamed); return
        its training.json record (`update` adds how long serving took and writes it)."""
        spec = self.spec(name)
        folder = version_folder(self.run.path, name, version)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a try cut short; a whole one is replaced
        settings, seed = self.settings, self.seed(name, version)
        job = TrainingJob(
            base=resolve_model_path(spec.model),
            examples=examples,
            settings=settings,
            seed=seed,
            start_from=version_folder(self.run.path, name, version - 1) if version > 1 else None,
            output=partial,
            prompt_format=spec.prompt_format,
            system_prompt=spec.system_prompt,
            carry_optimizer=settings.carry_optimizer,
            full=settings.weights == "full",
        )
        result = await asyncio.to_thread(self.trainer, job)
        record = {
            "candidate": name,
            "version": version,
            "rounds": [after + 1, through],
            "examples": len(examples),
            "method": settings.method,
            "hyperparameters": {**settings.record(seed), "weights": settings.weights},
            "start_from": None if version == 1 else f"v{version - 1}",
            "steps": result.steps,
            "loss_curve": result.loss_curve,
            "seconds": result.seconds,
            "train_seconds": result.train_seconds,
            "versions": result.versions,
        }
        install_folder(partial, folder)
        return record

    async def load_version(self, name: str, version: int) -> None:
        """Serve version `version` of a candidate from now on: its LoRA merged into its
        model's weights or beside them as an adapter; fully trained weights in place."""
        spec = self.spec(name)
        folder = version_folder(self.run.path, name, version)
        if self.settings.weights == "full":
            await self.pool.load_weights(spec.name, folder)
        elif self.settings.serving(spec) == "lora":
            await self.pool.add_adapter(spec.name, adapter_name(name), folder, version)
            self.served[name] = adapter_name(name)
        else:
            merged = merged_folder(self.run.path, name)
            partial = merged.with_name(merged.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            base = resolve_model_path(spec.model)
            await asyncio.to_thread(self.merger, base, folder, partial)
            install_folder(partial, merged)
            await self.pool.load_weights(spec.name, merged)
