"""The values that flow between strategies, the model pool and the rewards.

Pydantic models are used where data crosses an edge (config files, JSONL records);
plain frozen dataclasses for what only lives in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from multisample.engine.answers import Extractor

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


def message_dicts(turns: Iterable[Message]) -> list[dict[str, str]]:
    """Turns as chat-template / OpenAI / TRL message dicts."""
    return [{"role": m.role, "content": m.content} for m in turns]


class SamplingSettings(BaseModel):
    """How a model samples one response. Field meanings follow vLLM's SamplingParams."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest token set whose probability reaches top_p."""
    top_k: int = Field(-1, ge=-1)
    """Keep the k most likely tokens; -1 keeps all."""
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """Penalty for tokens that already appeared in the response (OpenAI semantics)."""
    max_tokens: int = Field(256, ge=1)
    """Upper bound on generated tokens per response."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not included in the text."""
    logprobs: int | None = Field(None, ge=0, le=20)
    """Return this many top log-probabilities per generated token (judges use it)."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence until max_tokens (benchmarks use it to fix
    the number of generated tokens)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One call of one model. The seed makes the call reproducible on the same hardware."""

    messages: tuple[Message, ...]
    sampling: SamplingSettings
    seed: int
    prefix: str = ""
    """The start of the response, which the model continues (a partial solution that a
    step-level search extends); the generation's text is what follows it."""


@dataclass(frozen=True)
class Generation:
    """One response, with what the engine reported about producing it."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    seed: int
    latency_s: float
    top_logprobs: tuple[dict[str, float], ...] = field(default=())
    """Per generated token, the top tokens and their log-probabilities (if requested)."""
    adapter: str | None = None
    """The LoRA adapter that produced it (then also `model`), None for a base model."""
    adapter_version: int | None = None
    """Which version of `adapter` (a newer one is loaded under the same name)."""
    stop_reason: str | None = None
    """The stop string that ended the text (not included in it), None when the model
    ended it (end of sequence) or it ran out of tokens (vLLM's `stop_reason`)."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens the engine's prefix cache held, so that only the rest were computed
    (vLLM's `num_cached_tokens`); None where the backend does not say."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Prompt(BaseModel):
    """One input record of a prompts file (JSONL, one object per line, or a row of any
    file `datasets` reads, through a column mapping: engine/prompts.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    id: str = Field(min_length=1)
    """Unique within the file; samples and pairs refer to it."""
    prompt: str = Field(min_length=1)
    """The instruction given to the models."""
    reference: str | None = None
    """An optional reference answer, for judges, similarity rewards and the `correct`
    reward (a task with a final answer)."""
    constraints: tuple[dict[str, Any], ...] = ()
    """Verifiable constraints, each {"kind": ..., **parameters} (see engine.rewards.constraints)."""
    preference: str | None = None
    """An optional per-prompt user preference in words (PRS uses it)."""
    history: tuple[Message, ...] = ()
    """Earlier turns of a multi-turn conversation, sent before every call made for this
    prompt (an optional system turn first, then user and assistant turns); `prompt` is
    the last user turn. Empty for a single-turn prompt."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Columns of the prompts file that no field maps to, kept as read; carried into
    the run's samples and pairs."""
    extract: tuple[Extractor, ...] | None = None
    """How a final answer is read from a response (engine.answers): the extractors tried
    in order, of boxed, answer_is, last_number; None: all three, in that order."""

    @model_serializer(mode="wrap")
    def _without_empty_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A single-turn prompt without metadata dumps as it did before these fields existed,
        # so its journal keys (engine/journal.py) and records stay the same.
        data = handler(self)
        for name in ("history", "metadata", "extract"):
            if not data.get(name):
                data.pop(name, None)
        return data

    def conversation(self) -> tuple[Message, ...]:
        """The turns a model is sent for this prompt (before its own system prompt)."""
        return (*self.history, Message("user", self.prompt))

    @property
    def has_system_turn(self) -> bool:
        """Whether the prompt brings a system turn of its own (a model's system prompt
        cannot go with it: a conversation takes one)."""
        return bool(self.history) and self.history[0].role == "system"
