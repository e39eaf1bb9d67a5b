"""Every reward by kind: the `reward` union of every config (and so its JSON schema) is
derived from `REWARDS`, and the reward contract tests (tests/engine/test_reward_contract.py)
run over it.

Adding a reward is one new module and one line in `REWARDS` below. The module holds a
spec class (a `BaseRewardSpec` with a `kind: Literal["..."]` field and a `build(pool)`
method) and the `Reward` it builds. Keep the module's top-level imports light: a model
library is imported when the reward starts, so a run without the reward never loads it.
"""

from __future__ import annotations

from engine.registry import by_kind, tagged_union
from engine.rewards.base import BaseRewardSpec
from engine.rewards.classifier import ClassifierRewardSpec
from engine.rewards.combine import CallableRewardSpec, WeightedComponent, WeightedRewardSpec
from engine.rewards.embedding import EmbeddingRewardSpec
from engine.rewards.judge import JudgeRewardSpec
from engine.rewards.verifiable import VerifiableRewardSpec

REWARDS: dict[str, type[BaseRewardSpec]] = by_kind(
    VerifiableRewardSpec,
    JudgeRewardSpec,
    EmbeddingRewardSpec,
    ClassifierRewardSpec,
    CallableRewardSpec,
    WeightedRewardSpec,
)

RewardSpec = tagged_union(REWARDS.values())
"""Any reward's spec; pydantic picks the class from the `kind` field."""

# A weighted reward's components are rewards of any kind: resolved now that all are known
# (model_rebuild reads `RewardSpec` from this module's namespace).
WeightedComponent.model_rebuild()
