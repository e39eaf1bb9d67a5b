"""What a `select` run is given: its config (candidates, policy, where preferences come
from), the checks the schema cannot make, and the inputs the config names (the queries,
the true preference matrix)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, TextIO

import numpy as np
from pydantic import Field, model_validator

from multisample.bandits.policies.co_ucb import CoUCBSettings
from multisample.bandits.policies.registry import POLICIES, PolicySettings
from multisample.engine.config import ConfigError, RunConfig, Settings, VLLMModelSpec, repeated
from multisample.engine.prompts import load_prompts, refuse_two_system_turns
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.rewards.verifiable import VerifiableRewardSpec
from multisample.engine.seeds import derive_seed
from multisample.engine.training import Method, TrainingSettings
from multisample.engine.traps import check_reward_inputs
from multisample.engine.types import Prompt, SamplingSettings

STDIN = "-"


class CandidateSpec(Settings):
    """One arm of the bandit: a pool model, optionally with its own system prompt and
    sampling (variants of one model share its engine)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    """How the history, the win matrix and the adaptation files name this candidate."""
    model: str
    """The pool model that answers."""
    system_prompt: str | None = None
    """A system turn before every query (the model's own spec must not have one)."""
    sampling: SamplingSettings | None = None
    """Overrides the run's (and the model's) sampling settings for this candidate."""


class RewardPreference(Settings):
    """A reward model or judge scores both answers; the higher one is preferred."""

    kind: Literal["reward"] = "reward"
    reward: RewardSpec = Field(default_factory=lambda: VerifiableRewardSpec(kind="verifiable"))
    """How answers are scored (any reward of `synthesize`)."""
    tie_margin: float = Field(0.0, ge=0.0)
    """Scores closer than this are a tie (no preference)."""


class HumanPreference(Settings):
    """A person at the terminal reads both answers side by side and types 1, 2 or t."""

    kind: Literal["human"] = "human"


PreferenceSource = Annotated[RewardPreference | HumanPreference, Field(discriminator="kind")]


class AdaptSettings(TrainingSettings):
    """Online adaptation, the Co-UCB paper's collaborative update: every `every` rounds,
    each candidate that played since its last update trains its LoRA a little on what
    those rounds taught it, and plays the new version from the next round on. The
    training settings are `multisample train`'s (rank, batch_size, ...; alpha is twice
    the rank unless set); two defaults differ, for few steps at a time: the method and
    the learning rate."""

    method: Method = "sft"
    """What a duel teaches both models of the pair: sft, the preferred answer as a target
    (the paper's pseudo-label; its default); dpo, (preferred, other) as a preference pair.
    A single-model round (UCB1, fixed) has no pair: its model trains on its own answers
    the feedback accepts (`accept`), which needs sft."""
    learning_rate: float = Field(1e-4, gt=0)
    """AdamW learning rate of each update. The authors fine-tune every weight at a rate
    about 200 times lower; a LoRA trains a few weights and needs a higher one (ours:
    higher than `train`'s default too, as an update takes a few steps)."""
    schedule: Literal["linear", "constant"] = "constant"
    """The learning rate within an update: constant, as the authors' (one rate for the
    whole stream), or linear decay to zero within each update (`train`'s)."""
    carry_optimizer: bool = True
    """Keep one AdamW across the updates, its state saved with each version and carried
    into the next, as the authors create one optimizer before the stream and keep it;
    False starts a fresh one every update."""
    accept: float | None = 1.0
    """A single-model round (UCB1, fixed) trains its model only on the answers the
    feedback accepts: a reward of at least this (1.0 with the verifiable reward: every
    constraint met), as the authors' UCB1 trains the chosen model only where its answer
    was right. None: on every answer, accepted or not (plain self-training, not theirs)."""
    every: int = Field(1, ge=1)
    """Rounds between updates (the paper: 1, an update after every round)."""
    weights: Literal["lora", "full"] = "lora"
    """What an update trains: lora, a LoRA on every linear layer (`rank`, `alpha`); full,
    every weight, as the authors fine-tune (use a learning rate near theirs, ~5e-7 to
    5e-6). A full version is a whole model folder in float32 (so that small updates are
    not rounded away between versions), served in place of the engine's weights (`serve`
    merged). Every version is kept: 4 bytes per weight, 12 with a carried optimizer's
    two moments; for small models."""
    serve: Literal["auto", "merged", "lora"] = "auto"
    """How a new version is served without restarting the engine. merged: the LoRA merged
    into the base's weights, loaded in place; the model then runs at its base's speed
    (on the CPU a LoRA request runs at ~0.25x), but its engine serves only the adapted
    model, so no other candidate or judge may use it. lora: vLLM multi-LoRA beside the
    base, under the name `<candidate>-adapted`. auto: merged on the CPU, lora on a GPU
    (merged for `weights` full)."""
    candidates: list[str] | None = None
    """The candidates that adapt; None: all of them."""

    def serving(self, spec: VLLMModelSpec) -> Literal["merged", "lora"]:
        if self.serve != "auto":
            return self.serve
        return "merged" if spec.num_gpus == 0 or self.weights == "full" else "lora"

    @model_validator(mode="after")
    def _full_weights_are_merged(self) -> AdaptSettings:
        if self.weights == "full" and self.serve == "lora":
            raise ValueError(
                "adapt.weights full trains every weight, which is served in place of the "
                "engine's own (adapt.serve merged or auto), not as a LoRA"
            )
        return self


