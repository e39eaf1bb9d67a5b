"""OpenAIBackend against a real OpenAI-compatible HTTP server on loopback: the scriptable
fake of tests/engine/fake_openai.py, which injects the faults real endpoints produce."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest

from multisample.engine.backends.base import BackendError, render_base_prompt
from multisample.engine.backends.openai import OpenAIBackend, _retry_after
from multisample.engine.config import OpenAIModelSpec
from multisample.engine.types import GenerationRequest, Message, SamplingSettings
from tests.engine.fake_openai import FakeOpenAIServer, Fault, server

__all__ = ["server"]  # the module-scoped loopback server fixture

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


def recorded_delays(backend: OpenAIBackend) -> list[float]:
    """The waits the backend decides between attempts, in order, as it decides them."""
    delays: list[float] = []
    decide = backend._delay

    def recorded(attempt: int, retry_after: float | None) -> float:
        delays.append(decide(attempt, retry_after))
        return delays[-1]

    backend._delay = recorded  # type: ignore[method-assign]
    return delays


async def test_retry_after_on_429_is_honored(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(backoff_s=5.0)  # the backoff, were Retry-After ignored
    limited = Fault(429, {"Retry-After": "0.05"}, '{"error": {"message": "slow down"}}')
    server.script(backend.spec.model, limited, limited)
    delays = recorded_delays(backend)
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok"
    assert backend.retries == 2 and backend.failures == 0
    assert len(server.requests[backend.spec.model]) == 3
    assert delays == [0.05, 0.05]


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
    with caplog.at_level(logging.WARNING, logger="multisample.engine.backends.openai"):
        [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 2
    logger = "multisample.engine.backends.openai"
    warnings = [r.getMessage() for r in caplog.records if r.name == logger]
    assert len(warnings) == 2
    assert "HTTP 500" in warnings[0] and "internal boom" in warnings[0]
    assert "HTTP 503" in warnings[1] and "overloaded" in warnings[1]


async def test_retry_after_timeout(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(timeout_s=0.2)
    server.script(backend.spec.model, Fault(hang_s=1.0))
    started = time.perf_counter()
    [gen] = await backend.generate([req("ok")])
    elapsed = time.perf_counter() - started
    assert gen.text == "seed1 ok" and backend.retries == 1
    # The latency is the successful attempt's, not the time lost to the timeout: the
    # first attempt alone took the timeout's 0.2 s of the whole, however slow the machine.
    assert gen.latency_s <= elapsed - 0.2


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


async def test_retry_after_connection_dropped_mid_body(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend()
    server.script(backend.spec.model, Fault(truncate=True), Fault(truncate=True))
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 2
    assert server.injected[backend.spec.model] == {"dropped_mid_body": 2}


async def test_slow_stream_within_the_deadline_is_not_retried(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(timeout_s=60.0)
    server.script(backend.spec.model, Fault(trickle_s=0.02))
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 0
    assert gen.latency_s >= 0.1  # it really came in pieces


async def test_slow_stream_past_the_deadline_is_retried(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    # Every piece arrives well within httpx's per-read timeout, so only the deadline on
    # the whole response stops the trickle (0.8 s in all against 0.3 s): the first attempt
    # is cut and retried, where without it the trickle would finish and count as one.
    backend = make_backend(timeout_s=0.3)
    server.script(backend.spec.model, Fault(trickle_s=0.1))
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 1


@pytest.mark.parametrize("status", [408, 409, 502, 504])
async def test_transient_statuses_are_retried(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer, status: int
) -> None:
    backend = make_backend()
    server.script(backend.spec.model, Fault(status, body="try again"))
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 1


def test_retry_after_header_forms() -> None:

    def parse(value: str) -> float | None:
        return _retry_after(httpx.Response(429, headers={"Retry-After": value}))

    assert parse("2") == 2.0 and parse("0.5") == 0.5
    in_an_hour = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert 3500 <= (parse(in_an_hour) or 0) <= 3600  # the date has whole seconds
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse(past) == 0.0
    assert parse("soon") is None and parse("-3") is None and parse("nan") is None


async def test_backoff_grows_and_stays_within_limits(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    backend = make_backend(backoff_s=0.1, max_retries=3)
    server.script(backend.spec.model, *[Fault(500, body="boom")] * 3)
    delays = recorded_delays(backend)
    [gen] = await backend.generate([req("ok")])
    assert gen.text == "seed1 ok" and backend.retries == 3
    arrivals = [r.at for r in server.requests[backend.spec.model]]
    gaps = [b - a for a, b in pairwise(arrivals)]
    for attempt, (delay, gap) in enumerate(zip(delays, gaps, strict=True), start=1):
        base = 0.1 * 2 ** (attempt - 1)  # doubled per retry, jittered to [base / 2, base]
        assert base / 2 <= delay <= base, (attempt, delays)
        assert gap >= delay  # and it was waited


FLAKY = [
    Fault(429, {"Retry-After": "0.01"}, '{"error": {"message": "rate limited"}}'),
    Fault(500, body="internal error"),
    Fault(503, body='{"error": "overloaded"}'),
    Fault(hang_s=2.5),  # past the 1 s deadline: a timeout
    Fault(200, body='{"id": "x", "choices": [{"index": 0, "mess'),  # cut JSON
    Fault(truncate=True),  # connection dropped mid-body
    Fault(trickle_s=0.2),  # a slow stream past the deadline (1.6 s)
]


async def test_a_flaky_endpoint_loses_no_request(
    make_backend: Callable[..., OpenAIBackend], server: FakeOpenAIServer
) -> None:
    """Random faults of every kind, fewer per request than its retries: every request
    comes back, with the same text as from a healthy server, a retry per fault."""
    backend = make_backend(timeout_s=1.0, max_retries=3, max_concurrency=8)
    server.make_chaos(backend.spec.model, rate=0.4, faults=FLAKY, max_per_request=2, seed=6)
    requests = [req(f"prompt {i}", seed=1000 + i) for i in range(40)]
    gens = await backend.generate(requests)
    assert [g.text for g in gens] == [f"seed{1000 + i} prompt {i}" for i in range(40)]
    injected = server.injected[backend.spec.model]
    assert len(injected) == len(FLAKY)  # every kind of fault happened
    # A retry per fault (more only if this machine is so slow that a healthy answer
    # missed the deadline), and never more attempts than the configured retries allow.
    assert backend.retries >= sum(injected.values()) and backend.failures == 0
    per_seed: dict[int, int] = defaultdict(int)
    for recorded in server.requests[backend.spec.model]:
        per_seed[recorded.payload["seed"]] += 1
    assert max(per_seed.values()) <= 1 + 3


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


@pytest.mark.parametrize(("concurrency", "connections", "kept"), [(4, 100, 20), (300, 300, 300)])
async def test_connection_limits_follow_max_concurrency(
    make_backend: Callable[..., OpenAIBackend], concurrency: int, connections: int, kept: int
) -> None:
    """httpx's defaults (100 connections, 20 kept alive) would silently cap a higher
    max_concurrency: the client's own pool must allow one connection per request."""
    backend = make_backend(max_concurrency=concurrency)
    await backend.start()
    assert backend._client is not None
    pool = backend._client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == connections
    assert pool._max_keepalive_connections == kept
