"""A fake OpenAI-compatible HTTP server on loopback, for the endpoint backend's tests and
the reliability tests that run whole commands against an endpoint.

It answers /v1/chat/completions and /v1/completions deterministically and can be scripted
per model name to inject the faults real endpoints produce: rate limits with Retry-After,
5xx, hanging responses, truncated bodies (cut JSON, or a connection dropped mid-body),
slow streams and client errors; either in order (`script`), at random with a seeded
generator (`make_chaos`), or for every request whose prompt holds a marker (`poison`). It
counts what it injected, by kind (`injected`). A test module uses it by importing the
module-scoped `server` fixture.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Fault:
    """What the server does instead of answering normally, once."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    hang_s: float = 0.0
    truncate: bool = False
    """Declare the whole answer's length, send half of it, then drop the connection."""
    trickle_s: float = 0.0
    """Send the normal answer in 8 pieces, trickle_s seconds apart (a slow stream)."""

    @property
    def kind(self) -> str:
        """A name for counting injected faults."""
        if self.truncate:
            return "dropped_mid_body"
        if self.trickle_s:
            return "slow_stream"
        if self.status != 200:
            return f"http_{self.status}" + ("_retry_after" if self.headers else "")
        if self.body is not None:
            return "bad_body"
        return "hang" if self.hang_s else "none"


@dataclass
class Chaos:
    """Random faults: each request, with probability `rate`, gets the next of `faults` in
    turn (so every kind occurs), but no request (told apart by its seed) more than
    `max_per_request` times."""

    rate: float
    faults: list[Fault]
    max_per_request: int
    rng: random.Random
    hits: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    injected: int = 0


class _DroppedMidBody(Response):
    """Announces `body`'s full length, sends half of it and ends: the server then closes
    the connection, and the client sees a body cut short."""

    def __init__(self, body: bytes) -> None:
        self.full = body
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.full)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self.full[: len(self.full) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def _trickle(body: bytes, pause_s: float) -> StreamingResponse:
    async def pieces() -> Any:
        step = max(len(body) // 8, 1)
        for start in range(0, len(body), step):
            await asyncio.sleep(pause_s)
            yield body[start : start + step]

    return StreamingResponse(pieces(), media_type="application/json")


def _streamed(answer: dict[str, Any], chat: bool) -> StreamingResponse:
    """`answer` as server-sent events, a word a chunk, then its usage and [DONE]."""
    choice = answer["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    words = text.split(" ")

    def event(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> str:
        body: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk", "choices": []}
        if delta is not None:
            piece = {"index": 0, "finish_reason": finish}
            piece.update({"delta": delta} if chat else {"text": delta.get("content", "")})
            body["choices"] = [piece]
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> Any:
        for index, word in enumerate(words):
            yield event({"content": word if index == 0 else " " + word})
        yield event({}, choice["finish_reason"])
        if "usage" in answer:
            yield event(None, usage=answer["usage"])
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    payload: dict[str, Any]
    at: float = 0.0
    """time.monotonic() when the request arrived."""


class FakeOpenAIServer:
    """State shared between the server thread and the tests, keyed by the model name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.chaos: dict[str, Chaos] = {}
        self.poisoned: dict[str, tuple[str, Fault]] = {}
        self.injected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.delay_s: dict[str, float] = {}
        self.omit_usage: set[str] = set()
        self.requests: dict[str, list[Recorded]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.gates: dict[str, threading.Event] = {}
        self.base_url = ""

    def script(self, model: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[model].extend(faults)

    def make_chaos(
        self, model: str, rate: float, faults: list[Fault], max_per_request: int, seed: int = 0
    ) -> None:
        with self.lock:
            self.chaos[model] = Chaos(rate, faults, max_per_request, random.Random(seed))

    def hold(self, model: str) -> None:
        """Answer no request of `model` (those in flight and those to come) until
        `release(model)`: a test then knows that work is unfinished."""
        with self.lock:
            self.gates.setdefault(model, threading.Event())

    def release(self, model: str) -> None:
        with self.lock:
            gate = self.gates.pop(model, None)
        if gate is not None:
            gate.set()

    def poison(self, model: str, marker: str, fault: Fault) -> None:
        """Answer every request whose last user turn contains `marker` with `fault`."""
        with self.lock:
            self.poisoned[model] = (marker, fault)

    def _pick_fault(self, model: str, payload: dict[str, Any]) -> Fault | None:
        """Under self.lock: the fault this request gets, if any."""
        if self.faults[model]:
            return self.faults[model].pop(0)
        if model in self.poisoned:
            marker, fault = self.poisoned[model]
            if marker in json.dumps(payload.get("messages") or payload.get("prompt")):
                return fault
        chaos = self.chaos.get(model)
        if chaos is not None and chaos.rng.random() < chaos.rate:
            seed = payload["seed"]
            if chaos.hits[seed] < chaos.max_per_request:
                chaos.hits[seed] += 1
                chaos.injected += 1
                return chaos.faults[(chaos.injected - 1) % len(chaos.faults)]
        return None

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
            self.requests[model].append(
                Recorded(request.url.path, dict(request.headers), payload, time.monotonic())
            )
            fault = self._pick_fault(model, payload)
            if fault is not None:
                self.injected[model][fault.kind] += 1
            self.in_flight[model] += 1
            self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
        try:
            delay = self.delay_s.get(model, 0.0) + (fault.hang_s if fault else 0.0)
            if delay:
                await asyncio.sleep(delay)
            with self.lock:
                gate = self.gates.get(model)
            if gate is not None:
                await asyncio.to_thread(gate.wait)
            if fault is not None and (fault.status != 200 or fault.body is not None):
                return Response(
                    fault.body or "",
                    status_code=fault.status,
                    headers=fault.headers,
                    media_type="application/json",
                )
            answer = self._answer(payload, chat, model)
            if payload.get("stream"):
                return _streamed(answer, chat)
            if fault is not None and fault.truncate:
                return _DroppedMidBody(json.dumps(answer).encode())
            if fault is not None and fault.trickle_s:
                return _trickle(json.dumps(answer).encode(), fault.trickle_s)
            return JSONResponse(answer)
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


class _QuietDroppedBodies(logging.Filter):
    """uvicorn logs an error for every body the server drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    """One uvicorn server in a background thread for the whole module."""
    logging.getLogger("uvicorn.error").addFilter(_QuietDroppedBodies())
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
    while not uv.started:
        if not thread.is_alive():
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    uv.should_exit = True
    thread.join()
    sock.close()
