"""The gateway's HTTP face: OpenAI's chat completions and models endpoints, feedback,
health, Prometheus metrics and two pages (side-by-side comparison, the selection
dashboard), on Starlette under uvicorn.

Safe by default: it listens on 127.0.0.1 unless told otherwise; with `api_key_env` every
/v1 and /metrics request must carry `Authorization: Bearer KEY`; a body over
`limits.max_body_bytes` is refused (413) before it is read whole; `limits.concurrency`
requests are answered at once, `limits.queue` wait, and one client (its key, else its
address) may have `limits.per_client` in flight; beyond, 429 at once. A client that goes
away cancels its request's work (the engines stop generating for it). On SIGTERM
uvicorn stops accepting, the requests in flight finish, and the run directory is closed.
Nothing a request holds is used as a path.

Why not Ray Serve: the front holds no model, only the pool's handles; the pool's vLLM
actors (and their replicas across a Ray cluster, with `ray_address`) batch every
request continuously, which is what Serve's replicas would add. A selection route's
state has one writer, this process; several fronts would need to share it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from multisample.engine.backends.base import BackendError
from multisample.engine.types import Generation
from multisample.serve.config import ServeConfig
from multisample.serve.gateway import Gateway, new_id
from multisample.serve.metrics import Metrics
from multisample.serve.protocol import (
    APIError,
    ChatRequest,
    FeedbackRequest,
    Usage,
    chunk,
    completion,
    parse,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
STREAM_PIECE_CHARS = 16
"""A route's or selection's answer, known whole, is streamed in pieces of this size."""


class Admission:
    """Who may be answered now: `concurrency` at once, `queue` waiting, `per_client`
    in flight per client; anyone beyond is refused at once (429)."""

    def __init__(self, concurrency: int, queue: int, per_client: int, metrics: Metrics) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.queue = queue
        self.per_client = per_client
        self.waiting = 0
        self.clients: dict[str, int] = defaultdict(int)
        self.metrics = metrics

    async def enter(self, client: str) -> None:
        if self.clients[client] >= self.per_client:
            raise APIError(
                429,
                f"this client has {self.per_client} requests in flight, the most it may",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
            )
        if self.slots.locked() and self.waiting >= self.queue:
            raise APIError(
                429,
                "the server's queue is full; retry later",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
            )
        self.clients[client] += 1
        self.waiting += 1
        self.metrics.queue.set(self.waiting)
        try:
            await self.slots.acquire()
        except BaseException:
            self._leave_client(client)
            raise
        finally:
            self.waiting -= 1
            self.metrics.queue.set(self.waiting)
        self.metrics.in_flight.inc()

    def leave(self, client: str) -> None:
        self.slots.release()
        self.metrics.in_flight.dec()
        self._leave_client(client)

    def _leave_client(self, client: str) -> None:
        self.clients[client] -= 1
        if not self.clients[client]:
            del self.clients[client]


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientGone (and `work` cancelled) if the client goes first."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGone


class Server:
    """The HTTP endpoints over one gateway."""

    def __init__(self, config: ServeConfig, gateway: Gateway, metrics: Metrics) -> None:
        self.config = config
        self.gateway = gateway
        self.metrics = metrics
        limits = config.limits
        self.admission = Admission(limits.concurrency, limits.queue, limits.per_client, metrics)
        self.key: str | None = None
        if config.api_key_env is not None:
            self.key = os.environ.get(config.api_key_env) or None
            if self.key is None:
                raise ValueError(
                    f"api_key_env: the environment variable {config.api_key_env} is not set"
                )

    # --- checks every request passes ------------------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.key is None:
            return
        given = request.headers.get("authorization", "")
        token = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.key.encode()):
            raise APIError(
                401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key"
            )

    async def body(self, request: Request) -> bytes:
        cap = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise APIError(413, f"the body is {declared} bytes, above this server's cap of {cap}")
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > cap:
                raise APIError(413, f"the body is above this server's cap of {cap} bytes")
        return bytes(data)

    def client(self, request: Request) -> str:
        key = request.headers.get("authorization")
        if key:
            return "key:" + hmac.new(b"client", key.encode(), "sha256").hexdigest()[:16]
        return "address:" + (request.client.host if request.client else "unknown")

    def label(self, model: str) -> str:
        """A metrics label for `model`: one the server serves, else 'unknown' (a client
        must not be able to grow the metrics without bound)."""
        return model if model in dict(self.gateway.models()) else "unknown"

    # --- endpoints ---------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(self.gateway.models())})

    async def metrics_text(self, request: Request) -> Response:
        self.authorize(request)
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def models(self, request: Request) -> Response:
        self.authorize(request)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "multisample", "kind": kind}
            for name, kind in self.gateway.models()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await self._chat(request, started)
        except (APIError, BackendError) as exc:
            status = exc.status if isinstance(exc, APIError) else 502
            model = getattr(request.state, "model", "unknown")
            self.metrics.requests.labels(model, str(status)).inc()
            raise

    async def _chat(self, request: Request, started: float) -> Response:
        self.authorize(request)
        body = await self.body(request)
        chat: ChatRequest = parse(ChatRequest, body)
        request.state.model = model = self.label(chat.model)
        kind = self.gateway.kind(chat.model)
        self.gateway.check(chat, kind)
        if chat.stream and chat.n != 1:
            raise APIError(400, "n: a streamed response has one choice; ask n=1", "n")
        client = self.client(request)
        await self.admission.enter(client)
        id = new_id()
        if chat.stream:
            return StreamingResponse(
                self._events(id, chat, kind, client, started),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            answer = await until_disconnected(request, self.gateway.answer(id, chat))
        except ClientGone:
            self.metrics.requests.labels(model, "499").inc()
            return Response(status_code=499)
        finally:
            self.admission.leave(client)
        self._count(model, answer.usage, started, "200", answer.extra)
        document = completion(id, chat.model, answer.choices, answer.usage)
        if answer.trace is not None:
            document["multisample"] = {"trace": answer.trace}
        return JSONResponse(document)

    async def _events(
        self, id: str, chat: ChatRequest, kind: str, client: str, started: float
    ) -> AsyncIterator[str]:
        """The server-sent events of a streamed response: a pool model's text as it is
        generated; a route's or selection's answer, once chosen, in pieces."""
        model = self.label(chat.model)
        status = "200"
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        try:
            yield chunk(id, chat.model, {"role": "assistant", "content": ""})
            usage = Usage()
            reason: str | None = None
            extra: dict[str, Any] = {}
            if kind == "model":
                async for item in self.gateway.stream(id, chat):
                    if isinstance(item, Generation):
                        usage.add(item.prompt_tokens, item.completion_tokens)
                        reason = item.finish_reason
                    else:
                        yield chunk(id, chat.model, {"content": item})
            else:
                answer = await self.gateway.answer(id, chat)
                usage, extra = answer.usage, answer.extra
                text, reason = answer.choices[0]
                for start in range(0, len(text), STREAM_PIECE_CHARS):
                    yield chunk(
                        id, chat.model, {"content": text[start : start + STREAM_PIECE_CHARS]}
                    )
            yield chunk(id, chat.model, {}, reason=reason or "stop")
            if include_usage:
                yield chunk(id, chat.model, {}, usage=usage)
            yield "data: [DONE]\n\n"
            self._count(model, usage, started, status, extra)
        except (APIError, BackendError) as exc:
            error = (
                exc if isinstance(exc, APIError) else APIError(502, str(exc), kind="server_error")
            )
            status = str(error.status)
            self.metrics.requests.labels(model, status).inc()
            yield f"data: {json.dumps(error.document())}\n\n"
        except asyncio.CancelledError:  # the client went away: its work stops with it
            self.metrics.requests.labels(model, "499").inc()
            raise
        finally:
            self.admission.leave(client)

    def _count(
        self, model: str, usage: Usage, started: float, status: str, extra: dict[str, Any]
    ) -> None:
        self.metrics.requests.labels(model, status).inc()
        self.metrics.latency.labels(model).observe(time.perf_counter() - started)
        self.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)
        played = extra.get("selection")
        if played is not None:
            for candidate in dict.fromkeys(played["candidates"]):
                self.metrics.selections.labels(model, candidate).inc()

    async def feedback(self, request: Request) -> Response:
        self.authorize(request)
        given: FeedbackRequest = parse(FeedbackRequest, await self.body(request))
        outcome = await self.gateway.feedback(given.id, given.preferred, given.rating, given.note)
        return JSONResponse(outcome)

    async def selections(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse({"data": [s.document() for s in self.gateway.selections.values()]})

    async def selection(self, request: Request) -> Response:
        self.authorize(request)
        name = request.path_params["name"]
        if name not in self.gateway.selections:
            raise APIError(404, f"no selection route named {name!r}", "name")
        return JSONResponse(self.gateway.selections[name].document(history=True))

    async def page(self, request: Request) -> Response:
        name = (
            "compare.html" if request.url.path.rstrip("/") in ("", "/compare") else "dashboard.html"
        )
        text = (resources.files("multisample.serve") / "pages" / name).read_text(encoding="utf-8")
        return HTMLResponse(text, headers={"Content-Security-Policy": PAGE_POLICY})


PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"
)
"""The pages load nothing from elsewhere; model text is set as text, never as HTML."""


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.document(), status_code=error.status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(APIError(exc.status_code, exc.detail or "not found"))


async def _backend_error(request: Request, exc: Exception) -> Response:
    # A model that failed is not the client's mistake, nor a bug of the gateway's.
    return error_response(APIError(502, str(exc), kind="server_error"))


def build_app(server: Server, lifespan: Callable[[Starlette], Any] | None = None) -> Starlette:
    routes = [
        Route("/health", server.health),
        Route("/metrics", server.metrics_text),
        Route("/v1/models", server.models),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/feedback", server.feedback, methods=["POST"]),
        Route("/v1/selections", server.selections),
        Route("/v1/selections/{name}", server.selection),
        Route("/", server.page),
        Route("/compare", server.page),
        Route("/dashboard", server.page),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            BackendError: _backend_error,
        },
        lifespan=lifespan,
    )
