"""`multisample serve` as a process, in front of the fake OpenAI endpoint: SIGKILL under
load then a restart loses no answered request and resumes the bandit; SIGTERM lets the
requests in flight finish; a port that is taken is one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from multisample.engine.storage import read_jsonl
from tests.engine.fake_openai import FakeOpenAIServer, server  # noqa: F401 (a fixture)
from tests.reliability.helpers import kill_session, start_cli
from tests.serve.helpers import serve_config
from tests.test_cli import assert_clean_failure
from tests.test_cli import run as run_cli

USER = [{"role": "user", "content": "hello"}]


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def listening(folder: Path, process: subprocess.Popen[bytes], log: Path) -> str:
    """The URL once the server has written it (it listens from then on)."""
    while not (folder / "server.json").exists():
        assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
        await asyncio.sleep(0.01)
    return json.loads((folder / "server.json").read_text(encoding="utf-8"))["url"]


async def ask(http: httpx.AsyncClient, url: str, model: str, content: str) -> httpx.Response:
    # The clients are made with timeout=None (httpx's default is 5 s): pytest's timeout guards.
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return await http.post(f"{url}/v1/chat/completions", json=body)


async def test_a_killed_server_restarts_with_every_answered_request_on_disk_once(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = write(tmp_path, serve_config(server, str(tmp_path)))
    run, log = tmp_path / "live", tmp_path / "serve.log"
    process = start_cli("serve", config, "--name", "live", "--output-dir", tmp_path, log=log)
    answered: list[str] = []  # ids of the responses the clients received
    try:
        url = await listening(run, process, log)
        async with httpx.AsyncClient(timeout=None) as http:
            server.hold("serve-b")  # model b's requests stay in flight: the kill finds them

            async def load(index: int) -> None:
                model = ("bo4", "auto", "b")[index % 3]
                with contextlib.suppress(httpx.HTTPError):  # the kill drops connections
                    response = await ask(http, url, model, f"request {index}")
                    if response.status_code == 200:
                        answered.append(response.json()["id"])

            clients = [asyncio.ensure_future(load(i)) for i in range(15)]  # one client's 16
            while len(answered) < 8 or server.in_flight["serve-b"] == 0:
                assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
                await asyncio.sleep(0.01)
            kill_session(process)
            server.release("serve-b")
            await asyncio.gather(*clients)
    finally:
        if process.poll() is None:
            kill_session(process)
    state = json.loads((run / "selections" / "auto" / "state.json").read_text(encoding="utf-8"))

    # Restarted: the records of every answered request are there, once each.
    (run / "server.json").unlink()
    process = start_cli("serve", config, "--resume", str(run), log=log)
    try:
        url = await listening(run, process, log)
        async with httpx.AsyncClient(timeout=None) as http:
            after = await ask(http, url, "auto", "after the restart")
            assert after.status_code == 200
            resumed = (await http.get(f"{url}/v1/selections/auto")).json()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait() == 0, log.read_text(encoding="utf-8")[-3000:]
    recorded = [
        r["prompt_id"]
        for folder in ("routes/bo4", "models/b")
        for r in read_jsonl(run / folder / "progress.jsonl")
    ]
    recorded += [
        q for r in read_jsonl(run / "selections" / "auto" / "rounds.jsonl") for q in r["queries"]
    ]
    assert len(recorded) == len(set(recorded)), "a request was recorded twice"
    assert set(answered) <= set(recorded), "an answered request is missing from the records"
    # The bandit went on from its committed state (a round the kill cut short, whose
    # client got no answer, is dropped).
    rounds = list(read_jsonl(run / "selections" / "auto" / "rounds.jsonl"))
    assert resumed["rounds"] == state["round"] + 1 == len(rounds)
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))


async def test_sigterm_lets_the_requests_in_flight_finish(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = write(tmp_path, serve_config(server, str(tmp_path)))
    run, log = tmp_path / "drain", tmp_path / "drain.log"
    process = start_cli("serve", config, "--name", "drain", "--output-dir", tmp_path, log=log)
    try:
        url = await listening(run, process, log)
        async with httpx.AsyncClient(timeout=None) as http:
            server.hold("serve-a")
            try:
                pending = asyncio.ensure_future(ask(http, url, "a", "finish me"))
                while server.in_flight["serve-a"] == 0:
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGTERM)
                while "stopping: the requests in flight" not in log.read_text(encoding="utf-8"):
                    assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
                    await asyncio.sleep(0.01)
            finally:
                server.release("serve-a")
            response = await pending
        assert response.status_code == 200
        assert process.wait() == 0, log.read_text(encoding="utf-8")[-3000:]
    finally:
        if process.poll() is None:
            kill_session(process)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["requests"] == {"a": 1}
    assert [r["prompt_id"] for r in read_jsonl(run / "models" / "a" / "progress.jsonl")] == [
        response.json()["id"]
    ]


def test_a_port_in_use_is_one_line_and_leaves_no_run(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        config = write(tmp_path, serve_config(server, str(tmp_path), port=port))
        done = run_cli("serve", config, "--name", "x")
    finally:
        taken.close()
    assert_clean_failure(done, f"cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "x").exists()
