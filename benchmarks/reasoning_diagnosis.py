"""Why a search's answer is wrong when it found a right one: for each finished cell
(method, budget, seed) of benchmarks/reasoning.py's searches run afresh at every budget
(beam search, DVTS, TOA), from the cell's samples and prompts, every finished solution
scored by the `correct` reward (the sweep's evaluation, so a cell counts before its
sweep has evaluated it):

- `right`: problems whose selected answer is right;
- `found`: problems where some finished solution of the search was right;
- `top_but_wrong`: problems whose selected answer has the search reward's top score
  (1.0 with the step checker) and is wrong: what the search reward cannot tell apart.

    python benchmarks/reasoning_diagnosis.py --out DIR [--json FILE]

DIR is reasoning.py's --out; a method whose sweep is not there is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from multisample.engine.rewards.correct import CorrectReward
from multisample.engine.storage import read_jsonl
from multisample.engine.types import Prompt

METHODS = ("beam_search", "dvts", "toa")


async def cell_counts(cell: Path) -> dict[str, int]:
    correct = CorrectReward()
    prompts = {  # prompts.jsonl names the id `prompt_id`, as every record of the run does
        p["prompt_id"]: Prompt(id=p["prompt_id"], prompt=p["prompt"], reference=p["reference"])
        for p in read_jsonl(cell / "prompts.jsonl")
    }
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_jsonl(cell / "samples.jsonl"):
        if not sample.get("partial"):
            by_prompt[sample["prompt_id"]].append(sample)
    right = found = top_but_wrong = 0
    for prompt_id, finished in by_prompt.items():
        scores = await correct.score(prompts[prompt_id], [s["text"] for s in finished])
        selected = next(i for i, s in enumerate(finished) if s.get("selected"))
        right += scores[selected] == 1.0
        found += max(scores) == 1.0
        top_but_wrong += finished[selected]["reward"] == 1.0 and scores[selected] == 0.0
    return {"right": right, "found": found, "top_but_wrong": top_but_wrong}


def diagnose(out: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for method in METHODS:
        cells = sorted((out / method / "cells").glob(f"{method}-b*-s*"))
        done = [c for c in cells if (c / "summary.json").exists()]
        if done:
            figures[method] = {
                c.name.removeprefix(f"{method}-"): asyncio.run(cell_counts(c)) for c in done
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="benchmarks/reasoning.py's --out")
    parser.add_argument("--json", help="write the counts to this file")
    args = parser.parse_args()
    figures = diagnose(Path(args.out))
    text = json.dumps(figures, indent=2) + "\n"
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
