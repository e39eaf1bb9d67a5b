"""PRS on the deterministic toy pool: layer sizes, lineage, prompts and sampling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from multisample.engine.config import BudgetConfig
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.search.base import ROOT, SearchContext
from multisample.search.prs import DEFAULT_PREFERENCE, PRSSettings, layer_sizes, run
from tests.search.toy import ToyPool, ToyReward

PROMPT = Prompt(id="q1", prompt="Say something.")


class RecordingPool(ToyPool):
    """ToyPool that keeps every request it received, in order."""

    def __init__(self, names: Sequence[str] = ("a", "b")) -> None:
        super().__init__(names)
        self.requests: list[GenerationRequest] = []

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        return await super().generate(model, requests)


class RecordingReward(ToyReward):
    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[Prompt] = []

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        self.prompts.append(prompt)
        return await super()._score(prompt, responses, reference)


def context(
    budget: BudgetConfig, seed: int = 0, sampling: SamplingSettings | None = None
) -> SearchContext:
    return SearchContext(
        RecordingPool(),  # type: ignore[arg-type]
        RecordingReward(),
        sampling or SamplingSettings(),
        budget,
        seed,
    )


def last_message(request: GenerationRequest) -> str:
    return request.messages[-1].content


@pytest.mark.parametrize(
    ("budget", "feedback", "expected"),
    [
        (1, True, (1, 0, False)),
        (2, True, (1, 1, False)),
        (3, True, (1, 1, True)),
        (16, True, (8, 7, True)),
        (1, False, (1, 0, False)),
        (2, False, (1, 1, False)),
        (3, False, (2, 1, False)),
        (16, False, (8, 8, False)),
    ],
)
async def test_layer_sizes_count_the_feedback_against_the_budget(
    budget: int, feedback: bool, expected: tuple[int, int, bool]
) -> None:
    assert layer_sizes(budget, feedback) == expected
    ctx = context(BudgetConfig(generations=budget))
    result = await run(PROMPT, ctx, PRSSettings(feedback=feedback))
    n0, n1, with_feedback = expected
    actions = Counter(c.action for c in result.candidates)
    sizes = {"generate": n0, "feedback": int(with_feedback), "refine": n1}
    assert actions == {action: k for action, k in sizes.items() if k}
    assert result.spend["generations"] == budget == len(result.candidates)
    assert result.spend["tokens"] == 15 * budget
    assert result.spend["reward_calls"] == budget - int(with_feedback)
    # One batch per layer (and one call for the feedback).
    assert ctx.pool.calls == [  # type: ignore[attr-defined]
        ("a", k) for k in (n0, int(with_feedback), n1) if k
    ]
    assert [c.id for c in result.candidates] == list(range(budget))


def test_no_budget_plans_nothing() -> None:
    assert layer_sizes(0, True) == layer_sizes(0, False) == (0, 0, False)


async def test_feedback_and_refinements_follow_the_best_first_sample() -> None:
    ctx = context(BudgetConfig(generations=16))
    result = await run(PROMPT, ctx, PRSSettings(model="b"))
    requests = ctx.pool.requests  # type: ignore[attr-defined]
    first = [c for c in result.candidates if c.action == "generate"]
    (feedback,) = [c for c in result.candidates if c.action == "feedback"]
    refinements = [c for c in result.candidates if c.action == "refine"]
    assert {c.model for c in result.candidates} == {"b"}

    # Layer 1: x' = prompt + blank line + default preference, depth 1, step 0, off the root.
    augmented = f"{PROMPT.prompt}\n\n{DEFAULT_PREFERENCE}"
    assert all(last_message(r) == augmented for r in requests[:8])
    assert all(c.parents == () and c.depth == 1 and c.step == 0 for c in first)
    best = max(first, key=lambda c: c.reward or 0.0)
    assert best.reward == max(c.reward or 0.0 for c in first)

    # Feedback: unscored, a child of y*, written from the feedback template.
    assert feedback.reward is None
    assert feedback.parents == (best.id,)
    assert (feedback.depth, feedback.step) == (2, 1)
    assert set(result.tree.predecessors(feedback.id)) == {best.id}
    feedback_message = last_message(requests[8])
    # The authors' reflective input: x' (instruction + preference), not the instruction.
    assert feedback_message == ctx.templates["feedback"].format(
        question=augmented, answer=best.text, preference=DEFAULT_PREFERENCE
    )

    # Refinements: children of y* and the feedback, given the corrector prompt.
    assert len(refinements) == 7
    assert all(c.parents == (best.id, feedback.id) for c in refinements)
    assert all((c.depth, c.step) == (3, 2) for c in refinements)
    assert all(c.reward is not None for c in refinements)
    for request in requests[9:]:
        message = last_message(request)
        assert feedback.text in message
        assert DEFAULT_PREFERENCE in message
        assert best.text in message
        assert message == ctx.templates["corrector"].format(
            question=augmented,
            answer=best.text,
            preference=DEFAULT_PREFERENCE,
            feedback=feedback.text,
        )
    for c in refinements:
        assert set(result.tree.predecessors(c.id)) == {best.id, feedback.id}
    assert set(result.tree.successors(ROOT)) == {c.id for c in first}


async def test_a_per_example_preference_is_scored_with_the_instruction() -> None:
    # The authors' reward scores x' when the example has its own preference.
    prompt = Prompt(id="q2", prompt="Write a haiku.", preference="I like rhymes.", reference="ref")
    ctx = context(BudgetConfig(generations=5))
    result = await run(prompt, ctx, PRSSettings())
    scored = prompt.model_copy(update={"prompt": "Write a haiku.\n\nI like rhymes."})
    assert ctx.reward.prompts and all(p == scored for p in ctx.reward.prompts)  # type: ignore[attr-defined]
    assert result.prompt == prompt  # the records keep the original prompt
    # score_preference: false scores the instruction alone.
    ctx = context(BudgetConfig(generations=5))
    await run(prompt, ctx, PRSSettings(score_preference=False))
    assert ctx.reward.prompts and all(p == prompt for p in ctx.reward.prompts)  # type: ignore[attr-defined]


async def test_with_the_default_preference_rewards_are_of_the_original_prompt() -> None:
    prompt = Prompt(id="q2", prompt="Write a haiku.")
    ctx = context(BudgetConfig(generations=5))
    await run(prompt, ctx, PRSSettings(preference="I like rhymes."))
    assert ctx.reward.prompts and all(p == prompt for p in ctx.reward.prompts)  # type: ignore[attr-defined]


async def test_without_feedback_refines_the_best_sample_directly() -> None:
    ctx = context(BudgetConfig(generations=6))
    result = await run(PROMPT, ctx, PRSSettings(feedback=False))
    requests = ctx.pool.requests  # type: ignore[attr-defined]
    first = [c for c in result.candidates if c.action == "generate"]
    refinements = [c for c in result.candidates if c.action == "refine"]
    assert (len(first), len(refinements)) == (3, 3)
    assert all(c.action != "feedback" for c in result.candidates)
    best = max(first, key=lambda c: c.reward or 0.0)
    assert all(c.parents == (best.id,) and (c.depth, c.step) == (2, 2) for c in refinements)
    augmented = f"{PROMPT.prompt}\n\n{DEFAULT_PREFERENCE}"
    for request in requests[3:]:
        assert last_message(request) == ctx.templates["refine"].format(
            question=augmented, answer=best.text
        )


async def test_a_prompt_preference_overrides_the_default() -> None:
    prompt = Prompt(id="q3", prompt="Explain tides.", preference="I prefer one sentence.")
    ctx = context(BudgetConfig(generations=5))
    await run(prompt, ctx, PRSSettings(preference="ignored setting"))
    messages = [last_message(r) for r in ctx.pool.requests]  # type: ignore[attr-defined]
    assert messages[0] == "Explain tides.\n\nI prefer one sentence."
    assert all("I prefer one sentence." in m for m in messages)
    assert not any("ignored setting" in m or DEFAULT_PREFERENCE in m for m in messages)

    ctx = context(BudgetConfig(generations=5))
    await run(PROMPT, ctx, PRSSettings(preference="Be terse."))
    messages = [last_message(r) for r in ctx.pool.requests]  # type: ignore[attr-defined]
    assert messages[0] == "Say something.\n\nBe terse."
    assert all("Be terse." in m for m in messages)


async def test_published_sampling_overrides_four_fields_only() -> None:
    base = SamplingSettings(temperature=0.3, top_k=5, presence_penalty=0.0, max_tokens=77)
    ctx = context(BudgetConfig(generations=5), sampling=base)
    await run(PROMPT, ctx, PRSSettings())
    requests = ctx.pool.requests  # type: ignore[attr-defined]
    assert len(requests) == 5
    for request in requests:
        s = request.sampling
        assert (s.temperature, s.top_p, s.top_k, s.presence_penalty) == (0.8, 1.0, 50, 1.2)
        assert s.max_tokens == 77

    ctx = context(BudgetConfig(generations=5), sampling=base)
    await run(PROMPT, ctx, PRSSettings(published_sampling=False))
    assert all(r.sampling == base for r in ctx.pool.requests)  # type: ignore[attr-defined]

    own = SamplingSettings(temperature=1.1, max_tokens=33)
    ctx = context(BudgetConfig(generations=5), sampling=base)
    await run(PROMPT, ctx, PRSSettings(sampling=own))
    for request in ctx.pool.requests:  # type: ignore[attr-defined]
        assert (request.sampling.temperature, request.sampling.max_tokens) == (0.8, 33)


@pytest.mark.parametrize(
    ("tokens", "n", "expected"),
    [
        # 15 tokens a generation; allowed while below the limit.
        (100, 16, {"generate": 7}),
        (150, 16, {"generate": 8, "feedback": 1, "refine": 1}),
        (1000, 16, {"generate": 8, "feedback": 1, "refine": 7}),
        (1000, 4, {"generate": 2, "feedback": 1, "refine": 1}),
        (1000, 2, {"generate": 1, "refine": 1}),
    ],
)
async def test_a_token_only_budget_stops_when_spent(
    tokens: int, n: int, expected: dict[str, int]
) -> None:
    ctx = context(BudgetConfig(generations=None, tokens=tokens))
    result = await run(PROMPT, ctx, PRSSettings(n=n))
    assert Counter(c.action for c in result.candidates) == expected
    total = sum(expected.values())
    assert result.spend["generations"] == total
    assert result.spend["tokens"] == 15 * total
    assert all(size == 1 for _, size in ctx.pool.calls)  # type: ignore[attr-defined]


async def test_same_seed_same_result() -> None:
    budget = BudgetConfig(generations=9)
    first = await run(PROMPT, context(budget, seed=1), PRSSettings())
    again = await run(PROMPT, context(budget, seed=1), PRSSettings())
    other = await run(PROMPT, context(budget, seed=2), PRSSettings())
    assert first.sample_records() == again.sample_records()
    assert [c.text for c in first.candidates] != [c.text for c in other.candidates]
    assert len({c.seed for c in first.candidates}) == 9


async def test_settings_pick_the_model_and_reject_unknown_fields() -> None:
    assert PRSSettings().models_used(["x", "y"]) == ["x"]
    assert PRSSettings(model="y").models_used(["x", "y"]) == ["y"]
    with pytest.raises(ValueError):
        PRSSettings(nope=1)  # type: ignore[call-arg]