def adapter_name(candidate: str) -> str:
    """The pool model name of a candidate's LoRA when it is served beside its base."""
    return f"{candidate}-adapted"


class SelectConfig(RunConfig):
    """Online model selection: candidates, queries, the bandit policy and the feedback."""

    candidates: list[CandidateSpec] = Field(default_factory=list)
    """The arms; empty means one candidate per pool model, named after it."""
    batch: int = Field(16, ge=1)
    """Queries per round, all answered by the round's pair."""
    rounds: int | None = Field(None, ge=1)
    """Rounds to play; the prompts file is cycled (reshuffled each pass) when it holds
    fewer than rounds x batch queries. None: one pass over the queries. `--resume` may
    raise it to play on."""
    policy: PolicySettings = Field(default_factory=CoUCBSettings)
    """The bandit policy; `kind` names it."""
    feedback: PreferenceSource = Field(default_factory=RewardPreference)
    """Where preferences come from."""
    truth: str | None = None
    """A JSON preference matrix {"candidates": [...], "matrix": [[P(i beats j)]]}: with it
    each round records its strong and weak regret."""
    adapt: AdaptSettings | None = None
    """Online adaptation of the candidates; None: they stay as they are."""
    seed: int = 0
    """Seeds the policy, the query order, every generation and every training step."""

    @model_validator(mode="after")
    def _check_candidates(self) -> SelectConfig:
        if not self.candidates:
            self.candidates = [CandidateSpec(name=n, model=n) for n in self.model_names()]
        twice = repeated([c.name for c in self.candidates])
        if twice:
            raise ValueError(f"candidate names must be unique; repeated: {', '.join(twice)}")
        if len(self.candidates) < 2:
            raise ValueError("select needs at least two candidates")
        models = {name: self.model(name) for name in self.model_names()}
        for candidate in self.candidates:
            if candidate.model not in models:
                raise ValueError(
                    f"candidate {candidate.name!r}: no pool model named {candidate.model!r}"
                )
            if candidate.system_prompt and models[candidate.model].system_prompt:
                raise ValueError(
                    f"candidate {candidate.name!r}: model {candidate.model!r} has its own "
                    "system_prompt; give it to the candidate only"
                )
        if self.policy.kind == "fixed" and not 0 <= self.policy.arm < len(self.candidates):
            raise ValueError(f"policy.arm must index a candidate (0..{len(self.candidates) - 1})")
        if self.adapt is not None:
            self._check_adapt(self.adapt)
        return self

    def adapted(self) -> list[CandidateSpec]:
        """The candidates that adapt online, in config order."""
        if self.adapt is None:
            return []
        names = self.adapt.candidates
        return [c for c in self.candidates if names is None or c.name in names]

    def _check_adapt(self, adapt: AdaptSettings) -> None:
        known = [c.name for c in self.candidates]
        for name in adapt.candidates or []:
            if name not in known:
                raise ValueError(f"adapt.candidates: no candidate named {name!r}")
        if adapt.method == "dpo" and POLICIES[self.policy.kind].single_arm:
            raise ValueError(
                f"adapt.method 'dpo' learns from pairs, but policy {self.policy.kind!r} plays "
                "one model a round: use method 'sft' (the model self-trains on its answers)"
            )
        judge = getattr(getattr(self.feedback, "reward", None), "model", None)
        for candidate in self.adapted():
            spec = self.model(candidate.model)
            if not isinstance(spec, VLLMModelSpec):
                raise ValueError(
                    f"adapt: candidate {candidate.name!r} is served by an endpoint; only vLLM "
                    "models (local folders) can be trained and reloaded"
                )
            if adapt.serving(spec) == "lora":
                if not spec.lora_enabled:
                    raise ValueError(
                        f"adapt.serve lora: model {spec.name!r} must start with LoRA support; "
                        "set enable_lora: true on it"
                    )
                if adapt.rank > spec.max_lora_rank:
                    raise ValueError(
                        f"adapt.rank {adapt.rank} is above model {spec.name!r}'s max_lora_rank "
                        f"{spec.max_lora_rank}"
                    )
                if adapter_name(candidate.name) in self.model_names():
                    raise ValueError(
                        f"adapt: {adapter_name(candidate.name)!r} names the adapted candidate "
                        f"{candidate.name!r}; rename the pool model that has this name"
                    )
                continue
            # Merged weights replace the model's own: nothing else may use its engine.
            sharing = [c.name for c in self.candidates if c.model == spec.name]
            if len(sharing) > 1 or judge == spec.name:
                users = ", ".join(sharing + (["the judge"] if judge == spec.name else []))
                raise ValueError(
                    f"adapt.serve merged: model {spec.name!r} is used by {users}; merged "
                    "weights replace its own, so an adapted candidate needs a model of its own "
                    "(or use adapt.serve: lora)"
                )


