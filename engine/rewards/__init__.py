"""Rewards: one interface (`Reward.score`) over verifiable checks, judges, embeddings,
classifier reward models, weighted mixes and user callables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from engine.config import (
    CallableRewardSpec,
    ClassifierRewardSpec,
    EmbeddingRewardSpec,
    JudgeRewardSpec,
    RewardSpec,
    VerifiableRewardSpec,
    WeightedRewardSpec,
)
from engine.cpu_binding import cpu_cores_for
from engine.pool import ModelPool
from engine.rewards.base import Reward, RewardError

__all__ = ["Reward", "RewardError", "build_reward", "started_reward"]


@asynccontextmanager
async def started_reward(spec: RewardSpec, pool: ModelPool) -> AsyncIterator[Reward]:
    """The reward a config describes, started, and closed on the way out (a classifier's
    engine stops even when the run fails)."""
    reward = build_reward(spec, pool)
    await reward.start()
    try:
        yield reward
    finally:
        await reward.close()


def build_reward(spec: RewardSpec, pool: ModelPool) -> Reward:
    """The reward a config describes. Judges call models of `pool`."""
    # Imported per kind: an embedding-free run never imports sentence-transformers.
    if isinstance(spec, VerifiableRewardSpec):
        from engine.rewards.verifiable import VerifiableReward

        return VerifiableReward()
    if isinstance(spec, JudgeRewardSpec):
        from engine.rewards.judge import JudgeReward

        if spec.model not in pool.names:
            raise RewardError(f"reward.model: no pool model named {spec.model!r}")
        template = None
        if spec.template is not None:
            try:
                template = Path(spec.template).read_text(encoding="utf-8")
            except OSError as exc:
                raise RewardError(f"reward.template: cannot read {spec.template}: {exc}") from None
        return JudgeReward(pool, spec.model, spec.use_reference, template, spec.top_logprobs)
    if isinstance(spec, EmbeddingRewardSpec):
        from engine.rewards.embedding import EmbeddingReward

        return EmbeddingReward(spec.model, spec.missing_reference)
    if isinstance(spec, ClassifierRewardSpec):
        from engine.rewards.classifier import ClassifierReward

        cores = cpu_cores_for(pool.config, spec)
        return ClassifierReward(spec, pool.config.request_timeout_s, cores)
    if isinstance(spec, CallableRewardSpec):
        from engine.rewards.combine import CallableReward

        return CallableReward(spec.path)
    if isinstance(spec, WeightedRewardSpec):
        from engine.rewards.combine import WeightedReward

        return WeightedReward([(c.weight, build_reward(c.reward, pool)) for c in spec.components])
    raise TypeError(f"unknown reward spec {spec!r}")
