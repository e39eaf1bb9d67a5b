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

from bandits.policies import POLICIES, CoUCBSettings, PolicySettings
from engine.config import ConfigError, RunConfig, Settings, repeated
from engine.prompts import load_prompts
from engine.rewards import RewardSpec
from engine.rewards.verifiable import VerifiableRewardSpec
from engine.seeds import derive_seed
from engine.types import Prompt, SamplingSettings

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
    seed: int = 0
    """Seeds the policy, the query order and every generation."""

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
        return self


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
        load_prompts(config.prompts, config.limit)  # a bad file fails before engines start


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
