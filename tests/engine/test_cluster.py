"""The pool against an existing two-node Ray cluster, started on this machine with
`ray start --head` and a second `ray start --address`, with a model pinned to the
second node by a custom resource."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.cluster]

RAY = str(Path(sys.executable).with_name("ray"))
# `ray start` turns token authentication on; every process of the cluster must know.
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}

DRIVER = """
import asyncio, json, sys
import ray
from multisample.engine.config import PoolConfig
from multisample.engine.pool import ModelPool
from multisample.engine.types import GenerationRequest, Message, SamplingSettings

async def main():
    config = PoolConfig.model_validate({
        "ray_address": sys.argv[1],
        "models": [{"name": "smollm2", "model": "embedded:smollm2-135m-instruct",
                    "resources": {"second_node": 1}}],
    })
    async with ModelPool(config) as pool:
        request = GenerationRequest(
            (Message("user", "Say hi."),), SamplingSettings(max_tokens=8), 0
        )
        (generation,) = await pool.generate("smollm2", [request])
        second = [n["NodeID"] for n in ray.nodes() if "second_node" in n["Resources"]]
        print("RESULT " + json.dumps({
            "actor_node": pool.backends["smollm2"].info["node_id"],
            "second_node": second,
            "nodes": len(ray.nodes()),
            "completion_tokens": generation.completion_tokens,
        }))

if __name__ == "__main__":
    asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, head: subprocess.Popen[bytes]) -> None:
    """Until the head node listens (or has exited, which fails the test)."""
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert head.poll() is None, f"ray start --head exited with {head.returncode}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[str]:
    port = free_port()
    # Ray's socket paths must stay short: a short temp dir, not pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="msray-", dir="/tmp")
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            *common,
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nodes = [head]
    try:
        wait_for_port(port, head)
        nodes.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    f"--address=127.0.0.1:{port}",
                    '--resources={"second_node": 1}',
                    *common,
                ],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield f"127.0.0.1:{port}"
    finally:
        # `ray start --block` stops its node's processes when terminated.
        for node in reversed(nodes):
            node.terminate()
            node.wait()


def run_driver(script: str, address: str) -> dict[str, Any]:
    """Run a driver script against the cluster; return what it printed after RESULT."""
    done = subprocess.run(
        [sys.executable, "-c", script, address],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_model_runs_on_the_node_it_is_pinned_to(two_node_cluster: str) -> None:
    # Placement waits for the second node to register, so no polling is needed.
    result = run_driver(DRIVER, two_node_cluster)
    assert result["nodes"] == 2
    assert result["second_node"] == [result["actor_node"]]
    assert result["completion_tokens"] > 0


REPLICAS_DRIVER = """
import asyncio, json, sys
from multisample.engine.config import PoolConfig
from multisample.engine.pool import ModelPool
from multisample.engine.types import GenerationRequest, Message, SamplingSettings

async def main():
    config = PoolConfig.model_validate({
        "ray_address": sys.argv[1],
        "models": [{"name": "smollm2", "model": "embedded:smollm2-135m-instruct",
                    "replicas": 2}],
    })
    async with ModelPool(config) as pool:
        settings = SamplingSettings(max_tokens=8)
        requests = [GenerationRequest((Message("user", f"Say {i}."),), settings, i)
                    for i in range(8)]
        generations = await pool.generate("smollm2", requests)
        print("RESULT " + json.dumps({
            "replica_nodes": [r.info["node_id"] for r in pool.backends["smollm2"].replicas],
            "seeds": [g.seed for g in generations],
        }))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_replicas_spread_over_the_nodes_and_answer_in_request_order(
    two_node_cluster: str,
) -> None:
    """Two replicas of one model on a cluster of two one-CPU nodes: one on each node."""
    result = run_driver(REPLICAS_DRIVER, two_node_cluster)
    assert len(set(result["replica_nodes"])) == 2
    assert result["seeds"] == list(range(8))
