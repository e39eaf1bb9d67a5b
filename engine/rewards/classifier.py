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
from typing import TYPE_CHECKING, Any, Literal

import ray
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.backends.base import render_base_prompt
from engine.backends.vllm import actor_options, build_engine, call_actor, stop_actor
from engine.config import RayActorSpec, refuse_own_fields
from engine.cpu_binding import cpu_cores_for
from engine.rewards.base import BaseRewardSpec, Reward
from engine.rewards.classifier_head import check_classifier
from engine.types import Message, Prompt

if TYPE_CHECKING:
    from engine.pool import ModelPool


CLASSIFIER_OWN_ARGS = {
    "model": "model",
    "tokenizer": "model",
    "runner": "kind",
    "dtype": "dtype",
    "max_model_len": "max_model_len",
    "trust_remote_code": "trust_remote_code",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "enforce_eager": "enforce_eager",
}
"""vLLM engine arguments the classifier spec sets from its own fields."""


class ClassifierRewardSpec(BaseRewardSpec, RayActorSpec):
    """A sequence-classification reward model served by vLLM's pooling runner."""

    kind: Literal["classifier"]
    model: str
    """Folder of a *ForSequenceClassification model (Hugging Face layout) whose head
    gives one score."""
    label: int = Field(0, ge=0)
    """Which output of the classification head is the reward. A head of several outputs
    (config.json's id2label or num_labels) is refused unless this is set."""
    prompt_format: Literal["chat", "base"] = "chat"
    """How (prompt, response) is laid out for the classifier."""
    max_model_len: int | None = Field(2048, ge=16)
    """Context window in tokens; longer inputs are truncated from the left."""
    dtype: str = "auto"
    """Weight dtype passed to vLLM, as for vLLM models."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs the reward model's Ray actor reserves (and its weight in the split of the
    cores, as for models)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs the reward model's Ray actor reserves; 0 runs on the CPU. A fraction shares
    a GPU with other engines, as for models."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of the GPU's memory its engine may take (with policy models on the same
    GPU, all of them together at most 1)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """More of vLLM's engine arguments, as for models (checked before any engine
    starts); the fields above are set there, not here."""
    kv_cache_gib: int = Field(1, ge=1)
    """KV-cache size on the CPU, in GiB; ignored on a GPU."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources the actor needs (to pin it to a node)."""
    trust_remote_code: bool = False
    """Run code shipped with the model folder. Off unless you trust the folder."""
    enforce_eager: bool | None = None
    """As for vLLM models: None is eager on the CPU, compiled on GPUs."""

    @field_validator("engine_args")
    @classmethod
    def _not_given_twice(cls, engine_args: dict[str, Any]) -> dict[str, Any]:
        refuse_own_fields(engine_args, CLASSIFIER_OWN_ARGS)
        return engine_args

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
        from engine.pool import shares_a_gpu

        cores = cpu_cores_for(pool.config, self)
        gate = pool.gpu_start_gate if shares_a_gpu(self) else None
        return ClassifierReward(self, pool.config.request_timeout_s, cores, gate)


class ClassifierActor:
    """Hosts one vLLM pooling engine. Wrapped with `ray.remote` by `ClassifierReward`."""

    def __init__(self, spec: ClassifierRewardSpec) -> None:
        self.spec = spec
        self.engine: Any = None

    async def start(self) -> None:
        if self.engine is None:
            self.engine, _ = build_engine(
                self.spec.model,
                self.spec.num_gpus,
                self.spec.enforce_eager,
                **{
                    **self.spec.engine_args,
                    "runner": "pooling",
                    "dtype": self.spec.dtype,
                    "max_model_len": self.spec.max_model_len,
                    "trust_remote_code": self.spec.trust_remote_code,
                    "gpu_memory_utilization": self.spec.gpu_memory_utilization,
                },
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


class ClassifierReward(Reward):
    """The reward model's logit for `spec.label`; unbounded, higher is better."""

    name = "classifier"

    def __init__(
        self,
        spec: ClassifierRewardSpec,
        timeout_s: float = 600.0,
        cpu_cores: str | None = None,
        start_gate: asyncio.Lock | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.timeout_s = timeout_s
        self.cpu_cores = cpu_cores
        """The cores its engine computes on (engine.cpu_binding); None: vLLM's binding."""
        self.start_gate = start_gate
        """The pool's lock for engines sharing a GPU (they start one after another)."""
        self.actor: Any = None

    def identity(self) -> str:
        return f"classifier:{self.spec.model}:{self.spec.label}:{self.spec.prompt_format}"

    async def start(self) -> None:
        if self.actor is None:
            options = actor_options(self.spec, self.cpu_cores)
            async with self.start_gate or contextlib.nullcontext():
                if self.actor is not None:  # started by another caller while this one waited
                    return
                self.actor = ray.remote(ClassifierActor).options(**options).remote(self.spec)
                await call_actor(
                    self.identity(), self.actor.start.remote(), self.timeout_s, "start"
                )

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        await self.start()
        ref = self.actor.score.remote(prompt.prompt, responses)
        return await call_actor(self.identity(), ref, self.timeout_s, "score")

    async def close(self) -> None:
        if self.actor is not None:
            await stop_actor(self.identity(), self.actor)
            self.actor = None
