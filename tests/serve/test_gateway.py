"""The gateway over real HTTP, with OpenAI's own client, in front of the fake OpenAI
endpoint (no engine): pass-through, streaming, a strategy route, both kinds of selection
route, every bad request, the caps, and the traffic as a run directory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

import multisample
from multisample.engine.rewards.constraints import fraction_met, parse_constraints
from multisample.engine.storage import read_jsonl
from multisample.jobs.export import ExportOptions, export_run
from tests.engine.fake_openai import FakeOpenAIServer, server  # noqa: F401 (a fixture)
from tests.serve.helpers import length_reward, serve_config

USER = [{"role": "user", "content": "name three colours"}]


@pytest.fixture
async def gateway(server: FakeOpenAIServer, tmp_path: Path) -> AsyncIterator[str]:  # noqa: F811
    async with multisample.serving(serve_config(server, str(tmp_path)), name="live") as url:
        yield url


def client(url: str, **options: Any) -> AsyncOpenAI:
    # No timeout of its own (the client's default is 600 s): pytest's timeout guards.
    options = {"timeout": None, **options}
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, **options)


async def test_a_pool_model_answers_through_the_openai_client(
    gateway: str,
    server: FakeOpenAIServer,  # noqa: F811
) -> None:
    answer = await client(gateway).chat.completions.create(
        model="a", messages=USER, n=2, seed=7, max_tokens=50, temperature=0.5
    )
    # The fake endpoint answers "seed<seed> <last user turn>": choice i has seed 7 + i.
    assert [c.message.content for c in answer.choices] == [
        "seed7 name three colours",
        "seed8 name three colours",
    ]
    assert answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens == 6
    sent = server.requests["serve-a"][-1].payload
    assert (sent["temperature"], sent["max_tokens"]) == (0.5, 50)


async def test_a_streamed_answer_arrives_in_pieces_with_its_usage(gateway: str) -> None:
    stream = await client(gateway).chat.completions.create(
        model="b", messages=USER, seed=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 4  # a word a piece, as the endpoint streamed them
    assert "".join(pieces) == "seed3 name three colours"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    finished = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finished[-1] == "stop"


async def test_a_route_runs_its_strategy_and_sums_every_calls_tokens(
    gateway: str, tmp_path: Path
) -> None:
    answer = await client(gateway).chat.completions.create(
        model="bo4", messages=USER, seed=11, extra_body={"multisample": {"trace": True}}
    )
    (search,) = answer.model_extra["multisample"]["trace"]["searches"]
    texts = [c["text"] for c in search["candidates"]]
    assert len(texts) == 4
    best = max(texts, key=lambda t: length_reward("", [t], None)[0])
    assert answer.choices[0].message.content == best
    assert search["selected"] == texts.index(best)
    # usage: all four samples, as the route's records have them.
    samples = list(read_jsonl(tmp_path / "live" / "routes" / "bo4" / "samples.jsonl"))
    assert answer.usage.completion_tokens == sum(s["completion_tokens"] for s in samples)
    assert answer.usage.prompt_tokens == sum(s["prompt_tokens"] for s in samples)


async def test_a_requests_task_reaches_the_reward_and_the_records(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Live traffic carries no prompts file: `multisample.constraints` and `.reference`
    give a request's task to the rewards (without them the verifiable reward scores every
    answer 1.0), and a route scored by `correct` refuses a request without a reference."""
    routes = [
        {"name": name, "strategy": {"kind": "best_of_n", "model": "a"}, "reward": reward}
        for name, reward in (("checked", {"kind": "verifiable"}), ("graded", {"kind": "correct"}))
    ]
    config = serve_config(server, str(tmp_path), routes=routes, selections=[])
    constraints = [{"kind": "max_words", "n": 2}, {"kind": "include_keywords", "keywords": ["red"]}]
    async with multisample.serving(config, name="live") as url:
        answer = await client(url).chat.completions.create(
            model="checked",
            messages=USER,
            extra_body={"multisample": {"trace": True, "constraints": constraints}},
        )
        async with httpx.AsyncClient(timeout=None) as http:
            refused = await http.post(
                f"{url}/v1/chat/completions", json={"model": "graded", "messages": USER}
            )
        graded = await client(url).chat.completions.create(
            model="graded", messages=USER, extra_body={"multisample": {"reference": "3"}}
        )
    (search,) = answer.model_extra["multisample"]["trace"]["searches"]
    met = fraction_met(parse_constraints(constraints), answer.choices[0].message.content)
    assert met < 1.0 and [c["reward"] for c in search["candidates"]] == [met] * 4
    (record,) = read_jsonl(tmp_path / "live" / "routes" / "checked" / "prompts.jsonl")
    assert record["constraints"] == constraints
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "multisample.reference"
    assert graded.choices[0].message.content  # the fake's answers name no 3: all score 0
    (record,) = read_jsonl(tmp_path / "live" / "routes" / "graded" / "prompts.jsonl")
    assert record["reference"] == "3"


