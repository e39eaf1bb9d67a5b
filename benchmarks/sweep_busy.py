"""How busy a sweep keeps the engines: its generated tokens/s against vLLM's ceiling.

One run:

  (a) the sweep: `search.sweep.sweep` over an already started pool (engine start is not
      counted; everything else is: preflight, every cell, rewards, writing the cells,
      tables, plots and report), with every request it makes recorded;
  (b) the ceiling: the very same requests replayed through vLLM's offline `LLM`, each
      model's requests all at once, on the cores the pool gave that model: the same
      prompt token ids, seeds and sampling, and exactly as many generated tokens as
      the sweep got (max_tokens = its completion tokens, ignore_eos). Models on disjoint
      cores are replayed side by side, each in its own process, all released at once
      when every engine is warm, so the ceiling is the slowest one's time; models that
      share cores are replayed one after the other, and their times add.

busy fraction = (seconds the offline engines need for the sweep's generations) /
(seconds the sweep took) = the sweep's generated tokens/s over the ceiling's for the
same token mix. Sequential strategies (refine's chains) and the tail of the last cells
are what pull it down; a shared concurrency gate over all cells is what keeps it up.
Target >= 0.8. The machines are shared and noisy: only the ratio means anything.

    python benchmarks/sweep_busy.py [configs/sweep.yaml] [--limit 10] [--seeds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "sweep_busy-cpu-2core.json"
MARK = "@@replay "  # the lines of a replay process meant for its parent


class RecordingPool:
    """A started ModelPool that records every request and what came back."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.records: list[tuple[str, Any, Any]] = []  # (model, request, generation)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def generate(self, model: str, requests: Sequence[Any]) -> list[Any]:
        generations = await self._pool.generate(model, requests)
        self.records.extend(zip([model] * len(requests), requests, generations, strict=True))
        return generations


async def run_sweep(config: Any, path: Path) -> tuple[float, dict[str, Any], list]:
    """(seconds, summary, recorded requests) of the sweep on a freshly started pool."""
    from multisample.engine.pool import ModelPool
    from multisample.search.sweep.run import sweep

    async with ModelPool(config, config.sampling) as pool:
        recorder = RecordingPool(pool)
        started = time.perf_counter()
        summary = await sweep(config, path, pool=recorder)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
    return seconds, summary, recorder.records


def replay(job_file: Path) -> None:
    """In a child process: replay one model's requests through vLLM's offline engine on
    the cores the pool gave it, all at once, when the parent says go; print what it took.

    The same engine settings as the pool's on the CPU, the pool's own prompt rendering,
    each request's seed and sampling, and max_tokens = the tokens the sweep got.
    """
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from multisample.engine.actors import BIND_VARIABLE, cpu_engine_settings
    from multisample.engine.backends.vllm_actor import VLLMEngineActor
    from multisample.engine.config import VLLMModelSpec
    from multisample.engine.model_folders import resolve_model_path
    from multisample.engine.types import Message

    job = json.loads(job_file.read_text(encoding="utf-8"))
    spec = VLLMModelSpec.model_validate(job["spec"])
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec.kv_cache_gib)
    if job["cores"] is not None:  # else vLLM's own binding, as in the pool
        os.environ[BIND_VARIABLE] = job["cores"]
    folder = str(resolve_model_path(spec.model))
    llm = LLM(
        model=folder,
        tokenizer=folder,
        dtype=spec.dtype,
        max_num_seqs=spec.max_num_seqs,
        enable_prefix_caching=True,
        enforce_eager=True if spec.enforce_eager is None else spec.enforce_eager,
        seed=0,
        **cpu_engine_settings({"max_model_len": spec.max_model_len}),
    )
    encoder = VLLMEngineActor(spec)  # the pool's own prompt rendering, no engine
    encoder.tokenizer = llm.get_tokenizer()
    prompts, params = [], []
    for request in job["requests"]:
        messages = tuple(Message(role, content) for role, content in request["messages"])
        prompts.append(TokensPrompt(prompt_token_ids=encoder.encode(messages)))
        s = request["sampling"]
        params.append(
            SamplingParams(
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=max(s["top_k"], 0),
                presence_penalty=s["presence_penalty"],
                max_tokens=max(request["completion_tokens"], 1),
                ignore_eos=True,
                seed=request["seed"] + spec.seed_offset,
            )
        )
    llm.generate(prompts[:4], params[:4], use_tqdm=False)  # warm-up, as the pool had
    print(f"{MARK}ready", flush=True)
    sys.stdin.readline()  # go
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"{MARK}{json.dumps({'tokens': tokens, 'seconds': seconds})}", flush=True)


