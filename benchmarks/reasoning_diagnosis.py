"""Why a search's answer is wrong when it found a right one: for each cell (method,
budget, seed) of benchmarks/reasoning.py's searches run afresh at every budget (beam
search, DVTS, TOA), counted from the cell's samples and evaluation scores:

- `right`: problems whose selected answer the evaluation (`correct`) marks right;
- `found`: problems where some finished solution of the search was right;
- `top_but_wrong`: problems whose selected answer has the search reward's top score
  (1.0 with the step checker) and is wrong: what the search reward cannot tell apart.

    python benchmarks/reasoning_diagnosis.py --out DIR [--json FILE]

DIR is reasoning.py's --out; a method whose sweep is not there is left out.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from multisample.engine.storage import read_jsonl

METHODS = ("beam_search", "dvts", "toa")


def cell_counts(cell: Path) -> dict[str, int]:
    evaluated = {r["prompt_id"]: r["scores"] for r in read_jsonl(cell / "eval_scores.jsonl")}
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in read_jsonl(cell / "samples.jsonl"):
        by_prompt[sample["prompt_id"]].append(sample)
    right = found = top_but_wrong = 0
    for prompt_id, scores in evaluated.items():
        samples = by_prompt[prompt_id]
        selected = next(s for s in samples if s.get("selected"))
        is_right = scores.get(str(selected["id"])) == 1.0
        right += is_right
        found += any(scores.get(str(s["id"])) == 1.0 for s in samples if not s.get("partial"))
        top_but_wrong += selected["reward"] == 1.0 and not is_right
    return {"right": right, "found": found, "top_but_wrong": top_but_wrong}


def diagnose(out: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for method in METHODS:
        cells = sorted((out / method / "cells").glob(f"{method}-b*-s*"))
        done = [c for c in cells if (c / "summary.json").exists()]
        if done:
            figures[method] = {c.name.removeprefix(f"{method}-"): cell_counts(c) for c in done}
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
