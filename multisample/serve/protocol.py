"""The gateway's HTTP shapes: OpenAI's chat completions request and response (the fields
it serves), its error shape, and the feedback request of its own."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from multisample.engine.rewards.constraints import parse_constraints
from multisample.engine.types import Message


class APIError(Exception):
    """A request the gateway refuses, in OpenAI's error shape: the HTTP status, what is
    wrong and which field (`param`) it is about."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def document(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class Extension(_Strict):
    """multisample's own request field, `{"multisample": {...}}`."""

    trace: bool = False
    """Return the search's candidates, their models and rewards, and its tree."""
    reference: str | None = Field(None, min_length=1, max_length=10_000)
    """The task's reference answer, which the `correct` reward compares answers with (as
    a prompts file's `reference`)."""
    constraints: tuple[dict[str, Any], ...] = Field((), max_length=64)
    """The task's verifiable constraints, which the `verifiable` reward checks (as a
    prompts file's `constraints`): without them every answer meets all of none."""

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        parse_constraints(value)  # a bad one is refused by name before any model runs
        return value


class ChatRequest(_Strict):
    """The fields of OpenAI's chat completions request the gateway serves; any other is
    refused by name (as OpenAI refuses an unrecognized argument)."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = Field(None, max_length=256)
    multisample: Extension | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("up to 4 non-empty stop sequences")
        return value

    @model_validator(mode="after")
    def _conversation(self) -> ChatRequest:
        if self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        if any(m.role == "system" for m in self.messages[1:]):
            raise ValueError("a system message may only come first")
        return self

    def turns(self) -> tuple[Message, ...]:
        return tuple(Message(m.role, m.text()) for m in self.messages)

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def traced(self) -> bool:
        return self.multisample is not None and self.multisample.trace


class FeedbackRequest(_Strict):
    """A preference between a response's two choices (0 or 1), or a rating in [0, 1]."""

    id: str = Field(min_length=1, max_length=100)
    """The response's id (`chatcmpl-...`)."""
    preferred: int | None = Field(None, ge=0, le=1)
    rating: float | None = Field(None, ge=0.0, le=1.0)
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _one(self) -> FeedbackRequest:
        if (self.preferred is None) == (self.rating is None):
            raise ValueError("give preferred (0 or 1) or rating (0 to 1), one of them")
        return self


def parse(model: type[BaseModel], body: bytes) -> Any:
    """`body` as `model`, or APIError 400 naming the first field that is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            raise APIError(400, f"unrecognized request argument: {where}", where) from None
        message = error["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{where}: {message}" if where else message, where or None) from None


@dataclass
class Usage:
    """Tokens of every internal call a response took (samples, feedback, judges' excluded:
    what the pool's models generated and read for it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def document(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def completion(
    id: str, model: str, choices: list[tuple[str, str | None]], usage: Usage
) -> dict[str, Any]:
    """A chat.completion response: one choice per (text, finish reason)."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(reason),
                "logprobs": None,
            }
            for index, (text, reason) in enumerate(choices)
        ],
        "usage": usage.document(),
    }


def chunk(
    id: str,
    model: str,
    delta: dict[str, str],
    index: int = 0,
    reason: str | None = None,
    usage: Usage | None = None,
) -> str:
    """One server-sent event of a chat.completion.chunk stream."""
    document: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if usage is not None
        else [
            {
                "index": index,
                "delta": delta,
                "finish_reason": None if reason is None else finish_reason(reason),
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        document["usage"] = usage.document()
    return f"data: {json.dumps(document, ensure_ascii=False)}\n\n"


def finish_reason(reason: str | None) -> str:
    """OpenAI's finish reasons: `length` when the tokens ran out, else `stop`."""
    return "length" if reason == "length" else "stop"
