"""Process reward models (PRMs) by Hugging Face id, each with its step convention.

A PRM scores every step of a solution in one pass over (question, steps). Models differ
in how the steps are laid out and where the score is read, so the reward names the
model's `convention`:
- `qwen2.5-math-prm` (Qwen/Qwen2.5-Math-PRM-7B, -72B; a `*ForProcessRewardModel`): the
  chat template with the model card's system prompt, the steps in one assistant turn,
  each followed by the step token `<extra_0>`; vLLM's pooling runner classifies the
  step tokens (`token_classify`), and the step's score is the probability of the
  positive class.
- `rlhflow` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, -Mistral-Data; a `*ForCausalLM`):
  one user turn per step (the first with the question before it), each answered by an
  assistant turn "+"; the step's score is P("+") / (P("+") + P("-")) at that answer,
  read exactly from prompt log-probabilities (vLLM's generate runner: one request with
  every answer "+", and one per step whose answer there is "-"; prefix caching makes
  them cheap).
The model's config.json is read before any engine starts, and a model whose head is not
its convention's step scorer is refused. These models need a GPU (configs/gpu-math.yaml);
the CPU runs test the `rlhflow` path with a small chat model standing in for the PRM,
which checks the plumbing, not the scores.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from multisample.engine.config import ActorSpec
from multisample.engine.rewards.base import Reward
from multisample.engine.rewards.classifier import ClassifierActor, HostedEngine, hosted
from multisample.engine.rewards.classifier_head import config_json_of
from multisample.engine.rewards.process import ProcessReward, ProcessRewardSpec
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool

Convention = Literal["qwen2.5-math-prm", "rlhflow"]
HEADS: dict[str, str] = {"qwen2.5-math-prm": "ForProcessRewardModel", "rlhflow": "ForCausalLM"}
"""The architecture suffix each convention's models have."""
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_TOKEN = "<extra_0>"


class PRMRewardSpec(ProcessRewardSpec, ActorSpec):
    """A process reward model served by vLLM in a Ray actor of its own (its engine
    settings are a vLLM model's: dtype, num_gpus, ...)."""

    own_engine_args: ClassVar[Mapping[str, str]] = {
        "model": "model",
        "tokenizer": "model",
        "runner": "convention",
        "dtype": "dtype",
        "max_model_len": "max_model_len",
        "trust_remote_code": "trust_remote_code",
        "gpu_memory_utilization": "gpu_memory_utilization",
        "enforce_eager": "enforce_eager",
    }

    kind: Literal["prm"]
    model: str
    """Hugging Face id or folder of the PRM."""
    convention: Convention
    """How the model lays out steps and where its step scores are read."""

    @model_validator(mode="after")
    def _step_scorer(self) -> PRMRewardSpec:
        problem = head_problem(self.model, self.convention)
        if problem is not None:
            raise PydanticCustomError(
                "prm_head", "model {model}: {problem}", {"model": self.model, "problem": problem}
            )
        return self

    def build(self, pool: ModelPool) -> Reward:
        return PRMReward(self, hosted(PRMActor, self, pool))


def head_problem(model: str, convention: str) -> str | None:
    """Why `model` is not a step scorer of `convention`, when its config.json is on this
    machine and says so; None otherwise (the engine finds out when it loads)."""
    path = config_json_of(model)
    if path is None:
        return None
    try:
        architectures = json.loads(path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot read the architectures of {path}: {exc}"
    suffix = HEADS[convention]
    if not any(str(a).endswith(suffix) for a in architectures):
        return (
            f"{path}: architectures {architectures} is not a step scorer of the "
            f"{convention!r} convention (*{suffix})"
        )
    return None


class PRMActor(ClassifierActor):
    """Hosts the PRM's engine; wrapped with `ray.remote` by `PRMReward`."""

    @property
    def runner(self) -> str:  # type: ignore[override]
        return "pooling" if self.spec.convention == "qwen2.5-math-prm" else "generate"

    async def step_scores(self, question: str, solutions: list[list[str]]) -> list[list[float]]:
        if self.spec.convention == "qwen2.5-math-prm":
            return [await self._qwen(question, steps) for steps in solutions]
        return [await self._rlhflow(question, steps) for steps in solutions]

    def _ids(self, turns: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=generation_prompt
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def _qwen(self, question: str, steps: list[str]) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        if not steps:
            return []
        answer = "".join(step + QWEN_STEP_TOKEN for step in steps)
        turns = [
            {"role": "system", "content": QWEN_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        step_token = self.tokenizer.convert_tokens_to_ids(QWEN_STEP_TOKEN)
        params = PoolingParams(task="token_classify", step_tag_id=step_token)
        final = None
        async for output in self.engine.encode(
            TokensPrompt(prompt_token_ids=self._ids(turns)), params, request_id=_request_id()
        ):
            final = output
        rows = final.outputs.data.tolist()  # type: ignore[union-attr]
        return [float(row[1]) for row in rows][-len(steps) :]

    async def _rlhflow(self, question: str, steps: list[str]) -> list[float]:
        if not steps:
            return []
        turns: list[dict[str, str]] = []
        positions = []  # where each step's answer token is
        for k, step in enumerate(steps):
            turns.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            positions.append(len(self._ids(turns, generation_prompt=True)))
            turns.append({"role": "assistant", "content": "+"})
        plus, minus = (self.tokenizer.encode(t, add_special_tokens=False)[-1] for t in "+-")
        # The log-probability of each prompt token is exact: read P(+) at every answer
        # of the all-"+" conversation, and P(-) at answer k of the one that ends "-" there.
        answered_minus = [
            [*turns[: 2 * k + 1], {"role": "assistant", "content": "-"}] for k in range(len(steps))
        ]
        lists = [self._ids(turns), *(self._ids(t) for t in answered_minus)]
        read = await asyncio.gather(*(self._prompt_logprobs(ids) for ids in lists))
        shares = []
        for k, position in enumerate(positions):
            log_plus = read[0][position][plus].logprob
            log_minus = read[k + 1][position][minus].logprob
            shares.append(1.0 / (1.0 + math.exp(log_minus - log_plus)))
        return shares

    async def _prompt_logprobs(self, ids: list[int]) -> list[Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final = None
        async for output in self.engine.generate(
            TokensPrompt(prompt_token_ids=ids), params, request_id=_request_id()
        ):
            final = output
        return list(final.prompt_logprobs)  # type: ignore[union-attr]


def _request_id() -> str:
    return uuid.uuid4().hex


class PRMReward(ProcessReward):
    name = "prm"

    def __init__(self, spec: PRMRewardSpec, engine: HostedEngine) -> None:
        super().__init__(spec.separator, spec.aggregate)
        self.spec = spec
        self.engine = engine

    def identity(self) -> str:
        return f"{super().identity()}:{self.spec.model}:{self.spec.convention}"

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    async def _score_steps(
        self, prompt: Prompt, solutions: list[list[str]], last: bool = False
    ) -> list[list[float]]:
        scores = await self.engine.call("step_scores", prompt.prompt, solutions)
        return [s[-1:] for s in scores] if last else scores
