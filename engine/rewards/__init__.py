"""Rewards: one interface (`Reward.score`) over verifiable checks, judges, embeddings,
classifier reward models, weighted mixes and user callables; `REWARDS` (registry) lists
their specs by kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from engine.rewards.base import Reward, RewardError
from engine.rewards.registry import REWARDS, RewardSpec

if TYPE_CHECKING:
    from engine.pool import ModelPool

__all__ = ["REWARDS", "Reward", "RewardError", "RewardSpec", "build_reward", "started_reward"]


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
    """The reward a config describes, not started. Judges call models of `pool`."""
    return spec.build(pool)
