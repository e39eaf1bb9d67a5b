"""Similarity of a response to the reference answer, with a sentence-embedding model."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from multisample.engine.rewards.base import BaseRewardSpec, Reward, RewardError
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class EmbeddingRewardSpec(BaseRewardSpec):
    """Cosine similarity between the response and the reference, scaled to [0, 1]."""

    kind: Literal["embedding"]
    model: str | None = None
    """A sentence-transformers model folder; None takes the embedded MiniLM."""
    missing_reference: float = Field(0.0, ge=0, le=1)
    """Score given when a prompt has no reference answer."""

    def build(self, pool: ModelPool) -> Reward:
        return EmbeddingReward(self.model, self.missing_reference)


class EmbeddingReward(Reward):
    """Cosine similarity to the reference, mapped from [-1, 1] to [0, 1].

    Runs in this process (MiniLM is small): encoding happens in a worker thread so the
    event loop keeps serving the engines.
    """

    name = "embedding"

    def __init__(self, model: str | None = None, missing_reference: float = 0.0) -> None:
        super().__init__()
        self.model_path = model
        self.missing_reference = missing_reference
        self._model: Any = None
        self._lock = asyncio.Lock()

    def identity(self) -> str:
        return f"embedding:{self.model_path or 'minilm'}"

    async def start(self) -> None:
        if self._model is None:
            self._model = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from multisample.engine.model_folders import minilm_path

        path = self.model_path or str(minilm_path())
        try:
            return SentenceTransformer(path, device="cpu")
        except (OSError, ValueError) as exc:
            raise RewardError(f"embedding reward: cannot load model {path}: {exc}") from None

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        if reference is None:
            return [self.missing_reference] * len(responses)
        await self.start()
        async with self._lock:  # one encode at a time: the model is not re-entrant
            vectors = await asyncio.to_thread(
                self._model.encode, [reference, *responses], normalize_embeddings=True
            )
        return cosine_to_unit(np.asarray(vectors[1:]) @ np.asarray(vectors[0])).tolist()


def cosine_to_unit(cosine: np.ndarray) -> np.ndarray:
    """Map cosine similarities from [-1, 1] to [0, 1]."""
    return np.clip((cosine + 1.0) / 2.0, 0.0, 1.0)
