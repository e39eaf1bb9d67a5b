"""The Ray actor that hosts one vLLM engine of a model (one per replica): it owns one
`AsyncLLM`, renders prompts to token ids as the model expects them (chat template or
base-model text, the spec's system prompt), submits every request of a batch at once so
continuous batching and prefix caching see them all, and turns vLLM's outputs into
`Generation`s. A request for a LoRA adapter carries vLLM's `LoRARequest`, so base and
adapter requests share batches. The driver side is engine.backends.vllm.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import ray

from multisample.engine import actors
from multisample.engine.adapters import ServedAdapter
from multisample.engine.backends.base import BackendError, render_base_prompt, stop_strings
from multisample.engine.config import VLLMModelSpec
from multisample.engine.types import Generation, GenerationRequest, Message, message_dicts


class PromptTooLongError(BackendError):
    """A prompt leaves no room for a response in the model's context window."""


def lora_engine_args(spec: VLLMModelSpec) -> dict[str, Any]:
    """vLLM's LoRA settings for a spec that serves adapters (none otherwise: LoRA support
    costs memory and time even when no request uses it)."""
    if not spec.lora_enabled:
        return {}
    return {"enable_lora": True, "max_lora_rank": spec.max_lora_rank, "max_loras": spec.max_loras}


def lora_request(adapter: ServedAdapter | None) -> Any:
    """vLLM's LoRARequest for one adapter version; None serves the base."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, adapter.lora_id, adapter.path)


class VLLMEngineActor:
    """Hosts one vLLM AsyncLLM. Wrapped with `ray.remote` by `VLLMBackend`."""

    def __init__(self, spec: VLLMModelSpec) -> None:
        self.spec = spec
        self.engine: Any = None
        self.tokenizer: Any = None
        self.max_model_len = 0

    async def start(self) -> dict[str, Any]:
        """Build the engine; return what the driver needs to know about the model."""
        if self.engine is not None:
            return self._info
        from multisample.engine.model_folders import parameter_count

        spec = self.spec
        own = {
            "tensor_parallel_size": spec.tensor_parallel_size,
            "max_num_seqs": spec.max_num_seqs,
            **lora_engine_args(spec),
        }
        self.engine, folder = actors.build_engine(
            spec.model,
            spec.num_gpus,
            spec.enforce_eager,
            **actors.engine_args(spec, {"enable_prefix_caching": True}, own),
        )
        self.tokenizer = self.engine.get_tokenizer()
        self.max_model_len = self.engine.model_config.max_model_len
        self._info = {
            "max_model_len": self.max_model_len,
            "parameters": parameter_count(folder),
            "path": str(folder),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }
        return self._info

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the prompt exactly as the engine will see it."""
        if self.spec.system_prompt:
            messages = [Message("system", self.spec.system_prompt), *messages]
        if self.spec.prompt_format == "chat":
            text = self.tokenizer.apply_chat_template(
                message_dicts(messages),
                add_generation_prompt=True,
                tokenize=False,
            )
            # The template already holds the special tokens it wants.
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(render_base_prompt(messages), add_special_tokens=True)

    async def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.encode(messages))

    async def load_adapter(self, adapter: ServedAdapter) -> None:
        """Load an adapter version into the engine now, so a bad folder fails here and
        not in the first request that names it."""
        if not await self.engine.add_lora(lora_request(adapter)):
            raise BackendError(f"adapter {adapter.name!r}: the engine did not load {adapter.path}")

    async def load_weights(self, folder: str) -> None:
        """Replace the model's weights in place with the safetensors in `folder` (same
        architecture and names, e.g. a merged LoRA), without restarting the engine.
        Requests in flight may see either weights; cached prefixes are dropped, as their
        keys and values came from the old weights."""
        await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        await self.engine.reset_prefix_cache()

    async def generate(
        self, requests: Sequence[GenerationRequest], adapter: ServedAdapter | None = None
    ) -> list[Generation]:
        return list(await asyncio.gather(*(self._generate_one(r, adapter) for r in requests)))

    async def _generate_one(
        self, request: GenerationRequest, adapter: ServedAdapter | None
    ) -> Generation:
        final = None
        async for item in self.stream(request, adapter, deltas=False):
            final = item
        assert isinstance(final, Generation)
        return final

    async def stream(
        self, request: GenerationRequest, adapter: ServedAdapter | None = None, deltas: bool = True
    ) -> AsyncIterator[str | Generation]:
        """The response as it is generated: each new piece of text (with `deltas`), then
        the whole `Generation` last. Called through Ray as a streaming generator."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        ids = self.encode(request.messages)
        if request.prefix:
            ids += self.tokenizer.encode(request.prefix, add_special_tokens=False)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise PromptTooLongError(
                f"model {self.spec.name!r}: prompt is {len(ids)} tokens, but the context "
                f"window is {self.max_model_len} (max_model_len)"
            )
        s = request.sampling
        params = SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=max(s.top_k, 0),  # vLLM: 0 keeps every token
            presence_penalty=s.presence_penalty,
            # A long prompt shortens the response instead of failing the request.
            max_tokens=min(s.max_tokens, room),
            stop=stop_strings(s.stop, self.spec.prompt_format) or None,
            seed=request.seed + self.spec.seed_offset,
            logprobs=s.logprobs,
            ignore_eos=s.ignore_eos,
            output_kind=RequestOutputKind.DELTA if deltas else RequestOutputKind.FINAL_ONLY,
        )
        started = time.perf_counter()
        text: list[str] = []
        tokens = 0
        top_logprobs: list[dict[str, float]] = []
        final = None
        async for output in self.engine.generate(
            TokensPrompt(prompt_token_ids=ids),
            params,
            request_id=uuid.uuid4().hex,
            lora_request=lora_request(adapter),
        ):
            final = output
            completion = output.outputs[0]
            text.append(completion.text)
            tokens += len(completion.token_ids)
            top_logprobs += [
                {lp.decoded_token: lp.logprob for lp in step.values()}
                for step in completion.logprobs or []
            ]
            if deltas and completion.text:
                yield completion.text
        if final is None:
            raise BackendError(f"model {self.spec.name!r}: the engine returned no output")
        completion = final.outputs[0]
        yield Generation(
            text="".join(text),
            model=self.spec.name if adapter is None else adapter.name,
            prompt_tokens=len(ids),
            completion_tokens=tokens,
            finish_reason=completion.finish_reason,
            seed=request.seed,
            latency_s=time.perf_counter() - started,
            top_logprobs=tuple(top_logprobs),
            adapter=None if adapter is None else adapter.name,
            adapter_version=None if adapter is None else adapter.version,
            # A token id when a stop token ended it: only stop strings are reported.
            stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
            cached_prompt_tokens=final.num_cached_tokens,
        )

    async def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