def _next_mark(child: subprocess.Popen[str]) -> str:
    """The child's next marked line (vLLM logs to the same stdout)."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(MARK):
            return line[len(MARK) :].strip()
    sys.exit(f"a replay process failed (exit status {child.wait()})")


def replay_together(jobs: list[Path]) -> list[tuple[int, float]]:
    """Replay `jobs` side by side: every engine loaded and warm first, then all at once."""
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--replay", str(job)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    for child in children:
        _next_mark(child)  # ready
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [json.loads(_next_mark(child)) for child in children]
    for child in children:
        child.wait()
    return [(r["tokens"], r["seconds"]) for r in results]


def job_document(spec: Any, cores: str | None, rows: list[tuple[str, Any, Any]]) -> str:
    requests = [
        {
            "messages": [[m.role, m.content] for m in request.messages],
            "sampling": request.sampling.model_dump(mode="json"),
            "seed": request.seed,
            "completion_tokens": generation.completion_tokens,
        }
        for _, request, generation in rows
    ]
    return json.dumps({"spec": spec.model_dump(mode="json"), "cores": cores, "requests": requests})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/sweep.yaml")
    parser.add_argument("--limit", type=int, help="use only the first N prompts")
    parser.add_argument("--seeds", type=int, help="use only the first N seeds")
    parser.add_argument("--concurrency", type=int, help="override the config's concurrency")
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # in a child process
    return parser.parse_args()


def sweep_config(args: argparse.Namespace) -> Any:
    """The config file's SweepConfig with the command line's overrides."""
    from multisample.engine.config_files import load_config
    from multisample.search.sweep.config import SweepConfig

    config = load_config(args.config, SweepConfig)
    update: dict[str, Any] = {}
    if args.limit:
        update["limit"] = args.limit
    if args.seeds:
        update["seeds"] = config.seeds[: args.seeds]
    if args.concurrency:
        update["concurrency"] = args.concurrency
    return SweepConfig.model_validate({**config.model_dump(mode="json"), **update})


def ceiling(config: Any, by_model: dict[str, list]) -> tuple[dict[str, Any], bool, float]:
    """Replay each model's recorded requests offline: (figures per model, whether the
    engines ran side by side, the ceiling's seconds)."""
    from multisample.engine.cpu_binding import cpu_cores_for

    # The cores the sweep's engines computed on. Engines on disjoint cores are replayed
    # side by side, as they ran in the sweep; engines that share cores take turns.
    cores = {model: cpu_cores_for(config, config.model(model)) for model in by_model}
    planned = list(cores.values())
    flat = [core for share in planned if share for core in share.split(",")]
    side_by_side = None not in planned and len(flat) == len(set(flat))
    with tempfile.TemporaryDirectory() as scratch:
        jobs = []
        for model, rows in by_model.items():
            jobs.append(Path(scratch) / f"{model}.json")
            jobs[-1].write_text(job_document(config.model(model), cores[model], rows), "utf-8")
        if side_by_side:
            results = replay_together(jobs)
        else:
            results = [result for job in jobs for result in replay_together([job])]
    per_model = {}
    for (model, rows), (tokens, seconds) in zip(by_model.items(), results, strict=True):
        per_model[model] = {
            "cores": cores[model],
            "requests": len(rows),
            "sweep_completion_tokens": sum(g.completion_tokens for _, _, g in rows),
            "offline_tokens": tokens,
            "offline_s": round(seconds, 2),
            "offline_tok_s": round(tokens / seconds, 1),
        }
        print(f"{model:10} offline replay: {len(rows)} requests, {tokens} tokens, {seconds:.1f} s")
    replay_s = [m["offline_s"] for m in per_model.values()]
    return per_model, side_by_side, max(replay_s) if side_by_side else sum(replay_s)


def print_figures(figures: dict[str, Any], sweep_s: float, ceiling_s: float) -> None:
    """The figures in a few lines (the seconds unrounded, as measured)."""
    search_s = figures["sweep_search_phase_s"]
    print(
        f"sweep: {figures['cells']} cells x {figures['prompts']} prompts, "
        f"{figures['generated_tokens']} generated tokens in {sweep_s:.1f} s "
        f"({figures['sweep_tok_s']} tok/s; searches {search_s:.1f} s)"
    )
    print(f"offline ceiling for the same generations: {ceiling_s:.1f} s")
    print(f"busy fraction = {figures['busy_fraction']:.3f}  (target >= 0.8)")
    print(f"busy fraction of the search phase = {figures['busy_fraction_search_phase']:.3f}")
    before, after = figures["load_average_before"], figures["load_average_after"]
    print(f"load average before {before}, after {after}")


def main() -> None:
    args = parse_args()
    if args.replay:
        replay(args.replay)
        return

    import ray

    config = sweep_config(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        sweep_s, summary, records = asyncio.run(run_sweep(config, Path(scratch) / "sweep"))
    ray.shutdown()
    by_model: dict[str, list] = defaultdict(list)
    for record in records:
        by_model[record[0]].append(record)
    per_model, side_by_side, ceiling_s = ceiling(config, by_model)
    generated = sum(m["sweep_completion_tokens"] for m in per_model.values())
    search_s = summary["this_session"]["search_wall_s"]
    figures = {
        "config": args.config,
        "prompts": summary["prompts"],
        "cells": summary["cells"],
        "concurrency": config.concurrency,
        "max_tokens": config.sampling.max_tokens,
        "generated_tokens": generated,
        "sweep_s": round(sweep_s, 2),
        "sweep_search_phase_s": search_s,
        "sweep_tok_s": round(generated / sweep_s, 1),
        "ceiling_s": round(ceiling_s, 2),
        "engines_side_by_side": side_by_side,
        "ceiling_tok_s": round(generated / ceiling_s, 1),
        "busy_fraction": round(ceiling_s / sweep_s, 3),
        "busy_fraction_search_phase": round(ceiling_s / search_s, 3),
        "per_model": per_model,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print_figures(figures, sweep_s, ceiling_s)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