async def test_a_selection_route_learns_from_its_reward_and_commits_each_round(
    gateway: str, tmp_path: Path
) -> None:
    for index in range(3):
        answer = await client(gateway).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": f"question {index}"}]
        )
        assert len(answer.choices) == 1
    async with httpx.AsyncClient(timeout=None) as http:
        state = (await http.get(f"{gateway}/v1/selections/auto")).json()
    assert state["rounds"] == 3 and len(state["history"]) == 3
    assert sum(state["selections"].values()) >= 3
    rounds = list(read_jsonl(tmp_path / "live" / "selections" / "auto" / "rounds.jsonl"))
    assert [r["round"] for r in rounds] == [1, 2, 3]


async def test_client_feedback_decides_a_duel(gateway: str, tmp_path: Path) -> None:
    answer = await client(gateway).chat.completions.create(model="duel", messages=USER)
    assert len(answer.choices) == 2
    assert answer.choices[0].message.content != answer.choices[1].message.content
    async with httpx.AsyncClient(timeout=None) as http:
        waiting = (await http.get(f"{gateway}/v1/selections/duel")).json()
        assert (waiting["rounds"], waiting["pending"]) == (0, 1)
        given = await http.post(f"{gateway}/v1/feedback", json={"id": answer.id, "preferred": 1})
        assert given.status_code == 200 and given.json()["recorded"]
        again = await http.post(f"{gateway}/v1/feedback", json={"id": answer.id, "preferred": 0})
        assert again.status_code == 404 and again.json()["error"]["param"] == "id"
        decided = (await http.get(f"{gateway}/v1/selections/duel")).json()
    assert (decided["rounds"], decided["pending"]) == (1, 0)
    preferred = given.json()["preferred"]
    row = decided["candidates"].index(preferred)
    assert sum(decided["wins"][row]) == 1
    feedback = list(read_jsonl(tmp_path / "live" / "feedback.jsonl"))
    assert feedback[0]["id"] == answer.id and feedback[0]["selection"] == "duel"


