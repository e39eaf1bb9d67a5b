"""What a synthesize run directory holds, beside what every run directory has
(engine.storage): its files, the records a committed prompt adds to them, and the
summary over every prompt on disk."""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from multisample.engine.budget import estimate_flops
from multisample.engine.storage import RunDirectory
from multisample.engine.types import Prompt

SAMPLES = "samples.jsonl"
"""One record per generation: its prompt, model, lineage, text, reward, tokens, seed."""
PAIRS = "pairs.jsonl"
"""One record per DPO preference pair, in TRL's conversational format."""
PROMPTS = "prompts.jsonl"
"""Each committed prompt as it was read (its turns, reference, constraints, metadata):
what `multisample export` builds its conversations from."""


class SampleShape(BaseModel):
    """The fields of a samples.jsonl record that its readers rely on (others pass)."""

    prompt_id: str
    id: int
    model: str
    text: str
    reward: float | None
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class PairShape(BaseModel):
    """The fields of a pairs.jsonl record that its readers rely on."""

    prompt_id: str
    method: str


class SynthesizeRun(RunDirectory):
    """A synthesize run directory (a sweep's cell too): its record files, which a resume
    repairs, are the samples, the pairs and the prompts."""

    RECORDS = (SAMPLES, PAIRS, PROMPTS)


def with_metadata(prompt: Prompt, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` with the prompt's metadata (the prompts file's unmapped columns), if any."""
    if not prompt.metadata:
        return records
    return [{**record, "metadata": prompt.metadata} for record in records]


def prompt_record(prompt: Prompt) -> dict[str, Any]:
    """A prompts.jsonl record: the prompt as read, its id as `prompt_id` (as every record
    of a run directory names it)."""
    record = prompt.model_dump(mode="json")
    return {"prompt_id": record.pop("id"), **record}


MAX_NAME_BYTES = 200
"""Longest tree file name made from a prompt id (filesystems allow 255 bytes)."""


def tree_path(prompt_id: str) -> str:
    """Relative path of a prompt's tree: the id, quoted (ids may hold any character, file
    names may not); an id too long for a file name by its SHA-256 instead."""
    name = quote(prompt_id, safe="")
    if len(name) > MAX_NAME_BYTES:
        name = "sha256-" + hashlib.sha256(prompt_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"trees/{name}.json"


def summarize(
    run: RunDirectory,
    strategy: str,
    parameters: Callable[[str], float | None],
    wall_s: float,
    gen_tokens: int,
) -> dict[str, Any]:
    """Figures over every prompt on disk (so a resumed run's summary covers all of it)."""
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    spend: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(int))
    for record in run.records(SAMPLES):
        by_prompt[record["prompt_id"]].append(record)
        model = spend[record["model"]]
        model["generations"] += 1
        model["prompt_tokens"] += record["prompt_tokens"]
        model["completion_tokens"] += record["completion_tokens"]
        model["flops"] += estimate_flops(
            parameters(record["model"]), record["prompt_tokens"] + record["completion_tokens"]
        )
    scored = {pid: [r for r in rows if r["reward"] is not None] for pid, rows in by_prompt.items()}
    first = [min(rows, key=lambda r: r["id"])["reward"] for rows in scored.values() if rows]
    best = [max(r["reward"] for r in rows) for rows in scored.values() if rows]
    every = [r["reward"] for rows in scored.values() for r in rows]
    pairs = run.records(PAIRS)
    return {
        "status": "complete",
        "strategy": strategy,
        "prompts": len(by_prompt),
        "samples": sum(len(rows) for rows in by_prompt.values()),
        "pairs": len(pairs),
        "mean_reward_first_sample": statistics.fmean(first) if first else None,
        "mean_reward_best": statistics.fmean(best) if best else None,
        "mean_reward_all": statistics.fmean(every) if every else None,
        "spend_per_model": {m: dict(v) for m, v in sorted(spend.items())},
        "this_session": {
            "wall_s": round(wall_s, 2),
            "completion_tokens": gen_tokens,
            "completion_tokens_per_s": round(gen_tokens / wall_s, 1) if wall_s else None,
        },
    }
