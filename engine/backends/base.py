"""What every model backend offers the pool: batched, async generation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from multisample.engine.types import Generation, GenerationRequest, Message


class BackendError(RuntimeError):
    """A model backend failed in a way the caller should report to the user."""


class Backend(Protocol):
    """One model, however it is served. Implementations must be safe to call concurrently."""

    name: str

    async def start(self) -> None:
        """Acquire resources (start engines, open connections). Idempotent."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One generation per request, in request order."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[str | Generation]:
        """The response's text piece by piece as it is generated, then the whole
        Generation last."""

    async def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Prompt tokens the model would see for these messages, or None if unknown."""

    async def context_length(self) -> int | None:
        """The model's context window in tokens, or None if unknown."""

    async def close(self) -> None:
        """Release resources. Idempotent."""

    def events(self) -> dict[str, int]:
        """Faults absorbed so far (restarts, retries...), by kind; counts only grow."""


BASE_STOP = ("\nInstruction:",)
"""Stops a base model that, having answered, goes on to write the next instruction."""


def stop_strings(stop: Sequence[str], prompt_format: str) -> list[str]:
    """The request's stop strings, plus BASE_STOP for base models."""
    return list(stop) + (list(BASE_STOP) if prompt_format == "base" else [])


def render_base_prompt(messages: Sequence[Message]) -> str:
    """Flatten a conversation into plain text for a base (non-chat) model.

    Base models have no chat template; a plain instruction/response layout is what
    they have most often seen in pre-training data.
    """
    parts: list[str] = []
    for message in messages:
        if message.role == "system":
            parts.append(f"{message.content}\n\n")
        elif message.role == "user":
            parts.append(f"Instruction:\n{message.content}\n\nResponse:\n")
        else:
            parts.append(f"{message.content}\n\n")
    return "".join(parts)
