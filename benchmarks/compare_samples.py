"""Whether two runs wrote the same samples: each `samples.jsonl` keyed by (prompt_id, id),
the fields compared that depend on what the engine generated (text, token count, finish,
whether a step call stopped at its separator, reward). Prints a JSON summary with up to
three differing samples.

    python benchmarks/compare_samples.py RUN_A/samples.jsonl RUN_B/samples.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from multisample.engine.storage import read_jsonl

FIELDS = ("text", "completion_tokens", "finish_reason", "partial", "reward")


def load(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["prompt_id"], r["id"]): r for r in read_jsonl(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    a, b = load(args.a), load(args.b)
    common = sorted(a.keys() & b.keys())
    differing = [k for k in common if any(a[k][f] != b[k][f] for f in FIELDS)]
    print(
        json.dumps(
            {
                "samples_a": len(a),
                "samples_b": len(b),
                "in_both": len(common),
                "differing": len(differing),
                "examples": [
                    {"sample": k, **{f: [a[k][f], b[k][f]] for f in FIELDS}} for k in differing[:3]
                ],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
