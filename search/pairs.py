"""Preference pairs from many scored samples of one prompt.

The pure part picks indices from a list of rewards; the record part writes TRL's
conversational DPO format plus both samples' lineage and rewards: `prompt` is the
conversation the model was sent for the original prompt (its system prompt first, when its
spec has one; then a multi-turn prompt's earlier turns; then the user turn), `chosen` and
`rejected` one assistant turn each. Runs made before this wrote TRL's standard (text)
format, a bare instruction and two strings; a resumed old run keeps writing that
(`as_text_format`), so one file never mixes both.

Methods (the "sweet spot" study: chosen = max; the rejected sample nearest mu - 2 sigma
beats the minimum, more so as the number of samples grows):
- `max_min`: chosen = highest reward, rejected = lowest;
- `max_mu_minus_2sigma`: rejected = the sample whose reward is nearest mu - 2 sigma;
- `max_rank_k`: rejected = the k-th best sample (TOA pairs the best with the 30th of 160);
- `min_of_k_random`: rejected = the lowest of k samples drawn at random (seeded).
A pair is kept only when chosen and rejected differ and their reward margin is at least
`min_margin`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from multisample.engine.config import Settings
from multisample.engine.seeds import derive_seed
from multisample.engine.types import Prompt, message_dicts
from multisample.search.base import Candidate, answers

PairMethod = Literal["max_min", "max_mu_minus_2sigma", "max_rank_k", "min_of_k_random"]


class PairSettings(Settings):
    methods: list[PairMethod] = Field(default_factory=lambda: ["max_min", "max_mu_minus_2sigma"])
    """Which rejected-sample rules to apply; each gives at most one pair per prompt."""
    min_margin: float = Field(0.0, ge=0)
    """Drop pairs whose chosen reward exceeds the rejected one by less than this."""
    rank_k: int = Field(2, ge=2)
    """k of max_rank_k (rank 1 is the best sample)."""
    random_k: int = Field(4, ge=1)
    """k of min_of_k_random."""


def _order(rewards: Sequence[float]) -> np.ndarray:
    """Indices from best to worst; ties keep the earlier sample first (stable)."""
    return np.argsort(-np.asarray(rewards, dtype=float), kind="stable")


def rejected_index(
    rewards: Sequence[float], method: PairMethod, settings: PairSettings, seed: int = 0
) -> int | None:
    """Index of the rejected sample under `method`, or None if the method cannot apply."""
    values = np.asarray(rewards, dtype=float)
    n = len(values)
    if n < 2:
        return None
    order = _order(values)
    if method == "max_min":
        return int(order[-1])
    if method == "max_mu_minus_2sigma":
        target = values.mean() - 2 * values.std(ddof=1)
        others = order[1:]  # never the chosen sample itself
        return int(others[np.argmin(np.abs(values[others] - target), axis=0)])
    if method == "max_rank_k":
        return int(order[settings.rank_k - 1]) if settings.rank_k <= n else None
    if method == "min_of_k_random":
        rng = np.random.default_rng(seed)
        others = order[1:]
        drawn = rng.choice(others, size=min(settings.random_k, len(others)), replace=False)
        return int(min(drawn, key=lambda i: (values[i], i)))
    raise ValueError(f"unknown pair method {method!r}")


def select_pairs(
    rewards: Sequence[float], settings: PairSettings, seed: int = 0
) -> list[tuple[PairMethod, int, int]]:
    """(method, chosen index, rejected index) for every method that yields a valid pair."""
    if len(rewards) < 2:
        return []
    chosen = int(_order(rewards)[0])
    pairs = []
    for method in settings.methods:
        rejected = rejected_index(rewards, method, settings, seed)
        if rejected is None or rejected == chosen:
            continue
        if rewards[chosen] - rewards[rejected] < max(settings.min_margin, 1e-12):
            continue  # no preference without a reward gap
        pairs.append((method, chosen, rejected))
    return pairs


def conversation(prompt: Prompt, system_prompt: str | None) -> list[dict[str, str]]:
    """The messages a model is sent for `prompt`: its system prompt (if any), then the
    prompt's turns (a multi-turn prompt's earlier turns, then its user turn)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, *message_dicts(prompt.conversation())]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def is_conversational(record: Mapping[str, Any]) -> bool:
    """A pair in TRL's conversational format (else the older standard text format)."""
    return not isinstance(record["prompt"], str)


def as_text_format(record: dict[str, Any]) -> dict[str, Any]:
    """A conversational pair in the older text format: the bare instruction, two strings."""
    user = [m for m in record["prompt"] if m["role"] == "user"][-1]  # the prompt's own turn
    return {
        **record,
        "prompt": user["content"],
        "chosen": record["chosen"][-1]["content"],
        "rejected": record["rejected"][-1]["content"],
    }


def pair_records(
    prompt: Prompt,
    candidates: Sequence[Candidate],
    settings: PairSettings,
    seed: int = 0,
    system_prompts: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """DPO pairs of one prompt's scored candidates, in TRL's conversational format.

    `system_prompts` maps model names to their spec's system prompt: the pair's prompt is
    the conversation the chosen sample's model was sent for the original prompt.
    """
    system_prompts = system_prompts or {}
    scored = answers(candidates)
    rewards = [c.reward for c in scored]
    records = []
    for method, i, j in select_pairs(rewards, settings, derive_seed(seed, prompt.id, "pairs")):  # type: ignore[arg-type]
        chosen, rejected = scored[i], scored[j]
        records.append(
            {
                "prompt": conversation(prompt, system_prompts.get(chosen.model)),
                "chosen": answer(chosen.text),
                "rejected": answer(rejected.text),
                "prompt_id": prompt.id,
                "method": method,
                "chosen_reward": chosen.reward,
                "rejected_reward": rejected.reward,
                "chosen_id": chosen.id,
                "rejected_id": rejected.id,
                "chosen_model": chosen.model,
                "rejected_model": rejected.model,
                "chosen_action": chosen.action,
                "rejected_action": rejected.action,
            }
        )
    return records
