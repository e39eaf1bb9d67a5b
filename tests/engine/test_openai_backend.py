"""OpenAIBackend against a real OpenAI-compatible HTTP server on loopback.

The server below answers /v1/chat/completions and /v1/completions deterministically and
can be scripted per model name to inject the faults real endpoints produce: rate limits
with Retry-After, 5xx, hanging responses, truncated bodies and client errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.backends.base import BackendError, render_base_prompt
from engine.backends.openai import OpenAIBackend
from engine.config import OpenAIModelSpec
from engine.types import GenerationRequest, Message, SamplingSettings

# --- the fake server ---------------------------------------------------------------------


@dataclass
class Fault:
    """What the server does instead of answering normally, once."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    hang_s: float = 0.0


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    payload: dict[str, Any]


class FakeOpenAIServer:
    """State shared between the server thread and the tests, keyed by the model name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.delay_s: dict[str, float] = {}
        self.omit_usage: set[str] = set()
        self.requests: dict[str, list[Recorded]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.base_url = ""

    def script(self, model: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[model].extend(faults)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
            ]
        )

    async def _chat(self, request: Request) -> Response:
        return await self._handle(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._handle(request, chat=False)

    async def _handle(self, request: Request, chat: bool) -> Response:
        payload = await request.json()
        model = payload["model"]
        with self.lock:
            self.requests[model].append(Recorded(request.url.path, dict(request.headers), payload))
            fault = self.faults[model].pop(0) if self.faults[model] else None
            self.in_flight[model] += 1
            self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
        try:
            delay = self.delay_s.get(model, 0.0) + (fault.hang_s if fault else 0.0)
            if delay:
                await asyncio.sleep(delay)
            if fault is not None and (fault.status != 200 or fault.body is not None):
                return Response(
                    fault.body or "",
                    status_code=fault.status,
                    headers=fault.headers,
                    media_type="application/json",
                )
            return JSONResponse(self._answer(payload, chat, model))
        finally:
            with self.lock:
                self.in_flight[model] -= 1

    def _answer(self, payload: dict[str, Any], chat: bool, model: str) -> dict[str, Any]:
        """A deterministic reply: the seed and the last user turn, words capped at max_tokens."""
        if chat:
            prompt_text = " ".join(m["content"] for m in payload["messages"])
            last_user = [m["content"] for m in payload["messages"] if m["role"] == "user"][-1]
        else:
            prompt_text = payload["prompt"]
            last_user = prompt_text.split("Instruction:\n")[-1].split("\n\nResponse:")[0]
        words = f"seed{payload['seed']} {last_user}".split()
        finish = "stop"
        if len(words) > payload["max_tokens"]:
            words, finish = words[: payload["max_tokens"]], "length"
        text = " ".join(words)
        k = payload.get("top_logprobs") if chat else payload.get("logprobs")
        tops = [{w: -0.25, **{f"alt{j}_{w}": -1.0 - j for j in range(1, k or 0)}} for w in words]
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
            if payload.get("logprobs"):
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": w,
                            "logprob": -0.25,
                            "top_logprobs": [
                                {"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()
                            ],
                        }
                        for w, top in zip(words, tops, strict=True)
                    ]
                }
        else:
            choice["text"] = text
            if payload.get("logprobs") is not None:
                choice["logprobs"] = {
                    "tokens": words,
                    "token_logprobs": [-0.25] * len(words),
                    "top_logprobs": tops,
                }
        body: dict[str, Any] = {"id": "x", "object": "completion", "choices": [choice]}
        if model not in self.omit_usage:
            body["usage"] = {
                "prompt_tokens": len(prompt_text.split()),
                "completion_tokens": len(words),
                "total_tokens": len(prompt_text.split()) + len(words),
            }
        return body


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    """One uvicorn server in a background thread for the whole module."""
    fake = FakeOpenAIServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


_counter = iter(range(1_000_000))


@pytest.fixture
async def make_backend(
    server: FakeOpenAIServer,
) -> AsyncIterator[Callable[..., OpenAIBackend]]:
    """Backends with a fresh model name each (so server scripts never leak between tests)."""
    made: list[OpenAIBackend] = []

    def make(**overrides: Any) -> OpenAIBackend:
        n = next(_counter)
        fields: dict[str, Any] = {
            "name": f"m{n}",
            "backend": "openai",
            "model": f"served-{n}",
            "base_url": server.base_url,
            "max_retries": 3,
            "backoff_s": 0.01,
            "timeout_s": 5.0,
        }
        fields.update(overrides)
        backend = OpenAIBackend(OpenAIModelSpec(**fields), SamplingSettings())
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


def req(text: str = "hello world", seed: int = 1, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),), sampling=SamplingSettings(**sampling), seed=seed
    )


# --- happy paths -------------------------------------------------------------------------


async def test_chat_payload_tokens_and_text(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(system_prompt="Be brief.")
    await backend.start()
    [gen] = await backend.generate([req("what is two plus two", seed=42, top_k=20, stop=("\n",))])
    assert gen.text == "seed42 what is two plus two"
    assert gen.model == backend.name and gen.seed == 42
    assert gen.prompt_tokens == 7  # "Be brief." + "what is two plus two", in words
    assert gen.completion_tokens == 6 and gen.finish_reason == "stop"
    assert gen.latency_s > 0 and gen.top_logprobs == ()
    [rec] = server.requests[backend.spec.model]
    assert rec.path == "/v1/chat/completions"
    p = rec.payload
    assert p["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is two plus two"},
    ]
    assert p["seed"] == 42 and p["n"] == 1 and p["top_k"] == 20 and p["stop"] == ["\n"]
    assert p["temperature"] == 0.7 and p["top_p"] == 1.0 and p["max_tokens"] == 256
    assert p["presence_penalty"] == 0.0
    assert "logprobs" not in p and "top_logprobs" not in p
    assert "authorization" not in rec.headers


async def test_chat_omits_top_k_and_system_when_unset(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    [gen] = await backend.generate([req("a b c d e", seed=3, max_tokens=2)])  # starts lazily
    assert gen.text == "seed3 a" and gen.finish_reason == "length" and gen.completion_tokens == 2
    p = server.requests[backend.spec.model][0].payload
    assert "top_k" not in p and "stop" not in p
    assert [m["role"] for m in p["messages"]] == ["user"]


async def test_base_format_uses_completions(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(prompt_format="base", system_prompt="You are terse.")
    await backend.start()
    [gen] = await backend.generate([req("name a color", seed=7)])
    [rec] = server.requests[backend.spec.model]
    assert rec.path == "/v1/completions"
    expected = render_base_prompt(
        [Message("system", "You are terse."), Message("user", "name a color")]
    )
    assert rec.payload["prompt"] == expected and "messages" not in rec.payload
    assert gen.text == "seed7 name a color"
    assert gen.prompt_tokens == len(expected.split()) and gen.completion_tokens == 4


async def test_order_preserved_and_concurrency_bounded(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(max_concurrency=4)
    server.delay_s[backend.spec.model] = 0.05
    requests = [req(f"prompt number {i}", seed=100 + i) for i in range(20)]
    gens = await backend.generate(requests)
    assert [g.text for g in gens] == [f"seed{100 + i} prompt number {i}" for i in range(20)]
    assert [g.seed for g in gens] == [100 + i for i in range(20)]
    assert len(server.requests[backend.spec.model]) == 20
    # Overlap happened (so the bound was actually exercised) but never beyond the limit.
    assert 2 <= server.max_in_flight[backend.spec.model] <= 4


async def test_logprobs_chat(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    [gen] = await backend.generate([req("x y", seed=5, logprobs=2)])
    p = server.requests[backend.spec.model][0].payload
    assert p["logprobs"] is True and p["top_logprobs"] == 2
    assert gen.top_logprobs == (
        {"seed5": -0.25, "alt1_seed5": -2.0},
        {"x": -0.25, "alt1_x": -2.0},
        {"y": -0.25, "alt1_y": -2.0},
    )


async def test_logprobs_base(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(prompt_format="base")
    [gen] = await backend.generate([req("x", seed=5, logprobs=3)])
    assert server.requests[backend.spec.model][0].payload["logprobs"] == 3
    assert gen.top_logprobs == (
        {"seed5": -0.25, "alt1_seed5": -2.0, "alt2_seed5": -3.0},
        {"x": -0.25, "alt1_x": -2.0, "alt2_x": -3.0},
    )


async def test_missing_usage_is_an_error(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    server.omit_usage.add(backend.spec.model)
    with pytest.raises(BackendError, match="usage") as info:
        await backend.generate([req()])
    assert backend.name in str(info.value) and backend.failures == 1


async def test_start_and_close_idempotent(make_backend: Callable[..., OpenAIBackend]) -> None:
    backend = make_backend()
    await backend.start()
    await backend.start()
    await backend.close()
    await backend.close()
    assert await backend.count_tokens([Message("user", "hi")]) is None
    assert await backend.context_length() is None


# --- retries -------------------------------------------------------------------------------


async def test_retry_after_on_429_is_honored(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(backoff_s=5.0)  # would be slow if Retry-After were ignored
    limited = Fault(429, {"Retry-After": "0.05"}, '{"error": {"message": "slow down"}}')
    server.script(backend.spec.model, limited, limited)
    started = time.perf_counter()
    [gen] = await backend.generate([req("ok")])
    elapsed = time.perf_counter() - started
    assert gen.text == "seed1 ok"
    assert backend.retries == 2 and backend.failures == 0
    assert len(server.requests[backend.spec.model]) == 3
    assert 0.1 <= elapsed < 2.0


async def test_retry_after_500_and_503(
    make_backend: Callable[..., OpenAIBackend],
    server: FakeOpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = make_backend()
    server.script(
        backend.spec.model,
        Fault(500, body="internal boom"),
        Fault(503, {"Retry-After": "0"}, '{"error": {"message": "overloaded"}}'),
    )
    with caplog.at_level(logging.WARNING, logger="engine.backends.openai"):
        [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "engine.backends.openai"]
    assert len(warnings) == 2
    assert "HTTP 500" in warnings[0] and "internal boom" in warnings[0]
    assert "HTTP 503" in warnings[1] and "overloaded" in warnings[1]


async def test_retry_after_timeout(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(timeout_s=0.2)
    server.script(backend.spec.model, Fault(hang_s=1.0))
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 1
    # The latency is the successful attempt's, not the time lost to the timeout.
    assert gen.latency_s < 0.2


async def test_retry_after_truncated_body(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    server.script(
        backend.spec.model,
        Fault(200, body='{"id": "x", "choices": [{"index": 0, "mess'),
        Fault(200, body='{"id": "x"}'),
    )
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 2


async def test_exhausted_retries(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(max_retries=2)
    server.script(backend.spec.model, *[Fault(502, body="bad gateway")] * 3)
    with pytest.raises(BackendError) as info:
        await backend.generate([req()])
    message = str(info.value)
    assert "\n" not in message
    assert repr(backend.name) in message and backend.endpoint in message
    assert "3 attempts" in message and "HTTP 502" in message and "bad gateway" in message
    assert backend.retries == 2 and backend.failures == 1
    assert len(server.requests[backend.spec.model]) == 3


async def test_400_fails_at_once_with_server_message(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    error = (
        '{"error": {"message": "This model\'s maximum context length is 2048 tokens.",'
        ' "type": "invalid_request_error"}}'
    )
    server.script(backend.spec.model, Fault(400, body=error))
    with pytest.raises(BackendError) as info:
        await backend.generate([req()])
    message = str(info.value)
    assert repr(backend.name) in message and backend.endpoint in message
    assert "HTTP 400" in message and "maximum context length is 2048" in message
    assert backend.retries == 0 and backend.failures == 1
    assert len(server.requests[backend.spec.model]) == 1


async def test_404_plain_body(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    server.script(backend.spec.model, Fault(404, body="no such model\n" + "x" * 500))
    with pytest.raises(BackendError) as info:
        await backend.generate([req()])
    message = str(info.value)
    assert "HTTP 404" in message and "no such model" in message
    assert "\n" not in message and "x" * 200 not in message


async def test_one_failure_fails_the_batch(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    server.delay_s[backend.spec.model] = 0.02
    server.script(backend.spec.model, Fault(400, body='{"error": {"message": "bad"}}'))
    with pytest.raises(BackendError, match="bad"):
        await backend.generate([req(seed=i) for i in range(5)])


async def test_unreachable_endpoint(make_backend: Callable[..., OpenAIBackend]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    backend = make_backend(name="x", base_url=f"http://127.0.0.1:{port}/v1/", max_retries=2)
    with pytest.raises(BackendError) as info:
        await backend.generate([req()])
    assert str(info.value) == (
        f"model 'x': cannot reach http://127.0.0.1:{port}/v1/chat/completions "
        "after 3 attempts: connection refused"
    )


# --- API key -------------------------------------------------------------------------------

SECRET = "sk-test-very-secret-0123456789"


async def test_api_key_sent_and_never_logged(
    make_backend: Callable[..., OpenAIBackend],
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MULTISAMPLE_TEST_KEY", SECRET)
    backend = make_backend(api_key_env="MULTISAMPLE_TEST_KEY")
    # A retry (logged) and then a 401 whose body echoes the key, as some providers do.
    server.script(
        backend.spec.model,
        Fault(500, body=f"upstream rejected {SECRET}"),
        Fault(
            401, body=json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}"}})
        ),
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(BackendError) as info:
        await backend.generate([req()])
    message = str(info.value)
    assert "HTTP 401" in message and "Incorrect API key provided" in message
    assert SECRET not in message and SECRET not in repr(info.value) and SECRET not in repr(backend)
    [gen] = await backend.generate([req("fine")])
    assert gen.text == "seed1 fine"
    recorded = server.requests[backend.spec.model]
    assert [r.headers["authorization"] for r in recorded] == [f"Bearer {SECRET}"] * 3
    assert backend.retries == 1
    assert caplog.records, "expected at least the retry warning"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.args)


async def test_missing_api_key_env(
    make_backend: Callable[..., OpenAIBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MULTISAMPLE_TEST_MISSING_KEY", raising=False)
    backend = make_backend(name="keyed", api_key_env="MULTISAMPLE_TEST_MISSING_KEY")
    with pytest.raises(BackendError) as info:
        await backend.start()
    message = str(info.value)
    assert "'keyed'" in message and "MULTISAMPLE_TEST_MISSING_KEY" in message
    assert "not set" in message
