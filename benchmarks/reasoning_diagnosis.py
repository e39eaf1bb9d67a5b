"""Why a search's answer is wrong when it found a right one, and what it answers under
the current step checker: for each finished cell (method, budget, seed) of
benchmarks/reasoning.py's searches run afresh at every budget (beam search, DVTS, TOA),
from the cell's samples and prompts, every finished solution scored by the `correct`
reward (the sweep's evaluation, so a cell counts before its sweep has evaluated it):

- `right`: problems whose selected answer is right;
- `found`: problems where some finished solution of the search was right;
- `top_but_wrong`: problems whose selected answer has the search reward's top score
  (1.0 with the step checker) and is wrong: what the search reward cannot tell apart;
- `right_now`: problems whose finished solution with the top score of the step checker
  as it is now (`arithmetic_steps`, a finished solution judged finished) is right, the
  first in id order among equals; `tied_now`: problems where that top score is shared by
  a right and a wrong solution, so the order decides.

For beam search and DVTS `right_now` is what the search answers when rerun with the
current checker on the same generations: their partial solutions are scored as before
(`Reward.unfinished` is the old checker), only partial solutions are kept and extended,
and a finished one only counts towards the subtree's width whatever its score, so the
trees grown are the same and only the choice among finished solutions changes. (Not so
for TOA, whose tree follows the scores of finished answers.) `current_checker` gives,
per method and budget, that accuracy over problems (seeds averaged per problem) with
its 95% Student-t interval, as the sweep reports accuracy.

    python benchmarks/reasoning_diagnosis.py --out DIR [DIR ...] [--json FILE]

Each DIR is a reasoning.py --out; a method is read from the first DIR holding finished
cells of it, and one that none holds is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from multisample.engine.intervals import mean_ci
from multisample.engine.rewards.correct import CorrectReward
from multisample.engine.rewards.process import ArithmeticStepsReward, ArithmeticStepsSpec
from multisample.engine.storage import read_jsonl
from multisample.engine.types import Prompt

METHODS = ("beam_search", "dvts", "toa")
RESCORED = ("beam_search", "dvts")
"""The methods whose trees do not depend on the scores of finished solutions."""
CELL = re.compile(r"b(\d+)-s(\d+)")


def prompt_of(record: dict[str, Any]) -> Prompt:
    """A prompt of a run's prompts.jsonl (which names the id `prompt_id`, as every
    record of the run does)."""
    fields = {k: v for k, v in record.items() if k != "prompt_id"}
    return Prompt.model_validate({**fields, "id": record["prompt_id"]})


async def cell_counts(cell: Path) -> tuple[dict[str, int], dict[str, float]]:
    """The cell's counts, and whether each problem's answer under the current checker
    is right (1.0 or 0.0, by prompt id)."""
    correct = CorrectReward()
    config = yaml.safe_load((cell / "config.yaml").read_text(encoding="utf-8"))
    spec = ArithmeticStepsSpec.model_validate(config["reward"])  # the cell's own checker
    checker = ArithmeticStepsReward(spec.separator, spec.aggregate)
    prompts = {p["prompt_id"]: prompt_of(p) for p in read_jsonl(cell / "prompts.jsonl")}
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_jsonl(cell / "samples.jsonl"):
        if not sample.get("partial"):
            by_prompt[sample["prompt_id"]].append(sample)
    counts = dict.fromkeys(("right", "found", "top_but_wrong", "right_now", "tied_now"), 0)
    now: dict[str, float] = {}
    for prompt_id, finished in by_prompt.items():
        finished.sort(key=lambda s: s["id"])
        texts = [s["text"] for s in finished]
        scores = await correct.score(prompts[prompt_id], texts)
        current = await checker.score(prompts[prompt_id], texts)
        selected = next(i for i, s in enumerate(finished) if s.get("selected"))
        top = [scores[i] for i, c in enumerate(current) if c == max(current)]
        now[prompt_id] = scores[current.index(max(current))]
        counts["right"] += scores[selected] == 1.0
        counts["found"] += max(scores) == 1.0
        counts["top_but_wrong"] += finished[selected]["reward"] == 1.0 and scores[selected] == 0.0
        counts["right_now"] += now[prompt_id] == 1.0
        counts["tied_now"] += len(set(top)) > 1
    return counts, now


def finished_cells(outs: list[Path], method: str) -> list[Path]:
    """The finished cells of `method` in the first of `outs` that has any."""
    for out in outs:
        cells = sorted((out / method / "cells").glob(f"{method}-b*-s*"))
        done = [c for c in cells if (c / "summary.json").exists()]
        if done:
            return done
    return []


def diagnose(outs: list[Path]) -> dict[str, Any]:
    figures: dict[str, Any] = {"cells": {}, "current_checker": {}}
    for method in METHODS:
        done = finished_cells(outs, method)
        if not done:
            continue
        figures.setdefault("sources", {})[method] = str(done[0].parents[2])
        counted = {c.name.removeprefix(f"{method}-"): asyncio.run(cell_counts(c)) for c in done}
        figures["cells"][method] = {name: counts for name, (counts, _) in counted.items()}
        if method not in RESCORED:
            continue
        by_budget: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for name, (_, now) in counted.items():
            budget = int(CELL.fullmatch(name)[1])  # type: ignore[index]
            for prompt_id, right in now.items():
                by_budget[budget][prompt_id].append(right)
        figures["current_checker"][method] = {
            str(budget): {
                "accuracy": [
                    round(x, 4) for x in mean_ci([sum(v) / len(v) for v in problems.values()])
                ],
                "problems": len(problems),
            }
            for budget, problems in sorted(by_budget.items())
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, nargs="+", type=Path, help="benchmarks/reasoning.py's --out"
    )
    parser.add_argument("--json", help="write the counts to this file")
    args = parser.parse_args()
    figures = diagnose(args.out)
    text = json.dumps(figures, indent=2) + "\n"
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
