"""The gateway under load, on the embedded SmolLM2 on this machine's cores, loopback only.

Four measurements, one after another in this process (the machines are shared and noisy:
only what is measured in one run is compared):

1. Pass-through overhead: the same requests (the shipped tasks' prompts, temperature 0.8,
   `--max-tokens`) from `--clients` concurrent clients, first through `multisample serve`
   to the pool's engine, then to vLLM's own OpenAI server on the same model, engine
   settings and cores. Generated tokens/s of each and their ratio (goal >= 0.9), and each
   one's p50 / p99 latency.
2. A best-of-4 route: at low load (one client, one request at a time) its latency
   against a single sample's (goal <= 1.5x: the four samples run in parallel); at
   saturation (`--clients` clients) its generated tokens/s against the pass-through's.
3. A selection route under live traffic: the 136 shipped tasks as client requests (each
   carrying its constraints in the body's `multisample` field),
   `--selection-clients` at once, Co-UCB over SmolLM2 and Gemma-3-270M with the
   verifiable reward as arbiter: its rounds, final choice and win rates, against
   `multisample select` with the same candidates, policy and arbiter over the same
   queries (batch 1, one round a query, as the gateway plays them).
4. Load and faults: `--load` requests from 64 clients against a gateway that answers 16
   at once and queues 32: every response is a 200 or a deliberate 429; then, with 48
   clients (what it answers and queues), SIGKILL of the server process once 64 selection
   rounds are committed, and a restart with --resume: every request answered before the
   kill is in the run directory exactly once, and the bandit goes on from its committed
   round.

    python benchmarks/serve.py --out DIR [--json FILE] [--requests 256] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
MULTISAMPLE = str(Path(sys.executable).with_name("multisample"))
MODEL = "embedded:smollm2-135m-instruct"


def prompts(count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` requests from the shipped tasks, in turn: each prompt, and the task's
    constraints as the body's `multisample` field (what the verifiable reward checks)."""
    from multisample.engine.prompts import EMBEDDED_TASKS, load_prompts

    tasks = load_prompts(EMBEDDED_TASKS).prompts
    return [
        (task.prompt, {"constraints": list(task.constraints)})
        for task in (tasks[i % len(tasks)] for i in range(count))
    ]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def drive(
    url: str,
    model: str,
    texts: list[tuple[str, dict[str, Any]]],
    clients: int,
    max_tokens: int,
    headers: dict[str, str] | None = None,
    task: bool = True,
) -> dict[str, Any]:
    """Send every text as one chat request, `clients` at a time, with its task in the
    `multisample` field (unless `task` is false: vLLM's server takes no such field);
    tokens/s and latencies."""
    queue: asyncio.Queue[tuple[int, tuple[str, dict[str, Any]]]] = asyncio.Queue()
    for item in enumerate(texts):
        queue.put_nowait(item)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tokens = 0
    answered: list[str] = []

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            index, (text, extension) = queue.get_nowait()
            body = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": index,
                **({"multisample": extension} if task else {}),
            }
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError:
                statuses[-1] = statuses.get(-1, 0) + 1
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
                data = response.json()
                tokens += data["usage"]["completion_tokens"]
                answered.append(data["id"])

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "requests": len(texts),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "answered": answered,
    }


def gateway_config(out: Path, **extra: Any) -> Path:
    config = {
        "models": [{"name": "smollm2", "model": MODEL, "num_cpus": os.cpu_count() or 1}],
        "sampling": {"temperature": 0.8, "max_tokens": 256},
        "routes": [
            {
                "name": "best-of-4",
                "strategy": {"kind": "best_of_n", "model": "smollm2"},
                "budget": {"generations": 4},
                "reward": {"kind": "verifiable"},
            }
        ],
        "selections": [
            {
                "name": "auto",
                "candidates": [
                    {"name": "smollm2", "model": "smollm2"},
                    {"name": "best-of-4", "route": "best-of-4"},
                ],
                "feedback": {"kind": "reward", "reward": {"kind": "verifiable"}},
            }
        ],
        "port": 0,
        "limits": {"concurrency": 256, "queue": 1024, "per_client": 1024},
        "output_dir": str(out),
        **extra,
    }
    path = out / f"serve-{len(list(out.glob('serve-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Process:
    """A server process in a session of its own, its output in a log."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=REPO,
            )

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(self.log.read_text(encoding="utf-8")[-3000:])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        return self.process.wait(timeout=600)


async def gateway(out: Path, name: str, config: Path, resume: bool = False) -> tuple[Process, str]:
    run = out / name
    (run / "server.json").unlink(missing_ok=True)
    args = [MULTISAMPLE, "serve", str(config)]
    args += ["--resume", str(run)] if resume else ["--name", name, "--output-dir", str(out)]
    process = Process(args, out / f"{name}.log")
    while not (run / "server.json").exists():
        process.alive()
        await asyncio.sleep(0.05)
    return process, json.loads((run / "server.json").read_text(encoding="utf-8"))["url"]


async def vllm_server(out: Path, cores: str | None) -> tuple[Process, str]:
    """vLLM's own OpenAI server on the same model folder, engine settings and cores."""
    from multisample.engine.actors import CPU_BLOCK_SIZE
    from multisample.engine.model_folders import resolve_model_path

    folder = resolve_model_path(MODEL)
    port = 18000 + os.getpid() % 1000
    args = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder), "--served-model-name", "smollm2", "--port", str(port),
        "--host", "127.0.0.1", "--enforce-eager", "--enable-prefix-caching",
        "--max-model-len", "2048", "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", "4096", "--block-size", str(CPU_BLOCK_SIZE),
        "--disable-log-stats",
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": "4"}
    if cores:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
    process = Process(args, out / "vllm-server.log", env)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        while True:
            process.alive()
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)


