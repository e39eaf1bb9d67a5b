"""How busy a sweep keeps the engines: its generated tokens/s against vLLM's ceiling.

One process, one run:

  (a) the sweep: `search.sweep.sweep` over an already started pool (engine start is not
      counted; everything else is: preflight, every cell, rewards, writing the cells,
      tables, plots and report), with every request it makes recorded;
  (b) the ceiling: the very same requests replayed through vLLM's offline `LLM`, one
      model at a time, each model's requests all at once, with the machine to itself:
      the same prompt token ids, seeds and sampling, and exactly as many generated
      tokens as the sweep got (max_tokens = its completion tokens, ignore_eos).

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
import gc
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "sweep_busy-cpu-2core.json"


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
    from engine.pool import ModelPool
    from search.sweep import sweep

    async with ModelPool(config, config.sampling) as pool:
        recorder = RecordingPool(pool)
        started = time.perf_counter()
        summary = await sweep(config, path, pool=recorder)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
    return seconds, summary, recorder.records


def replay(spec: Any, records: list[tuple[str, Any, Any]]) -> tuple[int, float]:
    """(generated tokens, seconds) of vLLM's offline engine on `records` all at once,
    with the engine settings the pool gives this model on the CPU."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from engine.backends.vllm import VLLMEngineActor
    from engine.embedded import resolve_model_path

    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(spec.kv_cache_gib)
    folder = str(resolve_model_path(spec.model))
    max_len = spec.max_model_len or 0
    llm = LLM(
        model=folder,
        tokenizer=folder,
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        max_num_seqs=spec.max_num_seqs,
        enable_prefix_caching=True,
        enforce_eager=True if spec.enforce_eager is None else spec.enforce_eager,
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(4096, max_len),
        seed=0,
    )
    encoder = VLLMEngineActor(spec)  # the pool's own prompt rendering, no engine
    encoder.tokenizer = llm.get_tokenizer()
    prompts, params = [], []
    for _, request, generation in records:
        s = request.sampling
        prompts.append(TokensPrompt(prompt_token_ids=encoder.encode(request.messages)))
        params.append(
            SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=max(s.top_k, 0),
                presence_penalty=s.presence_penalty,
                max_tokens=max(generation.completion_tokens, 1),
                ignore_eos=True,
                seed=request.seed + spec.seed_offset,
            )
        )
    llm.generate(prompts[:4], params[:4], use_tqdm=False)  # warm-up, as the pool had
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    gc.collect()
    return tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/sweep.yaml")
    parser.add_argument("--limit", type=int, help="use only the first N prompts")
    parser.add_argument("--seeds", type=int, help="use only the first N seeds")
    parser.add_argument("--concurrency", type=int, help="override the config's concurrency")
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    args = parser.parse_args()

    import ray

    from engine.config import load_config
    from search.sweep import SweepConfig

    config = load_config(args.config, SweepConfig)
    update: dict[str, Any] = {}
    if args.limit:
        update["limit"] = args.limit
    if args.seeds:
        update["seeds"] = config.seeds[: args.seeds]
    if args.concurrency:
        update["concurrency"] = args.concurrency
    config = SweepConfig.model_validate({**config.model_dump(mode="json"), **update})

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        sweep_s, summary, records = asyncio.run(run_sweep(config, Path(scratch) / "sweep"))
    ray.shutdown()
    by_model: dict[str, list] = defaultdict(list)
    for record in records:
        by_model[record[0]].append(record)

    per_model = {}
    for model, rows in by_model.items():
        tokens, seconds = replay(config.model(model), rows)
        per_model[model] = {
            "requests": len(rows),
            "sweep_completion_tokens": sum(g.completion_tokens for _, _, g in rows),
            "offline_tokens": tokens,
            "offline_s": round(seconds, 2),
            "offline_tok_s": round(tokens / seconds, 1),
        }
        print(f"{model:10} offline replay: {len(rows)} requests, {tokens} tokens, {seconds:.1f} s")
    generated = sum(m["sweep_completion_tokens"] for m in per_model.values())
    ceiling_s = sum(m["offline_s"] for m in per_model.values())
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
        "ceiling_tok_s": round(generated / ceiling_s, 1),
        "busy_fraction": round(ceiling_s / sweep_s, 3),
        "busy_fraction_search_phase": round(ceiling_s / search_s, 3),
        "per_model": per_model,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"sweep: {figures['cells']} cells x {figures['prompts']} prompts, {generated} generated "
        f"tokens in {sweep_s:.1f} s ({figures['sweep_tok_s']} tok/s; searches {search_s:.1f} s)"
    )
    print(f"offline ceiling for the same generations: {ceiling_s:.1f} s")
    print(f"busy fraction = {figures['busy_fraction']:.3f}  (target >= 0.8)")
    print(f"busy fraction of the search phase = {figures['busy_fraction_search_phase']:.3f}")
    before, after = figures["load_average_before"], figures["load_average_after"]
    print(f"load average before {before}, after {after}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
