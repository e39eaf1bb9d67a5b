"""What every bandit policy shares: the ask/tell interface, the round outcome it learns
from, and its state arrays with a leading *runs* axis.

Ask/tell: `select()` gives (first, second); the caller has both models answer a round of
B queries, gets a preference per query (a reward model, a judge or a person) and calls
`update(RoundOutcome(...))`; `best()` names the model to use. Single-arm policies select
first == second and learn from absolute rewards instead. `state()` and
`policy_from_state` persist a policy as JSON; a restored policy makes exactly the same
future selections as the original.

Each policy keeps every array with a leading runs axis: the simulator plays many seeds
at once through `select_runs` / `update_runs` / `best_runs`; live selection holds one run
and uses `select` / `update` / `best`, thin views of the same code. Each run owns its
numpy Generator, so run r of a batch equals a single-run policy with the same seed.

Choices shared by the policies (each policy's module says its own):
- Batches. A round gives B queries to one pair; every count is in queries.
- Deterministic policies break ties to the lowest index (every `best()` to the lowest
  arm); randomized ones, and Co-UCB's choice of a pair, break them with the run's
  generator.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from multisample.engine.config import Settings
from multisample.engine.registry import kind_of

STATE_VERSION = 1


@dataclass(frozen=True)
class RoundOutcome:
    """What one round taught: per-query preferences between the pair's answers and, when a
    reward model scored them, the answers' absolute rewards. A single-model round
    (first == second) carries its rewards in first_rewards."""

    first: int
    second: int
    first_wins: int = 0
    second_wins: int = 0
    ties: int = 0
    first_rewards: tuple[float, ...] = ()
    """Absolute rewards of the first model's answers (single-arm policies need these)."""
    second_rewards: tuple[float, ...] = ()


@dataclass(frozen=True)
class OutcomeArrays:
    """One round of every run: the fields of `RoundOutcome` as arrays with a leading runs
    axis. Rewards are (runs, m) with NaN where a run has fewer than m rewards."""

    first: np.ndarray
    second: np.ndarray
    first_wins: np.ndarray
    second_wins: np.ndarray
    ties: np.ndarray
    first_rewards: np.ndarray
    second_rewards: np.ndarray

    @classmethod
    def of(cls, outcome: RoundOutcome) -> OutcomeArrays:
        """One run's arrays; refuses counts that are not integers and non-finite rewards."""
        counts = {}
        for name in ("first", "second", "first_wins", "second_wins", "ties"):
            value = getattr(outcome, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"feedback {name} must be an integer (got {value!r})")
            counts[name] = np.array([value], dtype=np.int64)
        rewards = {}
        for name in ("first_rewards", "second_rewards"):
            try:
                values = np.asarray(getattr(outcome, name), dtype=float)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feedback {name} must be numbers: {exc}") from exc
            if values.ndim != 1 or not np.isfinite(values).all():
                raise ValueError(f"feedback {name} must be a sequence of finite numbers")
            rewards[name] = values[None, :]
        return cls(**counts, **rewards)

    def outcome(self, run: int) -> RoundOutcome:
        """Run `run`'s round as a RoundOutcome."""
        return RoundOutcome(
            int(self.first[run]),
            int(self.second[run]),
            int(self.first_wins[run]),
            int(self.second_wins[run]),
            int(self.ties[run]),
            tuple(float(x) for x in self.first_rewards[run] if not np.isnan(x)),
            tuple(float(x) for x in self.second_rewards[run] if not np.isnan(x)),
        )

    @property
    def comparisons(self) -> np.ndarray:
        """Queries whose two answers were compared: wins of either side and ties."""
        return self.first_wins + self.second_wins + self.ties

    @property
    def queries(self) -> np.ndarray:
        """Queries of the round: its comparisons, or its rewards when it has more (a
        single-model round has rewards only)."""
        return np.maximum.reduce(
            [
                self.comparisons,
                reward_counts(self.first_rewards),
                reward_counts(self.second_rewards),
            ]
        )


def reward_counts(rewards: np.ndarray) -> np.ndarray:
    """Rewards per run in a (runs, m) array padded with NaN."""
    return (~np.isnan(rewards)).sum(axis=-1)