BAD = [
    ({"model": "nope", "messages": USER}, 404, "model", "does not exist"),
    ({"model": "a", "messages": USER, "logprobs": True}, 400, "logprobs", "unrecognized"),
    ({"model": "a", "messages": []}, 400, "messages", "at least 1"),
    ({"model": "a", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", ""),
    (
        {"model": "a", "messages": [*USER, {"role": "assistant", "content": "x"}]},
        400,
        None,
        "the last message must be the user's",
    ),
    ({"model": "a", "messages": USER, "n": 9}, 400, "n", "cap of 8"),
    ({"model": "a", "messages": USER, "max_tokens": 99999}, 400, "max_tokens", "cap of 2048"),
    ({"model": "a", "messages": USER, "temperature": 3}, 400, "temperature", "less than"),
    ({"model": "a", "messages": USER, "stream": True, "n": 2}, 400, "n", "one choice"),
    ({"model": "duel", "messages": USER, "n": 2}, 400, "n", "n=1"),
    ({"model": "a", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "4"),
    (
        {"model": "bo4", "messages": USER, "multisample": {"constraints": [{"kind": "max_words"}]}},
        400,
        "multisample.constraints",
        "constraints[0].n",
    ),
]


@pytest.mark.parametrize(("body", "status", "param", "says"), BAD)
async def test_a_bad_request_is_refused_in_openais_error_shape(
    gateway: str, body: dict[str, Any], status: int, param: str | None, says: str
) -> None:
    async with httpx.AsyncClient(timeout=None) as http:
        response = await http.post(f"{gateway}/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]


async def test_malformed_oversized_and_unknown_requests_are_no_server_errors(
    gateway: str,
) -> None:
    async with httpx.AsyncClient(timeout=None) as http:
        garbage = await http.post(f"{gateway}/v1/chat/completions", content=b"{not json")
        array = await http.post(f"{gateway}/v1/chat/completions", json=[1, 2])
        huge = await http.post(f"{gateway}/v1/chat/completions", content=b"x" * 1_000_001)
        nowhere = await http.get(f"{gateway}/v1/nowhere")
        wrong_method = await http.get(f"{gateway}/v1/chat/completions")
    assert [r.status_code for r in (garbage, array, huge, nowhere, wrong_method)] == [
        400,
        400,
        413,
        404,
        405,
    ]
    for response in (garbage, array, huge, nowhere, wrong_method):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_an_api_key_is_asked_for_when_configured(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_KEY", "s3cret")
    config = serve_config(server, str(tmp_path), api_key_env="GATEWAY_KEY")
    async with multisample.serving(config, name="keyed") as url:
        with pytest.raises(openai.AuthenticationError):
            await client(url).chat.completions.create(model="a", messages=USER)
        keyed = AsyncOpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0, timeout=None)
        answer = await keyed.chat.completions.create(model="a", messages=USER, seed=1)
        assert answer.choices[0].message.content.startswith("seed1")
        async with httpx.AsyncClient(timeout=None) as http:
            assert (await http.get(f"{url}/health")).status_code == 200  # open to probes
            assert (await http.get(f"{url}/metrics")).status_code == 401


async def test_a_full_queue_is_refused_at_once_and_the_held_request_completes(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = serve_config(server, str(tmp_path), limits={"concurrency": 1, "queue": 0})
    async with multisample.serving(config, name="full") as url:
        server.hold("serve-a")
        try:
            first = asyncio.ensure_future(
                client(url).chat.completions.create(model="a", messages=USER, seed=5)
            )
            while server.in_flight["serve-a"] == 0:  # the first request is being answered
                await asyncio.sleep(0.01)
            with pytest.raises(openai.RateLimitError, match="queue is full"):
                await client(url).chat.completions.create(model="b", messages=USER)
        finally:
            server.release("serve-a")
        assert (await first).choices[0].message.content.startswith("seed5")


async def test_one_client_may_not_hold_every_slot(
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = serve_config(server, str(tmp_path), limits={"per_client": 1})
    async with multisample.serving(config, name="fair") as url:
        server.hold("serve-a")
        try:
            first = asyncio.ensure_future(
                client(url).chat.completions.create(model="a", messages=USER)
            )
            while server.in_flight["serve-a"] == 0:
                await asyncio.sleep(0.01)
            with pytest.raises(openai.RateLimitError, match="requests in flight"):
                await client(url).chat.completions.create(model="b", messages=USER)
        finally:
            server.release("serve-a")
        await first


async def test_the_traffic_is_a_run_directory_export_reads(gateway: str, tmp_path: Path) -> None:
    for index in range(4):
        await client(gateway).chat.completions.create(
            model="bo4", messages=[{"role": "user", "content": f"prompt {index}"}]
        )
    route = tmp_path / "live" / "routes" / "bo4"
    manifest = export_run(route, ExportOptions())
    assert manifest["rows"]["sft-train.jsonl"] == 4  # each request's best answer
    prompts = [json.loads(line)["prompt"] for line in (route / "prompts.jsonl").open()]
    assert prompts == [f"prompt {i}" for i in range(4)]


async def test_metrics_count_requests_tokens_and_selections(gateway: str) -> None:
    await client(gateway).chat.completions.create(model="a", messages=USER, seed=1)
    await client(gateway).chat.completions.create(model="auto", messages=USER)
    async with httpx.AsyncClient(timeout=None) as http:
        await http.post(
            f"{gateway}/v1/chat/completions", json={"model": "x" * 50, "messages": USER}
        )
        text = (await http.get(f"{gateway}/metrics")).text
    assert 'multisample_requests_total{model="a",status="200"} 1.0' in text
    assert 'multisample_requests_total{model="unknown",status="404"} 1.0' in text  # no new label
    assert 'multisample_tokens_total{kind="completion",model="a"} 4.0' in text
    assert 'multisample_selections_total{candidate="bo4",selection="auto"}' in text
    assert "multisample_queue_depth 0.0" in text
