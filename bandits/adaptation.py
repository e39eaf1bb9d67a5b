"""Adaptation data from preferences: the paper's collaborative update, as TRL datasets.

Each strict preference between the answers of a pair teaches *both* candidates: the
preferred answer is a supervised target (TRL's conversational "messages" format) and
the pair is a DPO example ("prompt" / "chosen" / "rejected"). Files are per candidate,
so each can be fine-tuned on its own; a candidate's system prompt is part of its prompt.
`select` with `adapt:` trains on them online (bandits/select/adapt.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multisample.engine.types import Message, message_dicts

ADAPTATION = "adaptation"


def sft_file(candidate: str) -> str:
    return f"{ADAPTATION}/{candidate}.sft.jsonl"


def dpo_file(candidate: str) -> str:
    return f"{ADAPTATION}/{candidate}.dpo.jsonl"


def adaptation_records(
    round_: int,
    query_id: str,
    conversation: Sequence[Message],
    candidates: tuple[str, str],
    system_prompts: tuple[str | None, str | None],
    answers: tuple[str, str],
    preferred: int,
) -> dict[str, list[dict[str, Any]]]:
    """Records by file for one strict preference (`preferred` is 0 or 1); `conversation`
    is the query's turns, each candidate's system prompt goes first."""
    chosen, rejected = answers[preferred], answers[1 - preferred]
    meta = {"round": round_, "query_id": query_id, "source": candidates[preferred]}
    records: dict[str, list[dict[str, Any]]] = {}
    for name, system in zip(candidates, system_prompts, strict=True):
        prompt = message_dicts((*([Message("system", system)] if system else []), *conversation))
        records.setdefault(sft_file(name), []).append(
            {**meta, "messages": [*prompt, {"role": "assistant", "content": chosen}]}
        )
        records.setdefault(dpo_file(name), []).append(
            {
                **meta,
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return records
