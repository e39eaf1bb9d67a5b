"""A sequence-classification reward model served by vLLM's pooling runner.

The production path on GPUs (e.g. a Skywork or ArmoRM-style reward model): the
(prompt, response) conversation goes through the model's chat template, and the chosen
output of the classification head, before any activation, is the reward.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import ray

from engine.backends.base import render_base_prompt
from engine.backends.vllm import actor_options, build_engine, call_actor, stop_actor
from engine.config import ClassifierRewardSpec
from engine.rewards.base import Reward
from engine.types import Message, Prompt


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
                runner="pooling",
                dtype=self.spec.dtype,
                max_model_len=self.spec.max_model_len,
                trust_remote_code=self.spec.trust_remote_code,
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
        self, spec: ClassifierRewardSpec, timeout_s: float = 600.0, cpu_cores: str | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.timeout_s = timeout_s
        self.cpu_cores = cpu_cores
        """The cores its engine computes on (engine.cpu_binding); None: vLLM's binding."""
        self.actor: Any = None

    def identity(self) -> str:
        return f"classifier:{self.spec.model}:{self.spec.label}:{self.spec.prompt_format}"

    async def start(self) -> None:
        if self.actor is None:
            options = actor_options(self.spec, self.cpu_cores)
            self.actor = ray.remote(ClassifierActor).options(**options).remote(self.spec)
            await call_actor(self.identity(), self.actor.start.remote(), self.timeout_s, "start")

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