@dataclass(frozen=True)
class StateArray:
    """One array of a policy's state, per run: its shape, type, range and start value."""

    shape: Literal["scalar", "arm", "arms", "pairs", "matrix"]
    """scalar: one number; arm: an arm index or -1 for none; arms: (K,); pairs:
    (K(K-1)/2,) in `pairs` order; matrix: (K, K)."""
    integer: bool = True
    low: float = 0.0
    high: float = math.inf
    initial: float = 0

    def dims(self, arms: int) -> tuple[int, ...]:
        return {
            "scalar": (),
            "arm": (),
            "arms": (arms,),
            "pairs": (arms * (arms - 1) // 2,),
            "matrix": (arms, arms),
        }[self.shape]


class Policy(ABC):
    """A bandit over `arms` candidate models, for one or many independent runs.

    A concrete policy names its `settings_type` (whose `kind` tag becomes the policy's
    `kind`), declares its state arrays in `counters` (each becomes an attribute of shape
    (runs, ...)) and implements `select_runs`, `_learn` and `best_runs`. The registry
    (bandits/policies/registry.py) lists it."""

    kind: ClassVar[str]
    """The settings' `kind` tag: set from `settings_type`, never written by hand."""
    settings_type: ClassVar[type[Settings]]
    absolute_feedback: ClassVar[bool] = False
    """True when the policy learns from absolute rewards (it cannot use a person's
    "first / second / tie" verdicts)."""
    single_arm: ClassVar[bool] = False
    """True when every round plays one model (first == second): no pair to compare."""
    counters: ClassVar[dict[str, StateArray]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings_type" in vars(cls):  # one tag names the policy in YAML, state and code
            cls.kind = kind_of(cls.settings_type)

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        if not isinstance(settings, self.settings_type):
            raise TypeError(f"{self.kind} needs {self.settings_type.__name__}, got {settings!r}")
        if isinstance(arms, bool) or not isinstance(arms, int | np.integer) or arms < 2:
            raise ValueError(f"arms must be an integer >= 2 (got {arms!r})")
        if len(seeds) == 0:
            raise ValueError("a policy needs at least one seed (one per run)")
        self.settings = settings
        self.arms = int(arms)
        self.runs = len(seeds)
        self.rounds = 0  # updates so far, the same for every run
        self._rngs = [np.random.default_rng(seed) for seed in seeds]
        for name, counter in self.counters.items():
            dtype = np.int64 if counter.integer else float
            setattr(self, name, np.full((self.runs, *counter.dims(arms)), counter.initial, dtype))

    # The single-run view (live selection).

    def select(self) -> tuple[int, int]:
        """The pair that answers the next round (first == second: one model). Randomized
        policies draw on each call: call it once per round."""
        self._single("select")
        first, second = self.select_runs()
        return int(first[0]), int(second[0])

    def update(self, outcome: RoundOutcome) -> None:
        """Learn from one round; ValueError on an outcome this policy cannot use."""
        self._single("update")
        self.update_runs(OutcomeArrays.of(outcome))

    def best(self) -> int:
        """The model the policy would answer with now."""
        self._single("best")
        return int(self.best_runs()[0])

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-safe, read by `policy_from_state`."""
        self._single("state")
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "settings": self.settings.model_dump(mode="json"),
            "arms": self.arms,
            "rounds": self.rounds,
            "rng": self._rngs[0].bit_generator.state,
            "counters": {name: getattr(self, name)[0].tolist() for name in self.counters},
        }

    # The runs view (simulation).

    @abstractmethod
    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """First and second arm of every run, each of shape (runs,)."""

    def update_runs(self, outcomes: OutcomeArrays) -> None:
        """Learn from one round of every run."""
        self._check(outcomes)
        self._learn(outcomes)
        self.rounds += 1

    @abstractmethod
    def best_runs(self) -> np.ndarray:
        """The best arm of every run, shape (runs,)."""

    # For subclasses.

    @abstractmethod
    def _learn(self, outcomes: OutcomeArrays) -> None: ...

    def _check(self, outcomes: OutcomeArrays) -> None:
        """Reject a round no policy can learn from; subclasses add their own rules."""
        for name in ("first", "second", "first_wins", "second_wins", "ties"):
            values = getattr(outcomes, name)
            if values.shape != (self.runs,):
                raise ValueError(f"{name} has shape {values.shape}; expected ({self.runs},)")
        for name in ("first", "second"):
            values = getattr(outcomes, name)
            if ((values < 0) | (values >= self.arms)).any():
                raise ValueError(
                    f"feedback {name} arm {values.tolist()} is out of range 0..{self.arms - 1}"
                )
        for name in ("first_wins", "second_wins", "ties"):
            if (getattr(outcomes, name) < 0).any():
                raise ValueError(f"feedback {name} must be >= 0 (got {getattr(outcomes, name)})")

    def _uniforms(self, size: int) -> np.ndarray:
        """(runs, size) uniforms in [0, 1), each run from its own generator."""
        return self._each(lambda rng, _: rng.random(size))

    def _each(self, draw: Callable[[np.random.Generator, int], Any]) -> np.ndarray:
        return np.stack([np.asarray(draw(rng, run)) for run, rng in enumerate(self._rngs)])

    def _single(self, method: str) -> None:
        if self.runs != 1:
            raise ValueError(
                f"{method}() is the single-run view; this policy holds {self.runs} runs"
            )