def strip(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "answered"}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = prompts(args.requests)
    figures: dict[str, Any] = {"setup": {k: v for k, v in vars(args).items() if k != "json"}}
    if args.json and Path(args.json).exists():  # the parts measured before, kept
        figures = {**json.loads(Path(args.json).read_text(encoding="utf-8")), **figures}
    if "1" in args.parts:
        await overhead(out, args, texts, figures)
        write(args, figures)
    if "3" in args.parts:
        figures["selection"] = await selection(out, args)
        write(args, figures)
    if "4" in args.parts:
        figures["load_and_faults"] = await load_and_faults(out, args)
        write(args, figures)
    return figures


async def overhead(
    out: Path, args: argparse.Namespace, texts: list[str], figures: dict[str, Any]
) -> None:
    """Parts 1 and 2: the gateway's pass-through and best-of-4 route, then vLLM's own
    server on the same requests."""
    process, url = await gateway(out, "gateway", gateway_config(out))
    try:
        # The pass-through is sent what vLLM's server is sent: no `multisample` field.
        await drive(url, "smollm2", texts[:8], 8, args.max_tokens, task=False)  # warm-up
        passed = await drive(url, "smollm2", texts, args.clients, args.max_tokens, task=False)
        single = await drive(url, "smollm2", texts[: args.low_load], 1, args.max_tokens, task=False)
        routed_low = await drive(url, "best-of-4", texts[: args.low_load], 1, args.max_tokens)
        routed = await drive(
            url, "best-of-4", texts[: args.requests // 4], args.clients, args.max_tokens
        )
    finally:
        process.stop()
    # 1: vLLM's own server.
    from multisample.engine.config import PoolConfig
    from multisample.engine.cpu_binding import cpu_cores_for

    spec = {"name": "smollm2", "model": MODEL, "num_cpus": os.cpu_count() or 1}
    pool = PoolConfig.model_validate({"models": [spec]})
    cores = cpu_cores_for(pool, pool.models[0])
    process, url = await vllm_server(out, cores)
    try:
        await drive(url, "smollm2", texts[:8], 8, args.max_tokens, task=False)
        direct = await drive(url, "smollm2", texts, args.clients, args.max_tokens, task=False)
    finally:
        process.stop()
    figures["pass_through"] = {
        "gateway": strip(passed),
        "vllm_openai_server": strip(direct),
        "tokens_per_s_ratio": round(passed["tokens_per_s"] / direct["tokens_per_s"], 3),
        "cores": cores,
    }
    figures["best_of_4_route"] = {
        "low_load_single": strip(single),
        "low_load_route": strip(routed_low),
        "latency_ratio_p50": round(routed_low["latency_p50_s"] / single["latency_p50_s"], 3),
        "saturation": strip(routed),
        "saturation_tokens_per_s_vs_pass_through": round(
            routed["tokens_per_s"] / passed["tokens_per_s"], 3
        ),
    }


MODELS = [
    {"name": "smollm2", "model": MODEL, "num_cpus": 1},
    {"name": "gemma3", "model": "embedded:gemma3-270m", "prompt_format": "base", "num_cpus": 1},
]
"""The duel of part 3: the embedded default's two models."""


async def selection(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A selection route (SmolLM2 against Gemma-3, Co-UCB, the verifiable reward as
    arbiter) with the shipped tasks as live traffic, and `select` over the same queries."""
    from multisample.engine.prompts import EMBEDDED_TASKS, load_prompts

    tasks = load_prompts(EMBEDDED_TASKS).prompts
    arbiter = {"kind": "reward", "reward": {"kind": "verifiable"}}
    duel = {
        "name": "duel",
        "candidates": [{"name": m["name"], "model": m["name"]} for m in MODELS],
        "feedback": arbiter,
    }
    config = gateway_config(out, models=MODELS, routes=[], selections=[duel])
    process, url = await gateway(out, "selection", config)
    try:
        live = await drive(
            url, "duel", prompts(len(tasks)), args.selection_clients, args.max_tokens
        )
        async with httpx.AsyncClient() as http:
            state = (await http.get(f"{url}/v1/selections/duel")).json()
    finally:
        process.stop()
    select_config = {
        "models": MODELS,
        "prompts": EMBEDDED_TASKS,
        "batch": 1,
        "sampling": {"temperature": 0.8, "max_tokens": args.max_tokens},
        "feedback": arbiter,
        "output_dir": str(out),
    }
    path = out / "select.yaml"
    path.write_text(yaml.safe_dump(select_config), encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run(
        [MULTISAMPLE, "select", str(path), "--name", "select", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    summary = json.loads((out / "select" / "summary.json").read_text(encoding="utf-8"))
    return {
        "queries": len(tasks),
        "gateway": {
            "traffic": strip(live),
            "rounds": state["rounds"],
            "best": state["best"],
            "win_rate": state["win_rate"],
            "ties": state["ties"],
            "selections": state["selections"],
            "estimated_regret": state["history"][-1]["estimated_regret"]
            if state["history"]
            else None,
        },
        "select": {
            "rounds": summary["rounds"],
            "best": summary["best"],
            "win_rate": summary["win_rate"],
            "ties": summary["ties"],
            "queries_per_candidate": summary["queries_per_candidate"],
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }


LIMITS = {"concurrency": 16, "queue": 32, "per_client": 1024}
"""Part 4's gateway: 16 requests answered at once, 32 waiting, any client may hold them."""


async def load_and_faults(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A capped gateway under more load than it takes, then a SIGKILL and a restart."""
    from multisample.engine.storage import read_jsonl

    config = gateway_config(out, limits=LIMITS)
    process, url = await gateway(out, "load", config)
    texts = prompts(args.load)
    try:
        loaded = await drive(url, "smollm2", texts, 64, 32)
        # Under load again, as many clients as are answered or queued (none is refused),
        # killed once a quarter of the requests (64 at most) are committed rounds.
        under_load = texts[:400]
        clients = LIMITS["concurrency"] + LIMITS["queue"]
        killer = asyncio.ensure_future(drive(url, "auto", under_load, clients, 32))
        run = out / "load"
        kill_after = min(64, len(under_load) // 4)  # rounds committed before the kill
        while sum(1 for _ in read_jsonl(run / "selections" / "auto" / "rounds.jsonl")) < kill_after:
            process.alive()
            if killer.done():  # every request was answered (or refused) first
                raise RuntimeError(f"the load ended before {kill_after} rounds: {killer.result()}")
            await asyncio.sleep(0.05)
        process.stop(signal.SIGKILL)
        interrupted = await killer
    finally:
        process.stop(signal.SIGKILL)
    state = json.loads((run / "selections" / "auto" / "state.json").read_text(encoding="utf-8"))
    process, url = await gateway(out, "load", config, resume=True)
    try:
        after = await drive(url, "auto", texts[:16], 4, 32)
        async with httpx.AsyncClient() as http:
            resumed = (await http.get(f"{url}/v1/selections/auto")).json()
    finally:
        process.stop()
    recorded = [
        query
        for row in read_jsonl(run / "selections" / "auto" / "rounds.jsonl")
        for query in row["queries"]
    ]
    recorded += [r["prompt_id"] for r in read_jsonl(run / "models" / "smollm2" / "progress.jsonl")]
    answered = set(loaded["answered"]) | set(interrupted["answered"])
    return {
        "load": strip(loaded),
        "errors_other_than_429": sum(
            v for k, v in loaded["statuses"].items() if k not in ("200", "429")
        ),
        "killed_under_load": strip(interrupted),
        "answered_before_kill_missing_from_records": len(answered - set(recorded)),
        "recorded_twice": len(recorded) - len(set(recorded)),
        "rounds_committed_at_kill": state["round"],
        "rounds_after_restart": resumed["rounds"],
        "requests_after_restart": strip(after),
    }


def write(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--json")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--low-load", type=int, default=16, help="requests one at a time")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--selection-clients", type=int, default=16)
    parser.add_argument("--load", type=int, default=1000)
    parser.add_argument(
        "--parts", nargs="+", default=["1", "3", "4"], help="1 (with 2), 3, 4: which to run"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
