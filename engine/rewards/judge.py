"""Self-J style judge: a pool model rates an answer 0-9; the score is the expected digit.

The score is not the sampled digit but `sum_d p(d) * d` over the digit tokens among the
first generated token's top log-probabilities, renormalized over those digits, divided by
9 so that it lies in [0, 1].

When no digit is among the top log-probabilities there is no score (the authors' code
gets NaN). Never silently: by default (`on_missing: lowest`) the answer gets the lowest
score, 0, so it loses every comparison, the judge counts it (`missing_scores()`, which
run summaries report as `missing_scores`) and logs a warning the first time; with
`on_missing: error` the run stops with a RewardError naming the prompt.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from pydantic import Field

from multisample.engine import templates
from multisample.engine.config import ConfigError
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.base import BaseRewardSpec, Reward, RewardError
from multisample.engine.types import GenerationRequest, Message, Prompt, SamplingSettings

DEFAULT_TEMPLATE = (
    "Rate how well the answer responds to the question, on a scale from 0 (useless) to 9 "
    "(excellent). Reply with a single digit.\n\n"
    "Question:\n{question}\n\n"
    "{reference_block}"
    "Answer:\n{answer}\n\n"
    "Rating (0-9):"
)
log = logging.getLogger(__name__)
REFERENCE_BLOCK = "A reference answer, for comparison:\n{reference}\n\n"
TEMPLATE_FIELDS = frozenset({"question", "answer", "reference", "reference_block"})
"""The fields a judge template may use; {answer} it must."""


class JudgeRewardSpec(BaseRewardSpec):
    """A pool model rates the answer 0-9; the score is the expected digit (Self-J)."""

    kind: Literal["judge"]
    model: str
    """Name of the pool model that judges."""
    use_reference: bool = True
    """Show the prompt's reference answer to the judge when the prompt has one."""
    template: str | None = None
    """Path of a prompt template file overriding the built-in one; it must use {answer}
    and may use {question}, {reference} and {reference_block} (the reference with a
    heading, or nothing); checked before any engine starts."""
    top_logprobs: int = Field(20, ge=1, le=20)
    """Top log-probabilities of the first token searched for digits."""
    on_missing: Literal["lowest", "error"] = "lowest"
    """When no digit is among them: `lowest` scores 0 (the bottom of the scale), counted
    in the run summary's `missing_scores` and warned about once, so a long run goes on;
    `error` stops the run."""

    def build(self, pool: ModelPool) -> Reward:
        template = judge_template(pool, self.model, self.template)
        return JudgeReward(
            pool, self.model, self.use_reference, template, self.top_logprobs, self.on_missing
        )


def judge_template(
    pool: ModelPool, model: str, path: str | None, default: str | None = None
) -> str | None:
    """A judge reward's inputs, checked when it is built: its model must be in the pool,
    and its template file (else `default`) is read."""
    if model not in pool.names:
        raise RewardError(f"reward.model: no pool model named {model!r}")
    if path is None:
        return default
    try:
        return read_template(path)
    except RewardError as exc:
        raise RewardError(f"reward.template: {exc}") from None


def read_template(path: str) -> str:
    """A judge template file's text; RewardError when it cannot be read or cannot work
    (engine.templates): every field one of TEMPLATE_FIELDS, the {answer} shown."""
    try:
        return templates.read_template(path, TEMPLATE_FIELDS, {"answer"}, "the judge")
    except ConfigError as exc:
        raise RewardError(str(exc)) from None


def expected_digit(top_logprobs: dict[str, float]) -> float | None:
    """Expected value of the digit tokens 0-9 among `top_logprobs`, renormalized.

    Tokens are compared after stripping whitespace ('▁7' and ' 7' count as 7). Returns
    None when no digit is among them.
    """
    weights: dict[int, float] = {}
    for token, logprob in top_logprobs.items():
        text = token.strip().lstrip("▁Ġ")
        if len(text) == 1 and text.isdigit():
            weights[int(text)] = weights.get(int(text), 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0:
        return None
    return sum(d * w for d, w in weights.items()) / total


class JudgeReward(Reward):
    """Asks a pool model for a 0-9 rating and reads the expectation off its log-probs."""

    name = "judge"

    def __init__(
        self,
        pool: ModelPool,
        model: str,
        use_reference: bool = True,
        template: str | None = None,
        top_logprobs: int = 20,
        on_missing: Literal["lowest", "error"] = "lowest",
    ) -> None:
        super().__init__()
        self.pool = pool
        self.model = model
        self.use_reference = use_reference
        self.template = DEFAULT_TEMPLATE if template is None else template
        self.sampling = SamplingSettings(temperature=0.0, max_tokens=1, logprobs=top_logprobs)
        self.on_missing = on_missing
        self.no_digit = 0  # answers whose first token had no digit among its top tokens

    def missing_scores(self) -> int:
        return self.no_digit

    def identity(self) -> str:
        return f"judge:{self.model}:{self.use_reference}:{self.template}"

    def render(self, question: str, answer: str, reference: str | None) -> str:
        block = ""
        if reference is not None and self.use_reference:
            block = REFERENCE_BLOCK.format(reference=reference)
        return self.template.format(
            question=question, answer=answer, reference=reference or "", reference_block=block
        )

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        requests = [
            GenerationRequest(
                messages=(Message("user", self.render(prompt.prompt, r, reference)),),
                sampling=self.sampling,
                seed=0,
            )
            for r in responses
        ]
        generations = await self.pool.generate(self.model, requests)
        scores = []
        for generation in generations:
            first = generation.top_logprobs[0] if generation.top_logprobs else {}
            value = expected_digit(first)
            if value is None:
                if self.on_missing == "error":
                    raise RewardError(
                        f"judge {self.model!r}: no digit among the first token's top "
                        f"log-probabilities for an answer to prompt {prompt.id!r} (it began "
                        f"{generation.text!r:.40}); set on_missing: lowest to score it 0"
                    )
                if not self.no_digit:
                    log.warning(
                        "judge %r named no digit for an answer to prompt %r: scored 0 and "
                        "counted in the summary's missing_scores",
                        self.model,
                        prompt.id,
                    )
                self.no_digit += 1
                value = 0.0
            scores.append(value / 9.0)
        return scores
