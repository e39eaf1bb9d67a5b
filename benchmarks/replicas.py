"""Best-of-N tokens/s of one replica of a model against two, one core each.

`replicas: 2` runs a second engine actor of the same model; the pool splits every batch
between them by load. Measured one after the other in this run, each case in a fresh
process (Ray's workers take their environment from the process that starts Ray):

  (a) 1 replica computing on core 0 (VLLM_CPU_OMP_THREADS_BIND=0),
  (b) 2 replicas, the pool's split of the cores: one core each;

each runs the same best-of-N synthesize (the same prompts, budget and seeds; ignore_eos
with a fixed max_tokens, so both generate the same number of tokens) after a warm-up,
and its generated tokens/s over the run's wall time is timed. Prints both and the ratio
b/a, and checks the two runs wrote the same samples. The machines are shared and noisy,
so only ratios measured in one run mean anything.

    python benchmarks/replicas.py [--prompts 16] [--budget 8] [--max-tokens 48]
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "replicas-cpu-2core.json"


async def measure(replicas: int, args: argparse.Namespace) -> dict[str, object]:
    """Generated tokens/s of a best-of-N synthesize on `replicas` replicas of the model."""
    from multisample.engine.backends.vllm import VLLMBackend
    from multisample.engine.pool import ModelPool
    from multisample.engine.types import GenerationRequest, Message
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.search.synthesize.records import SAMPLES
    from multisample.search.synthesize.run import synthesize

    config = SynthesizeConfig.model_validate(
        {
            "models": [{"name": "m", "model": args.model, "replicas": replicas, "kv_cache_gib": 2}],
            "limit": args.prompts,
            "budget": {"generations": args.budget},
            "sampling": {"temperature": 0.8, "max_tokens": args.max_tokens, "ignore_eos": True},
            "strategy": {"kind": "best_of_n"},
            "concurrency": args.prompts,
        }
    )
    run = Path(tempfile.mkdtemp(prefix="replicas-")) / "run"
    async with ModelPool(config, config.sampling) as pool:
        warm = [GenerationRequest((Message("user", "Hi"),), config.sampling, i) for i in range(4)]
        await pool.generate("m", warm)  # every replica: the split gives each some
        started = time.perf_counter()
        await synthesize(config, run, pool=pool)
        seconds = time.perf_counter() - started
        backend = pool.backends["m"]
        assert isinstance(backend, VLLMBackend)
        cores = [
            r.cpu_cores or os.environ.get("VLLM_CPU_OMP_THREADS_BIND") for r in backend.replicas
        ]
    lines = (run / SAMPLES).read_text(encoding="utf-8").splitlines()
    samples = sorted((s["prompt_id"], s["id"], s["text"]) for s in map(json.loads, lines))
    tokens = sum(json.loads(line)["completion_tokens"] for line in lines)
    return {
        "replicas": replicas,
        "cores": cores,
        "generations": len(lines),
        "completion_tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
        "samples": samples,
    }


def run_case(replicas: int, args: argparse.Namespace) -> dict[str, object]:
    """One case in a fresh process; its figures come back as the last line of stdout."""
    env = dict(os.environ)
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    if replicas == 1:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "0"  # one core, as each of the two replicas has
    command = [sys.executable, __file__, "--case", str(replicas)]
    for option in ("model", "prompts", "budget", "max_tokens"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"case {replicas} replica(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="prompts of embedded:tasks")
    parser.add_argument("--budget", type=int, default=8, help="N of best-of-N")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # one case, in a child
    parser.add_argument("--json", default=str(RESULTS), help="write the figures here")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(asyncio.run(measure(args.case, args))))
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 cores: one per replica")

    one, two = run_case(1, args), run_case(2, args)
    same = one.pop("samples") == two.pop("samples")
    ratio = two["tok_s"] / one["tok_s"]  # type: ignore[operator]
    figures = {
        "model": args.model,
        "machine_cores": len(os.sched_getaffinity(0)),
        "prompts": args.prompts,
        "best_of_n": args.budget,
        "max_tokens": args.max_tokens,
        "one_replica": one,
        "two_replicas": two,
        "ratio_two_over_one": round(ratio, 3),
        "same_samples": same,
    }
    print(f"1 replica {one['tok_s']} tok/s {one['cores']}; 2 replicas {two['tok_s']} tok/s")
    print(f"{two['cores']}: ratio {ratio:.2f}; same samples in both runs: {same}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
