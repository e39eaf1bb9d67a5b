"""Every reward by kind: the `reward` union of every config (and so its JSON schema) is
derived from `REWARDS`, and the reward contract tests (tests/engine/test_reward_contract.py)
run over it.

Adding a reward is one new module and one line in `REWARDS` below, or, from a package of
your own, an entry point in the `multisample.rewards` group naming its spec class. The
module holds a spec class (a `BaseRewardSpec` with a `kind: Literal["..."]` field and a
`build(pool)` method) and the `Reward` it builds. Keep the module's top-level imports
light: a model library is imported when the reward starts, so a run without the reward
never loads it.
"""

from __future__ import annotations

from multisample.engine.registry import kind_of, tagged_union, with_plugins
from multisample.engine.rewards.base import BaseRewardSpec
from multisample.engine.rewards.classifier import ClassifierRewardSpec
from multisample.engine.rewards.combine import (
    CallableRewardSpec,
    WeightedComponent,
    WeightedRewardSpec,
)
from multisample.engine.rewards.correct import CorrectRewardSpec
from multisample.engine.rewards.embedding import EmbeddingRewardSpec
from multisample.engine.rewards.judge import JudgeRewardSpec
from multisample.engine.rewards.prm import PRMRewardSpec
from multisample.engine.rewards.process import ArithmeticStepsSpec, StepJudgeSpec
from multisample.engine.rewards.verifiable import VerifiableRewardSpec

REWARDS: dict[str, type[BaseRewardSpec]] = with_plugins(
    "multisample.rewards",
    [
        VerifiableRewardSpec,
        JudgeRewardSpec,
        EmbeddingRewardSpec,
        ClassifierRewardSpec,
        CorrectRewardSpec,
        ArithmeticStepsSpec,
        StepJudgeSpec,
        PRMRewardSpec,
        CallableRewardSpec,
        WeightedRewardSpec,
    ],
    kind_of,
)

RewardSpec = tagged_union(REWARDS.values())
"""Any reward's spec; pydantic picks the class from the `kind` field."""

# A weighted reward's components are rewards of any kind: resolved now that all are known.
WeightedComponent.model_rebuild(_types_namespace={"RewardSpec": RewardSpec})