def check_inputs(config: SelectConfig) -> None:
    """What the config schema cannot see: combinations that would fail mid-run."""
    if config.feedback.kind == "human":
        if POLICIES[config.policy.kind].absolute_feedback:
            raise ConfigError(
                f"policy {config.policy.kind!r} learns from absolute rewards; a person gives "
                "preferences (use feedback kind 'reward', or a dueling policy)"
            )
        if config.prompts == STDIN:
            raise ConfigError(
                "human feedback reads the verdicts from standard input; "
                "queries must come from a prompts file"
            )
    if config.prompts != STDIN:
        prompts = load_prompts(config.prompts, config.limit)  # a bad file fails here
        own = {
            c.name: c.system_prompt or config.model(c.model).system_prompt
            for c in config.candidates
        }
        refuse_two_system_turns(prompts, own, "candidate")
        if isinstance(config.feedback, RewardPreference):
            check_reward_inputs(config.feedback.reward, prompts, "feedback.reward")


def read_truth(path: str, candidates: list[str]) -> np.ndarray:
    """The true preference matrix, reordered to the config's candidates."""
    where = Path(path)
    try:
        data = json.loads(where.read_bytes())
        names = [str(n) for n in data["candidates"]]
        matrix = np.asarray(data["matrix"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a preference matrix file: {exc}") from None
    if sorted(names) != sorted(candidates) or matrix.shape != (len(names),) * 2:
        raise ConfigError(
            f"{where}: a matrix of candidates {names}, but the config has {candidates}"
        )
    if not np.allclose(matrix + matrix.T, 1.0) or ((matrix < 0) | (matrix > 1)).any():
        raise ConfigError(f"{where}: entries must be probabilities with P[i,j] + P[j,i] = 1")
    order = [names.index(c) for c in candidates]
    return matrix[np.ix_(order, order)]


def query_stream(config: SelectConfig, stdin: TextIO) -> Iterator[Prompt]:
    """Queries in play order: the file's (reshuffled on each further pass), or stdin's."""
    if config.prompts == STDIN:
        for number, line in enumerate(stdin, start=1):
            if line.strip():
                yield Prompt(id=f"stdin-{number}", prompt=line.rstrip("\n"))
        return
    prompts = load_prompts(config.prompts, config.limit).prompts
    order, passes = list(prompts), 0
    while True:
        yield from order
        if config.rounds is None:
            return
        passes += 1
        order = list(prompts)
        random.Random(derive_seed(config.seed, "pass", passes)).shuffle(order)
