"""Reward normalization: how a strategy that compares rewards on a fixed scale (TOA's UCB)
maps a prompt's raw rewards r to r~.

A normalization has two parts, so that every kind is one formula:
    r~ = (pointwise(r) - offset) / divisor
- `pointwise` maps each reward on its own, fixed in advance: none (r), sigmoid(r / tau),
  or r * factor;
- (offset, divisor) is the per-prompt part (`affine`), computed from the pointwise values
  of the prompt's scored samples so far: z-score (mean, population standard deviation) or
  min-max (min, max - min); the fixed kinds use (0, 1).
A prompt whose values do not spread (one sample, or all equal) gets (that value, 1): every
one of them maps to 0.

Every map here is non-decreasing in r, and the per-prompt part is strictly increasing, so
a comparison of two r~ of one prompt, at one moment, is a comparison of their pointwise
values. Only averages and sums (UCB's means) change with the statistics. The statistics
depend only on the values given, in the order given: a search that passes the rewards it
has, in the order of its decisions, decides the same way when it is replayed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from multisample.engine.config import Settings
from multisample.engine.registry import by_kind, tagged_union


@dataclass(frozen=True)
class Affine:
    """The per-prompt part of a normalization: v -> (v - offset) / divisor."""

    offset: float = 0.0
    divisor: float = 1.0

    def __call__(self, value: float) -> float:
        return (value - self.offset) / self.divisor

    def total(self, value_sum: float, count: int) -> float:
        """The sum of the mapped values of `count` values whose sum is `value_sum`. With
        (0, 1) it is `value_sum` itself, bit for bit."""
        return (value_sum - count * self.offset) / self.divisor


IDENTITY = Affine()


class _Base(Settings):
    def pointwise(self, reward: float) -> float:
        """The fixed part of r~, for one reward."""
        return reward

    def affine(self, values: Sequence[float]) -> Affine:
        """The per-prompt part, from the pointwise values of the prompt's scored samples
        so far (in the order they were scored)."""
        return IDENTITY


class NoNormalization(_Base):
    """r~ = r: the reward as it is."""

    kind: Literal["none"] = "none"


class Sigmoid(_Base):
    """r~ = sigmoid(r / tau), in (0, 1): TOA's published mapping. It saturates when
    rewards spread far beyond tau (logit-scale reward models: +-5 at tau 0.1 all map to
    about 0 or 1, and distinct rewards tie)."""

    kind: Literal["sigmoid"] = "sigmoid"
    tau: float = Field(0.1, gt=0)
    """Temperature: rewards a few tau apart are told apart, farther ones saturate."""

    def pointwise(self, reward: float) -> float:
        return sigmoid(reward / self.tau)


class Scale(_Base):
    """r~ = r * factor: a fixed rescaling, for a reward model whose scale is known."""

    kind: Literal["scale"] = "scale"
    factor: float = Field(gt=0)
    """Multiplies every reward (positive, so the order of rewards is kept)."""

    def pointwise(self, reward: float) -> float:
        return reward * self.factor


class ZScore(_Base):
    """r~ = (r - mean) / std over the prompt's scored samples so far (population standard
    deviation): r~ is in standard deviations, whatever the reward model's scale."""

    kind: Literal["zscore"] = "zscore"

    def affine(self, values: Sequence[float]) -> Affine:
        if not values:
            return IDENTITY
        spread = statistics.pstdev(values)
        if spread == 0:
            return Affine(values[0], 1.0)
        return Affine(statistics.fmean(values), spread)


class MinMax(_Base):
    """r~ = (r - min) / (max - min) over the prompt's scored samples so far: the prompt's
    worst sample so far is 0, its best 1."""

    kind: Literal["minmax"] = "minmax"

    def affine(self, values: Sequence[float]) -> Affine:
        if not values:
            return IDENTITY
        low, high = min(values), max(values)
        return Affine(low, high - low) if high > low else Affine(low, 1.0)


NORMALIZATIONS = by_kind(NoNormalization, Sigmoid, Scale, ZScore, MinMax)

RewardNormalization = NoNormalization | Sigmoid | Scale | ZScore | MinMax


def _kind_alone(value: Any) -> Any:
    """`normalize: zscore` is `normalize: {kind: zscore}`."""
    return {"kind": value} if isinstance(value, str) else value


Normalization = Annotated[tagged_union(NORMALIZATIONS.values()), BeforeValidator(_kind_alone)]
"""A normalization setting: `{kind: sigmoid, tau: 0.1}`, or a kind alone (`zscore`) for
its defaults."""


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|."""
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    e = math.exp(x)
    return e / (1 + e)


def normalize(normalization: RewardNormalization, reward: float, earlier: Sequence[float]) -> float:
    """r~ of `reward`, the newest of a prompt's scored rewards, after the raw rewards
    `earlier` of the same prompt (oldest first)."""
    values = [normalization.pointwise(r) for r in (*earlier, reward)]
    return normalization.affine(values)(values[-1])
