"""A sweep's separate evaluation: with `eval_reward`, once every search is done, the
evaluation reward (started once for the sweep) scores every scored sample, prompt by
prompt, into `cells/<cell>/eval_scores.jsonl` beside the cell's samples, so `--resume`
continues it too."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console

from multisample.engine.pool import ModelPool
from multisample.engine.prompts import PromptFile
from multisample.engine.rewards.base import started_reward
from multisample.engine.run_session import run_all
from multisample.engine.storage import SUMMARY, append_records, cut_torn_line, read_jsonl
from multisample.search.sweep.config import SweepConfig, cell_path
from multisample.search.synthesize.records import SAMPLES

EVAL_SCORES = "eval_scores.jsonl"
"""A cell's evaluation scores, one line per prompt: {"prompt_id", "scores": {id: score}}."""


def searches_done(config: SweepConfig, path: Path) -> bool:
    """Is every cell's search complete on disk (its summary written), and evaluated when
    the sweep has an `eval_reward`?"""
    return all((cell_path(path, c) / SUMMARY).exists() for c in config.searches()) and not any(
        unevaluated(config, cell_path(path, c)) for c in config.searches()
    )


def unevaluated(config: SweepConfig, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """A cell's answers (scored samples, not partial solutions) by prompt, of the prompts
    the evaluation reward has not scored yet (none without an `eval_reward`)."""
    if config.eval_reward is None:
        return {}
    done = {r["prompt_id"] for r in read_jsonl(folder / EVAL_SCORES)}
    todo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_jsonl(folder / SAMPLES):
        answer = sample["reward"] is not None and not sample.get("partial", False)
        if sample["prompt_id"] not in done and answer:
            todo[sample["prompt_id"]].append(sample)
    return dict(todo)


def evaluation_scores(folder: Path) -> dict[str, dict[int, float]]:
    """A cell's evaluation scores: prompt id -> sample id -> score."""
    return {
        r["prompt_id"]: {int(i): float(v) for i, v in r["scores"].items()}
        for r in read_jsonl(folder / EVAL_SCORES)
    }


async def evaluate_cells(
    config: SweepConfig, path: Path, prompts: PromptFile, pool: ModelPool, console: Console
) -> int | None:
    """Score every searched prompt's scored samples with the evaluation reward (started
    once for the whole sweep), one line per prompt; the stand-in scores it gave
    (Reward.missing_scores), or None without an `eval_reward`."""
    if config.eval_reward is None:
        return None
    by_id = {p.id: p for p in prompts.prompts}
    todo = {c: unevaluated(config, cell_path(path, c)) for c in config.searches()}
    for cell in todo:
        cut_torn_line(cell_path(path, cell) / EVAL_SCORES)  # a kill's half line, once
    async with started_reward(config.eval_reward, pool) as evaluator:
        gate = asyncio.Semaphore(config.concurrency)

        async def one(folder: Path, prompt_id: str, samples: list[dict[str, Any]]) -> None:
            async with gate:
                scores = await evaluator.score(by_id[prompt_id], [s["text"] for s in samples])
            record = {
                "prompt_id": prompt_id,
                "scores": {str(s["id"]): v for s, v in zip(samples, scores, strict=True)},
            }
            append_records(folder / EVAL_SCORES, [record])

        left = sum(len(t) for t in todo.values())
        if left:
            console.print(f"evaluating {left} searches with {config.eval_reward.kind}")
        await run_all(
            one(cell_path(path, cell), prompt_id, samples)
            for cell, cells_todo in todo.items()
            for prompt_id, samples in cells_todo.items()
        )
        return evaluator.missing_scores()
