"""A sequence-classification reward model served by vLLM's pooling runner.

The production path on GPUs (e.g. Skywork-Reward-V2, a `*ForSequenceClassification` with a
one-output head): the (prompt, response) conversation goes through the model's chat
template, and the chosen output of the classification head, before any activation, is the
reward. Reward models vLLM's classify task does not serve (ArmoRM's multi-objective head,
token-level `*ForRewardModel`s) are refused when the config is read
(engine/rewards/classifier_head.py); docs/METHODS.md shows the way through `callable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import ray
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from multisample.engine import actors
from multisample.engine.backends.base import render_base_prompt
from multisample.engine.config import ActorSpec
from multisample.engine.cpu_binding import cpu_cores_for
from multisample.engine.rewards.base import BaseRewardSpec, Reward
from multisample.engine.rewards.classifier_head import check_classifier
from multisample.engine.types import Message, Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class ClassifierRewardSpec(BaseRewardSpec, ActorSpec):
    """A sequence-classification reward model served by vLLM's pooling runner, in a Ray
    actor of its own (its engine settings are a vLLM model's: dtype, num_gpus, ...). An
    input longer than max_model_len loses its start: the response is what is judged."""

    own_engine_args: ClassVar[Mapping[str, str]] = {
        "model": "model",
        "tokenizer": "model",
        "runner": "kind",
        "dtype": "dtype",
        "max_model_len": "max_model_len",
        "trust_remote_code": "trust_remote_code",
        "gpu_memory_utilization": "gpu_memory_utilization",
        "enforce_eager": "enforce_eager",
    }

    kind: Literal["classifier"]
    model: str
    """Folder of a *ForSequenceClassification model (Hugging Face layout) whose head
    gives one score."""
    label: int = Field(0, ge=0)
    """Which output of the classification head is the reward. A head of several outputs
    (config.json's id2label or num_labels) is refused unless this is set."""
    prompt_format: Literal["chat", "base"] = "chat"
    """How (prompt, response) is laid out for the classifier."""

    @model_validator(mode="after")
    def _single_score_head(self) -> ClassifierRewardSpec:
        # Read from the folder (or the hub cache) now, so `config check` and every run
        # refuse the wrong kind of model before an engine spends minutes loading it.
        problem = check_classifier(self.model, self.label, "label" in self.model_fields_set)
        if problem is not None:
            raise PydanticCustomError(
                "classifier_head",
                "model {model}: {problem}",
                {"model": self.model, "problem": problem},
            )
        return self

    def build(self, pool: ModelPool) -> Reward:
        return ClassifierReward(self, hosted(ClassifierActor, self, pool))


class ClassifierActor:
    """Hosts one vLLM pooling engine. Wrapped with `ray.remote` by `ClassifierReward`."""

    runner = "pooling"
    """vLLM's runner for this actor's engine."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.engine: Any = None

    async def start(self) -> None:
        if self.engine is None:
            spec = self.spec
            self.engine, _ = actors.build_engine(
                spec.model,
                spec.num_gpus,
                spec.enforce_eager,
                **actors.engine_args(spec, {}, {"runner": self.runner}),
            )
            self.tokenizer = self.engine.get_tokenizer()
            self.max_model_len = self.engine.model_config.max_model_len

    def encode(self, prompt: str, response: str) -> list[int]:
        if self.spec.prompt_format == "chat":
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                tokenize=False,
            )
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        else:
            text = render_base_prompt([Message("user", prompt)]) + response
            ids = self.tokenizer.encode(text, add_special_tokens=True)
        # Keep the end: the response is what is being judged.
        return ids[-self.max_model_len :]

    async def score(self, prompt: str, responses: list[str]) -> list[float]:
        return list(await asyncio.gather(*(self._one(prompt, r) for r in responses)))

    async def _one(self, prompt: str, response: str) -> float:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        params = PoolingParams(task="classify", use_activation=False)
        final = None
        async for output in self.engine.encode(
            TokensPrompt(prompt_token_ids=self.encode(prompt, response)),
            params,
            request_id=uuid.uuid4().hex,
        ):
            final = output
        logits = final.outputs.data  # type: ignore[union-attr]
        return float(logits[self.spec.label])

    async def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


class HostedEngine:
    """A reward model's vLLM engine in a Ray actor of its own: started once (engines that
    share a GPU one after another), called, and stopped."""

    def __init__(
        self,
        actor_class: type,
        spec: Any,
        timeout_s: float = 600.0,
        cpu_cores: str | None = None,
        start_gate: asyncio.Lock | None = None,
    ) -> None:
        self.actor_class = actor_class
        self.spec = spec
        self.name = spec.model
        self.timeout_s = timeout_s
        self.cpu_cores = cpu_cores
        """The cores its engine computes on (engine.cpu_binding); None: vLLM's binding."""
        self.start_gate = start_gate
        """The pool's lock for engines sharing a GPU (they start one after another)."""
        self.actor: Any = None

    async def start(self) -> None:
        if self.actor is None:
            options = actors.options(self.spec, self.cpu_cores)
            async with self.start_gate or contextlib.nullcontext():
                if self.actor is not None:  # started by another caller while this one waited
                    return
                self.actor = ray.remote(self.actor_class).options(**options).remote(self.spec)
                await actors.call(self.name, self.actor.start.remote(), self.timeout_s, "start")

    async def call(self, method: str, *args: Any) -> Any:
        await self.start()
        ref = getattr(self.actor, method).remote(*args)
        return await actors.call(self.name, ref, self.timeout_s, method)

    async def close(self) -> None:
        if self.actor is not None:
            await actors.stop(self.name, self.actor)
            self.actor = None


def hosted(actor_class: type, spec: Any, pool: ModelPool) -> HostedEngine:
    """The engine of a reward model `spec` beside `pool`'s models: its cores, its GPU turn."""
    gate = pool.gpu_start_gate if actors.shares_a_gpu(spec) else None
    cores = cpu_cores_for(pool.config, spec)
    return HostedEngine(actor_class, spec, pool.config.request_timeout_s, cores, gate)


class ClassifierReward(Reward):
    """The reward model's logit for `spec.label`; unbounded, higher is better."""

    name = "classifier"

    def __init__(self, spec: ClassifierRewardSpec, engine: HostedEngine | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.engine = engine or HostedEngine(ClassifierActor, spec)

    def identity(self) -> str:
        return f"classifier:{self.spec.model}:{self.spec.label}:{self.spec.prompt_format}"

    async def start(self) -> None:
        await self.engine.start()

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        return await self.engine.call("score", prompt.prompt, responses)

    async def close(self) -> None:
        await self.engine.close()
