"""A backend for models behind an OpenAI-compatible HTTP API (vLLM, SGLang, hosted APIs).

Remote endpoints fail in ordinary ways: rate limits, overloaded servers, hanging, slow,
dropped or truncated responses. Those are retried with capped, jittered exponential
backoff (a server's Retry-After wins), while errors no retry can fix (a bad request, a
wrong key, an unknown model) fail at once with one line that says which model, which URL
and what the server said. Each attempt has one deadline, `timeout_s`, for the whole
response, so a server that trickles its body byte by byte cannot hold a request forever.
The API key is read from the environment at start and kept only in the HTTP client's
headers, so it never reaches a log record, a repr, an exception message or a run directory.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from multisample.engine.backends.base import BackendError, render_base_prompt, stop_strings
from multisample.engine.config import OpenAIModelSpec
from multisample.engine.types import (
    Generation,
    GenerationRequest,
    Message,
    SamplingSettings,
    message_dicts,
)

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
"""Longest computed backoff between two attempts; beyond this a retry no longer helps."""
MAX_RETRY_AFTER_S = 60.0
"""Longest wait a server's Retry-After header may impose on one attempt."""
_BODY_EXCERPT_CHARS = 200

MAX_RESPONSE_BYTES = 32 * 2**20
"""The largest response body read (one completion's JSON is kilobytes)."""
"""How much of a non-JSON error body goes into an error message."""
HTTPX_MAX_CONNECTIONS = 100
HTTPX_KEEPALIVE_CONNECTIONS = 20
"""httpx's default connection limits, kept as floors."""
RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Client-error statuses worth another attempt (as OpenAI's own client retries them:
request timeout, conflict, rate limit); every 5xx is retried too."""


class _RetryableError(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after
        self.unreachable = False


class OpenAIBackend:
    """One model served over an OpenAI-compatible HTTP API.

    Each request becomes one HTTP call with n=1 and its own seed, so a sample is
    reproducible per request exactly as with the in-process vLLM backend.
    """

    def __init__(self, spec: OpenAIModelSpec, default_sampling: SamplingSettings) -> None:
        self.spec = spec
        self.name: str = spec.name
        # The pool merges defaults into every request; kept only for introspection.
        self.default_sampling = default_sampling
        self.retries: int = 0
        """Attempts repeated after a retryable failure (the run summary reports it)."""
        self.failures: int = 0
        """Requests that ended in a BackendError."""
        self._base_url = spec.base_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self._api_key: str | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        # Spelled out so that no future attribute (the key) ever slips into a repr.
        return f"OpenAIBackend(name={self.name!r}, base_url={self._base_url!r})"

    @property
    def endpoint(self) -> str:
        """The URL this model's requests go to, which depends on the prompt format."""
        path = "chat/completions" if self.spec.prompt_format == "chat" else "completions"
        return f"{self._base_url}/{path}"

    async def start(self) -> None:
        """Read the API key and open the HTTP client. Idempotent.

        Nothing is sent here: reachability shows on the first request, where a failure
        names the URL, rather than as a probe that some servers do not answer.
        """
        if self._client is not None:
            return
        headers: dict[str, str] = {}
        if self.spec.api_key_env:
            key = os.environ.get(self.spec.api_key_env)
            if not key:
                raise BackendError(
                    f"model {self.name!r}: environment variable "
                    f"{self.spec.api_key_env} is not set (it should hold the API key)"
                )
            self._api_key = key
            headers["Authorization"] = f"Bearer {key}"
        self._semaphore = asyncio.Semaphore(self.spec.max_concurrency)
        self._client = httpx.AsyncClient(
            timeout=self.spec.timeout_s, headers=headers, limits=connection_limits(self.spec)
        )

    def events(self) -> dict[str, int]:
        return {"retries": self.retries, "failed_requests": self.failures}

    async def close(self) -> None:
        """Close the HTTP client. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Unknown: generic endpoints offer no tokenizer (usage arrives with each response)."""
        return None

    async def context_length(self) -> int | None:
        """Unknown: the OpenAI API does not report a model's context window."""
        return None

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """All requests run concurrently, at most spec.max_concurrency in flight.

        If one request fails for good, the others are cancelled and its BackendError is
        raised: a batch is all-or-nothing, as the pool expects one generation per request.
        """
        if not requests:
            return []
        await self.start()
        tasks = [asyncio.ensure_future(self._generate_one(request)) for request in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Generation]:
        """The response's text as the server streams it (server-sent events), piece by
        piece, then the whole Generation (its usage asked for in the stream). Not retried:
        pieces already passed on cannot be taken back."""
        await self.start()
        client, semaphore = self._client, self._semaphore
        assert client is not None and semaphore is not None
        url = self.endpoint
        payload = {**self._payload(request), "stream": True}
        payload["stream_options"] = {"include_usage": True}
        chat = self.spec.prompt_format == "chat"
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        stop: str | None = None
        started = time.perf_counter()
        async with semaphore:
            try:
                async with client.stream("POST", url, json=payload) as response:
                    if response.status_code != 200:
                        body = (await response.aread())[:_BODY_EXCERPT_CHARS]
                        raise BackendError(
                            f"model {self.name!r}: {url} answered {response.status_code}: "
                            f"{self._one_line(body.decode('utf-8', 'replace'))}"
                        )
                    async for line in response.aiter_lines():
                        data = line.removeprefix("data:").strip()
                        if not line.startswith("data:") or not data:
                            continue
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or []:
                            delta = choice.get("delta") or {} if chat else choice
                            piece = delta.get("content" if chat else "text")
                            finish = choice.get("finish_reason") or finish
                            stop = _stop_string(choice.get("stop_reason")) or stop
                            if piece:
                                pieces.append(piece)
                                yield piece
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                raise BackendError(
                    f"model {self.name!r}: streaming from {url} failed: "
                    f"{type(exc).__name__}: {self._one_line(str(exc))}"
                ) from None
        if not isinstance(usage.get("prompt_tokens"), int):
            raise BackendError(f"model {self.name!r}: {url} streamed no token usage")
        yield Generation(
            text="".join(pieces),
            model=self.name,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish,
            seed=request.seed,
            latency_s=time.perf_counter() - started,
            stop_reason=stop,
        )

    # --- one request -------------------------------------------------------------------

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body for one request; optional fields only when they mean something."""
        sampling = request.sampling
        messages = list(request.messages)
        if self.spec.system_prompt:
            messages.insert(0, Message(role="system", content=self.spec.system_prompt))
        payload: dict[str, Any] = {
            "model": self.spec.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "presence_penalty": sampling.presence_penalty,
            "seed": request.seed,
            "n": 1,
        }
        stop = stop_strings(sampling.stop, self.spec.prompt_format)
        if stop:
            # Omitted when empty: some hosted APIs reject an empty stop list.
            payload["stop"] = stop
        if sampling.ignore_eos:
            payload["ignore_eos"] = True  # a vLLM server extra, like top_k
        if sampling.top_k != -1:
            # Not an OpenAI field; vLLM and SGLang servers accept it as an extra.
            payload["top_k"] = sampling.top_k
        if self.spec.prompt_format == "chat":
            payload["messages"] = message_dicts(messages)
            if request.prefix:
                # vLLM's server continues a final assistant turn with these extras.
                payload["messages"].append({"role": "assistant", "content": request.prefix})
                payload["continue_final_message"] = True
                payload["add_generation_prompt"] = False
            if sampling.logprobs is not None:
                payload["logprobs"] = True
                payload["top_logprobs"] = sampling.logprobs
        else:
            payload["prompt"] = render_base_prompt(messages) + request.prefix
            if sampling.logprobs is not None:
                payload["logprobs"] = sampling.logprobs
        return payload

    async def _generate_one(self, request: GenerationRequest) -> Generation:
        url = self.endpoint
        body, latency_s = await self._post_with_retries(url, self._payload(request))
        try:
            return self._parse(body, request, latency_s)
        except BackendError:
            self.failures += 1
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            self.failures += 1
            raise BackendError(
                f"model {self.name!r}: unexpected response shape from {url}: "
                f"{type(exc).__name__}: {self._one_line(str(exc))}"
            ) from None

    def _parse(
        self, body: dict[str, Any], request: GenerationRequest, latency: float
    ) -> Generation:
        choice = body["choices"][0]
        usage = body.get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
            raise BackendError(
                f"model {self.name!r}: {self.endpoint} returned no token usage; token "
                "accounting needs the server's counts (enable usage reporting on the server)"
            )
        completion_tokens = usage.get("completion_tokens")
        if not isinstance(completion_tokens, int):
            raise BackendError(
                f"model {self.name!r}: {self.endpoint} returned usage without completion_tokens"
            )
        logprobs = choice.get("logprobs") or {}
        if self.spec.prompt_format == "chat":
            text = choice["message"].get("content") or ""
            top: list[dict[str, float]] = [
                {
                    entry["token"]: float(entry["logprob"])
                    for entry in item.get("top_logprobs") or []
                }
                for item in logprobs.get("content") or []
            ]
        else:
            text = choice.get("text") or ""
            top = [
                {str(token): float(value) for token, value in (item or {}).items()}
                for item in logprobs.get("top_logprobs") or []
            ]
        return Generation(
            text=text,
            model=self.name,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=completion_tokens,
            finish_reason=choice.get("finish_reason"),
            seed=request.seed,
            latency_s=latency,
            top_logprobs=tuple(top),
            stop_reason=_stop_string(choice.get("stop_reason")),
        )

    # --- HTTP with retries ---------------------------------------------------------------

    async def _post_with_retries(
        self, url: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], float]:
        """POST until a usable body arrives; returns it and the successful attempt's latency."""
        attempts = self.spec.max_retries + 1
        last: _RetryableError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(url, payload)
            except _RetryableError as exc:
                last = exc
            if attempt == attempts:
                break
            delay = self._delay(attempt, last.retry_after)
            self.retries += 1
            logger.warning(
                "model %r: attempt %d/%d to %s failed (%s); retrying in %.2f s",
                self.name,
                attempt,
                attempts,
                url,
                last.description,
                delay,
            )
            await asyncio.sleep(delay)
        assert last is not None
        self.failures += 1
        if last.unreachable:
            raise BackendError(
                f"model {self.name!r}: cannot reach {url} after {attempts} attempts: "
                f"{last.description}"
            )
        raise BackendError(
            f"model {self.name!r}: request to {url} failed after {attempts} attempts; "
            f"last error: {last.description}"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt (attempt counts from 1)."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        base = min(self.spec.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        # Jitter spreads out many requests that failed together, so they do not retry
        # in lockstep against a server that is already struggling.
        return base * random.uniform(0.5, 1.0)

    async def _attempt(self, url: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """One HTTP call. Raises _RetryableError, or BackendError for what retrying cannot fix."""
        client = self._client
        semaphore = self._semaphore
        if client is None or semaphore is None:
            raise BackendError(f"model {self.name!r}: backend is closed")
        async with semaphore:
            started = time.perf_counter()
            try:
                # httpx's timeout bounds each read; this bounds the whole response.
                async with asyncio.timeout(self.spec.timeout_s):
                    response = await self._post(client, url, payload)
            except (httpx.TimeoutException, TimeoutError):
                raise _RetryableError(f"timed out after {self.spec.timeout_s:g} s") from None
            except httpx.ConnectError as exc:
                error = _RetryableError(self._describe_connect_error(exc))
                error.unreachable = True
                raise error from None
            except httpx.TransportError as exc:
                raise _RetryableError(
                    f"{type(exc).__name__}: {self._one_line(str(exc)) or 'transport error'}"
                ) from None
            latency = time.perf_counter() - started
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = _retry_after(response) if status in (429, 503) else None
            raise _RetryableError(
                f"HTTP {status}: {self._server_message(response)}", retry_after=retry_after
            )
        if status >= 400:
            self.failures += 1
            raise BackendError(
                f"model {self.name!r}: {url} returned HTTP {status}: "
                f"{self._server_message(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise _RetryableError(
                f"HTTP {status} with a body that is not valid JSON (truncated?): "
                f"{self._one_line(response.text[:_BODY_EXCERPT_CHARS])!r}"
            ) from None
        if not isinstance(body, dict) or not body.get("choices"):
            raise _RetryableError(f"HTTP {status} with a JSON body that has no 'choices'")
        return body, latency

    async def _post(
        self, client: httpx.AsyncClient, url: str, payload: dict[str, Any]
    ) -> httpx.Response:
        """POST, and read the body up to MAX_RESPONSE_BYTES: a server that sends more is an
        error (one generation's JSON is far smaller), not a memory to fill."""
        async with client.stream("POST", url, json=payload) as streamed:
            chunks, size = [], 0
            async for chunk in streamed.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    self.failures += 1
                    raise BackendError(
                        f"model {self.name!r}: {url} sent more than "
                        f"{MAX_RESPONSE_BYTES // 2**20} MiB for one response"
                    )
                chunks.append(chunk)
        return httpx.Response(
            streamed.status_code,
            headers=streamed.headers,
            content=b"".join(chunks),
            request=streamed.request,
        )

    # --- messages --------------------------------------------------------------------------

    def _one_line(self, text: str) -> str:
        """Collapse whitespace so a message stays one line, and redact the API key.

        Some servers echo the key they rejected ("Incorrect API key provided: sk-...").
        """
        text = re.sub(r"\s+", " ", text).strip()
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _server_message(self, response: httpx.Response) -> str:
        """The server's own explanation: OpenAI's error.message, else the start of the body."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return self._one_line(str(error["message"]))
            if isinstance(error, str) and error:
                return self._one_line(error)
            if isinstance(body.get("message"), str):
                return self._one_line(body["message"])
            if isinstance(body.get("detail"), str):
                return self._one_line(body["detail"])
        excerpt = self._one_line(response.text[:_BODY_EXCERPT_CHARS])
        return excerpt or response.reason_phrase or "(empty body)"

    def _describe_connect_error(self, exc: httpx.ConnectError) -> str:
        """'connection refused' when that is what happened; httpx hides it in the chain."""
        seen: set[int] = set()
        cause: BaseException | None = exc
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, ConnectionRefusedError) or (
                isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
            ):
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect: {self._one_line(str(exc)) or type(exc).__name__}"


def connection_limits(spec: OpenAIModelSpec) -> httpx.Limits:
    """httpx's pool holds 100 connections and keeps 20 alive by default: a
    `max_concurrency` above them would silently wait for a connection, or reconnect for
    every request. One connection per request in flight, each kept for the next."""
    return httpx.Limits(
        max_connections=max(HTTPX_MAX_CONNECTIONS, spec.max_concurrency),
        max_keepalive_connections=max(HTTPX_KEEPALIVE_CONNECTIONS, spec.max_concurrency),
    )


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (delay-seconds, or an HTTP date from now), or None
    if it is absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return seconds if seconds >= 0 and seconds == seconds else None  # no NaN


def _stop_string(reason: Any) -> str | None:
    """vLLM's `stop_reason` when it names a stop string (a token id or nothing else)."""
    return reason if isinstance(reason, str) else None
