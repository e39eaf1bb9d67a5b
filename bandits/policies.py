"""Bandit policies for online model selection: which pair of the K candidate models answers
the next round of queries, and which model is best so far.

Ask/tell: `select()` gives (first, second); the caller has both models answer a round of
B queries, gets a preference per query (a reward model, a judge or a person) and calls
`update(Feedback(...))`; `best()` names the model to use. Single-arm policies select
first == second and learn from absolute rewards instead. `state()` and
`policy_from_state` persist a policy as JSON; a restored policy makes exactly the same
future selections as the original.

Each policy keeps every array with a leading *runs* axis: the simulator plays many seeds
at once through `select_runs` / `update_runs` / `best_runs`; live selection holds one run
and uses `select` / `update` / `best`, thin views of the same code. Each run owns its
numpy Generator, so run r of a batch equals a single-run policy with the same seed.

Policies (defaults are the published ones):
- `co_ucb`: Co-UCB as in ALGORITHMS.md. Arms are the K(K-1)/2 pairs; play the pair with the
  largest (mu_i + mu_j)/2 + sqrt(2 ln T / n_ij), bonus 1 when n_ij = 0; then
  mu_i <- (n_i mu_i + wins_i) / (n_i + B), n_i += B, the same for j, n_ij += B. Ties
  (draws) count in B and win nothing. The collaborative update (step 4, both models
  learn from the preferred answer) adapts the models, not the bandit: it is the caller's.
- `ucb1`: single-arm UCB1 (Auer et al. 2002) on absolute rewards, mu_k + sqrt(2 ln T / n_k).
- `rucb`: Relative UCB (Zoghi et al., ICML 2014, Algorithm 1), alpha = 0.51.
- `double_ts`: Double Thompson sampling, D-TS (Wu & Liu, NeurIPS 2016, Algorithm 1; not the
  D-TS+ tie-breaking variant), alpha = 0.51.
- `uniform`: a uniformly random pair of distinct models every round.
- `fixed`: always one given model.

Choices the sources leave open, as made here:
- Batches. A round gives B queries to one pair; every count is in queries. Co-UCB's and
  UCB1's T is the number of queries before the round. RUCB and D-TS play their chosen
  pair for all B queries and add the round's wins to their win matrix; their time step
  is t = 1 + the queries before the round (the paper's t for B = 1).
- Deterministic policies break ties to the lowest index: Co-UCB to the first pair in the
  order (0,1), (0,2), ..., (K-2,K-1); UCB1 and every `best()` to the lowest arm. RUCB and
  D-TS break ties uniformly at random, as their papers say, with the run's generator.
- Co-UCB's `best()` is argmax_i mu_i + sqrt(2 ln T / n_i) with a bonus of 1 for an arm
  never played (as a pair never played scores); mu starts at 0.
- UCB1's index is +inf for an arm never played, so each model is tried once first (its
  rewards are meant to lie in [0, 1]; the bonus assumes that range). Its `best()` is the
  same index. It learns from every reward it is given (pooled when first == second).
- RUCB, D-TS and uniform drop tied queries from the win matrix (they still count in t).
  A self-duel (i, i), which RUCB and D-TS may choose once one arm is clearly best, holds
  no preference: it only advances t; its queries are its comparisons or, when none are
  given, its rewards. Their `best()` is the empirical Copeland winner (RUCB's "Return"
  line; D-TS defines none), lowest index among ties.
- x/0 := 1 in RUCB's and D-TS's bounds applies to each fraction, so a pair never compared
  has u = 2 and l = 0 (the authors' D-TS code starts counts at 1e-6, which also puts an
  unplayed pair above every played one and below 1/2 in l).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError

from bandits.formulas import (
    co_ucb_pair_scores,
    confidence_bounds,
    copeland_scores,
    dts_candidates,
    pairs,
    random_argmax,
    rucb_candidates,
    running_mean,
    ucb,
    win_rates,
)
from engine.config import Settings

STATE_VERSION = 1


class PolicyStateError(ValueError):
    """A saved policy state that cannot be restored; the message says what is wrong."""


# -- settings --------------------------------------------------------------------------


class CoUCBSettings(Settings):
    """Co-UCB: dueling bandit over pairs of candidate models (the default policy)."""

    kind: Literal["co_ucb"] = "co_ucb"
    """Co-UCB (ALGORITHMS.md): play the pair with the largest mean win rate plus bonus."""


class UCB1Settings(Settings):
    """Single-arm UCB1 on absolute rewards; needs a reward model, not preferences."""

    kind: Literal["ucb1"] = "ucb1"
    """UCB1: one model per round, scored by absolute rewards in [0, 1]."""


class RUCBSettings(Settings):
    """Relative Upper Confidence Bound (Zoghi et al. 2014)."""

    kind: Literal["rucb"] = "rucb"
    """RUCB: an optimistic candidate against its strongest optimistic challenger."""
    alpha: float = Field(0.51, gt=0.5)
    """Exploration weight in sqrt(alpha ln t / n); the analysis needs alpha > 1/2."""


class DoubleTSSettings(Settings):
    """Double Thompson sampling (Wu & Liu 2016)."""

    kind: Literal["double_ts"] = "double_ts"
    """D-TS: both models of the pair drawn by Thompson sampling on Beta posteriors."""
    alpha: float = Field(0.51, gt=0.5)
    """Exploration weight of the confidence bounds that prune candidates; > 1/2."""


class UniformSettings(Settings):
    """A uniformly random pair of distinct models every round (a baseline)."""

    kind: Literal["uniform"] = "uniform"
    """Uniform random pair."""


class FixedSettings(Settings):
    """Always the same model (a baseline)."""

    kind: Literal["fixed"] = "fixed"
    """One fixed model."""
    arm: int = Field(ge=0)
    """Index of the model among the candidates (0-based, below their number)."""


PolicySettings = Annotated[
    CoUCBSettings
    | UCB1Settings
    | RUCBSettings
    | DoubleTSSettings
    | UniformSettings
    | FixedSettings,
    Field(discriminator="kind"),
]


# -- feedback --------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
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
class Duels:
    """One round of every run: the arrays behind `Feedback`, with a leading runs axis.
    Rewards are (runs, m) with NaN where a run has fewer than m rewards."""

    first: np.ndarray
    second: np.ndarray
    first_wins: np.ndarray
    second_wins: np.ndarray
    ties: np.ndarray
    first_rewards: np.ndarray
    second_rewards: np.ndarray

    @classmethod
    def of(cls, feedback: Feedback) -> Duels:
        """One run's Duels; refuses counts that are not integers and non-finite rewards."""
        counts = {}
        for name in ("first", "second", "first_wins", "second_wins", "ties"):
            value = getattr(feedback, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"feedback {name} must be an integer (got {value!r})")
            counts[name] = np.array([value], dtype=np.int64)
        rewards = {}
        for name in ("first_rewards", "second_rewards"):
            try:
                values = np.asarray(getattr(feedback, name), dtype=float)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feedback {name} must be numbers: {exc}") from exc
            if values.ndim != 1 or not np.isfinite(values).all():
                raise ValueError(f"feedback {name} must be a sequence of finite numbers")
            rewards[name] = values[None, :]
        return cls(**counts, **rewards)

    def feedback(self, run: int) -> Feedback:
        """Run `run`'s round as a Feedback."""
        return Feedback(
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
                _reward_counts(self.first_rewards),
                _reward_counts(self.second_rewards),
            ]
        )


def _reward_counts(rewards: np.ndarray) -> np.ndarray:
    return (~np.isnan(rewards)).sum(axis=-1)


# -- policies --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counter:
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

    Subclasses declare their state arrays in `counters` (each becomes an attribute of
    shape (runs, ...)) and implement `select_runs`, `_learn` and `best_runs`."""

    kind: ClassVar[str]
    settings_type: ClassVar[type[Settings]]
    absolute_feedback: ClassVar[bool] = False
    """True when the policy learns from absolute rewards (it cannot use a person's
    "first / second / tie" verdicts)."""
    counters: ClassVar[dict[str, _Counter]] = {}

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

    def update(self, feedback: Feedback) -> None:
        """Learn from one round; ValueError on feedback this policy cannot use."""
        self._single("update")
        self.update_runs(Duels.of(feedback))

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

    def update_runs(self, duels: Duels) -> None:
        """Learn from one round of every run."""
        self._check(duels)
        self._learn(duels)
        self.rounds += 1

    @abstractmethod
    def best_runs(self) -> np.ndarray:
        """The best arm of every run, shape (runs,)."""

    # For subclasses.

    @abstractmethod
    def _learn(self, duels: Duels) -> None: ...

    def _check(self, duels: Duels) -> None:
        """Reject a round no policy can learn from; subclasses add their own rules."""
        for name in ("first", "second", "first_wins", "second_wins", "ties"):
            values = getattr(duels, name)
            if values.shape != (self.runs,):
                raise ValueError(f"{name} has shape {values.shape}; expected ({self.runs},)")
        for name in ("first", "second"):
            values = getattr(duels, name)
            if ((values < 0) | (values >= self.arms)).any():
                raise ValueError(
                    f"feedback {name} arm {values.tolist()} is out of range 0..{self.arms - 1}"
                )
        for name in ("first_wins", "second_wins", "ties"):
            if (getattr(duels, name) < 0).any():
                raise ValueError(f"feedback {name} must be >= 0 (got {getattr(duels, name)})")

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


class CoUCB(Policy):
    """Co-UCB over the K(K-1)/2 pairs (ALGORITHMS.md, "Co-UCB"); see the module docstring."""

    kind = "co_ucb"
    settings_type = CoUCBSettings
    counters: ClassVar[dict[str, _Counter]] = {
        "mu": _Counter("arms", integer=False, high=1.0),
        "n_pair": _Counter("pairs"),
    }
    mu: np.ndarray
    """(runs, K) estimated win rate of each model."""
    n_pair: np.ndarray
    """(runs, K(K-1)/2) queries given to each pair; n_i is the sum over i's pairs."""

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        self._first, self._second = pairs(arms)
        self._pair_index = np.full((arms, arms), -1)
        self._pair_index[self._first, self._second] = np.arange(len(self._first))
        self._pair_index[self._second, self._first] = np.arange(len(self._first))
        # incidence[p, i] = 1 when model i plays in pair p, so n = n_pair @ incidence.
        self._incidence = np.zeros((len(self._first), arms), dtype=np.int64)
        self._incidence[np.arange(len(self._first)), self._first] = 1
        self._incidence[np.arange(len(self._first)), self._second] = 1

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        # Step 1: argmax picks the first pair in `pairs` order among ties.
        scores = co_ucb_pair_scores(self.mu, self.n_pair, self.n_pair.sum(axis=-1))
        chosen = scores.argmax(axis=-1)
        return self._first[chosen], self._second[chosen]

    def _check(self, duels: Duels) -> None:
        super()._check(duels)
        if (duels.first == duels.second).any():
            raise ValueError("co_ucb plays pairs of two different models (got first == second)")

    def _learn(self, duels: Duels) -> None:
        # Step 3: both models' win rates over all their queries, then the pair's count.
        run = np.arange(self.runs)
        n = self.n_pair @ self._incidence
        batch = duels.comparisons
        i, j = duels.first, duels.second
        self.mu[run, i] = running_mean(self.mu[run, i], n[run, i], duels.first_wins, batch)
        self.mu[run, j] = running_mean(self.mu[run, j], n[run, j], duels.second_wins, batch)
        self.n_pair[run, self._pair_index[i, j]] += batch

    def best_runs(self) -> np.ndarray:
        total = self.n_pair.sum(axis=-1, keepdims=True)
        return ucb(self.mu, self.n_pair @ self._incidence, total, 1.0).argmax(axis=-1)


class UCB1(Policy):
    """Single-arm UCB1 on absolute rewards: mu_k + sqrt(2 ln T / n_k), +inf when n_k = 0."""

    kind = "ucb1"
    settings_type = UCB1Settings
    absolute_feedback = True
    counters: ClassVar[dict[str, _Counter]] = {
        "mu": _Counter("arms", integer=False, low=-math.inf),
        "n": _Counter("arms"),
    }
    mu: np.ndarray
    """(runs, K) mean reward of each model."""
    n: np.ndarray
    """(runs, K) rewards seen of each model."""

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        arm = self.best_runs()
        return arm, arm

    def _check(self, duels: Duels) -> None:
        super()._check(duels)
        if (_reward_counts(duels.first_rewards) + _reward_counts(duels.second_rewards) == 0).any():
            raise ValueError("ucb1 learns from absolute rewards; this feedback has none")

    def _learn(self, duels: Duels) -> None:
        run = np.arange(self.runs)
        # Second after first, so a single-model round pools both reward lists.
        for arm, rewards in (
            (duels.first, duels.first_rewards),
            (duels.second, duels.second_rewards),
        ):
            count = _reward_counts(rewards)
            total = np.nansum(rewards, axis=-1)
            self.mu[run, arm] = running_mean(self.mu[run, arm], self.n[run, arm], total, count)
            self.n[run, arm] += count

    def best_runs(self) -> np.ndarray:
        total = self.n.sum(axis=-1, keepdims=True)
        return ucb(self.mu, self.n, total, math.inf).argmax(axis=-1)


class _WinMatrix(Policy):
    """Dueling policies that keep the matrix of wins; best() is its Copeland winner."""

    counters: ClassVar[dict[str, _Counter]] = {
        "wins": _Counter("matrix"),
        "queries": _Counter("scalar"),
    }
    wins: np.ndarray
    """(runs, K, K) wins[i, j] = queries in which model i's answer beat model j's."""
    queries: np.ndarray
    """(runs,) queries so far, ties and self-duels included (t - 1)."""

    def _learn(self, duels: Duels) -> None:
        run = np.arange(self.runs)
        distinct = duels.first != duels.second  # a self-duel holds no preference
        i, j = duels.first, duels.second
        self.wins[run, i, j] += np.where(distinct, duels.first_wins, 0)
        self.wins[run, j, i] += np.where(distinct, duels.second_wins, 0)
        self.queries += duels.queries

    def best_runs(self) -> np.ndarray:
        return copeland_scores(win_rates(self.wins)).argmax(axis=-1)


class RUCB(_WinMatrix):
    """Relative UCB (Zoghi et al., "Relative Upper Confidence Bound for the K-Armed Dueling
    Bandit Problem", ICML 2014), Algorithm 1 with its hypothesized best arm B."""

    kind = "rucb"
    settings_type = RUCBSettings
    counters: ClassVar[dict[str, _Counter]] = {
        **_WinMatrix.counters,
        "hypothesis": _Counter("arm", low=-1, initial=-1),
    }
    hypothesis: np.ndarray
    """(runs,) the arm in the set B, or -1 when B is empty."""

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        k, run = self.arms, np.arange(self.runs)
        upper, _ = confidence_bounds(self.wins, self.settings.alpha, self.queries + 1)  # line 4-5
        candidates = rucb_candidates(upper)  # line 6
        size = candidates.sum(axis=-1)
        draws = self._uniforms(1 + 2 * k)
        coin, pick_first, pick_second = draws[:, 0], draws[:, 1 : k + 1], draws[:, k + 1 :]
        hyp = self.hypothesis
        hyp = np.where((hyp >= 0) & candidates[run, np.maximum(hyp, 0)], hyp, -1)  # line 8
        hyp = np.where(size == 1, candidates.argmax(axis=-1), hyp)  # line 9
        # Lines 7 and 10: B's arm with probability 1/2, else uniform over C \ B (all arms
        # when C is empty); with B empty, uniform over C.
        pool = candidates | (size == 0)[:, None]
        others = pool & (np.arange(k) != hyp[:, None])
        take_hyp = (hyp >= 0) & ((size == 1) | (coin < 0.5))
        c = np.where(take_hyp, hyp, random_argmax(np.zeros((self.runs, k)), others, pick_first))
        # Line 11: d = argmax_j u_jc, ties at random, and d != c when c ties.
        column = upper[run, :, c]
        top = column == column.max(axis=-1, keepdims=True)
        top &= ~((np.arange(k) == c[:, None]) & (top.sum(axis=-1) > 1)[:, None])
        d = random_argmax(np.zeros((self.runs, k)), top, pick_second)
        self.hypothesis = hyp
        return c, d


class DoubleTS(_WinMatrix):
    """Double Thompson sampling (Wu & Liu, "Double Thompson Sampling for Dueling Bandits",
    NeurIPS 2016), Algorithm 1 (D-TS)."""

    kind = "double_ts"
    settings_type = DoubleTSSettings

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        k, run, wins = self.arms, np.arange(self.runs), self.wins
        upper, lower = confidence_bounds(wins, self.settings.alpha, self.queries + 1)  # line 4
        candidates = dts_candidates(upper)  # lines 5-6
        # Lines 7-10: one posterior sample of P; the first arm beats the most arms in it,
        # among the candidates.
        i, j = pairs(k)
        a, b = wins[:, i, j] + 1, wins[:, j, i] + 1
        theta = self._each(lambda rng, r: rng.beta(a[r], b[r]))
        sample = np.full((self.runs, k, k), 0.5)
        sample[:, i, j], sample[:, j, i] = theta, 1 - theta
        beaten = (sample > 0.5).sum(axis=-1)
        first = random_argmax(beaten, candidates, self._uniforms(k))
        # Lines 12-13: a second, independent sample of column a1; the second arm is its
        # largest among arms not known to beat a1 (l_{i a1} <= 1/2), a1 itself included
        # with theta = 1/2, so a1 duels itself once no sample beats 1/2.
        a, b = wins[run, :, first] + 1, wins[run, first, :] + 1
        column = self._each(lambda rng, r: rng.beta(a[r], b[r]))
        column[run, first] = 0.5
        second = random_argmax(column, lower[run, :, first] <= 0.5, self._uniforms(k))
        return first, second


class Uniform(_WinMatrix):
    """A uniformly random pair of distinct models; best() is the empirical Copeland winner."""

    kind = "uniform"
    settings_type = UniformSettings

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        self._first, self._second = pairs(arms)

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        chosen = self._each(lambda rng, _: rng.integers(len(self._first)))
        return self._first[chosen], self._second[chosen]


class Fixed(Policy):
    """Always the model `settings.arm`; learns nothing."""

    kind = "fixed"
    settings_type = FixedSettings

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        if settings.arm >= arms:
            raise ValueError(f"fixed arm must be below the {arms} arms (got {settings.arm})")

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.best_runs(), self.best_runs()

    def _learn(self, duels: Duels) -> None:
        pass

    def best_runs(self) -> np.ndarray:
        return np.full(self.runs, self.settings.arm)


POLICIES: dict[str, type[Policy]] = {
    cls.kind: cls for cls in (CoUCB, UCB1, RUCB, DoubleTS, Uniform, Fixed)
}


def make_policy(settings: PolicySettings, arms: int, seed: int) -> Policy:
    """A fresh single-run policy over `arms` candidate models, its generator seeded by `seed`."""
    return POLICIES[settings.kind](settings, arms, [seed])


# -- persistence -----------------------------------------------------------------------


class _PolicyState(Settings):
    version: Literal[1]
    """Format version of the state."""
    kind: str
    """The policy's kind (the same as settings.kind)."""
    settings: PolicySettings
    """The policy's settings."""
    arms: int = Field(ge=2)
    """Number of candidate models."""
    rounds: int = Field(ge=0)
    """Updates so far."""
    rng: dict[str, Any]
    """numpy bit generator state."""
    counters: dict[str, Any]
    """The policy's arrays, by name."""


def policy_from_state(state: dict[str, Any]) -> Policy:
    """The policy that `Policy.state()` saved, continuing exactly where it stopped.

    Raises PolicyStateError when the state is not a policy's (another JSON file, an
    unknown kind, missing fields, arrays of the wrong shape, negative counts)."""
    if not isinstance(state, dict):
        raise PolicyStateError(f"a policy state is a JSON object, not {type(state).__name__}")
    kind = state.get("kind")
    if not isinstance(kind, str) or kind not in POLICIES:
        raise PolicyStateError(f"unknown policy kind {kind!r} (known: {', '.join(POLICIES)})")
    try:
        parsed = _PolicyState.model_validate(state)
    except ValidationError as exc:
        raise PolicyStateError(f"invalid {kind} policy state: {exc}") from exc
    if parsed.settings.kind != kind:
        raise PolicyStateError(f"state of kind {kind!r} holds {parsed.settings.kind!r} settings")
    cls = POLICIES[kind]
    try:
        policy = cls(parsed.settings, parsed.arms, [0])
    except (TypeError, ValueError) as exc:
        raise PolicyStateError(f"invalid {kind} policy state: {exc}") from exc
    try:
        policy._rngs[0].bit_generator.state = parsed.rng
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise PolicyStateError(f"invalid rng state for numpy's PCG64: {exc!r}") from exc
    names, expected = set(parsed.counters), set(cls.counters)
    if names != expected:
        raise PolicyStateError(
            f"{kind} state counters are {sorted(names)}; expected {sorted(expected)}"
        )
    for name, counter in cls.counters.items():
        setattr(policy, name, _counter_array(name, parsed.counters[name], counter, parsed.arms))
    policy.rounds = parsed.rounds
    return policy


def _counter_array(name: str, value: Any, counter: _Counter, arms: int) -> np.ndarray:
    """One saved array as the policy's (1, ...) array; PolicyStateError if it does not fit."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise PolicyStateError(f"counter {name!r} is not a rectangular array") from exc
    dims = counter.dims(arms)
    if array.shape != dims:
        raise PolicyStateError(f"counter {name!r} has shape {array.shape}; {arms} arms need {dims}")
    kinds = "iu" if counter.integer else "iuf"
    if array.dtype.kind not in kinds or (not counter.integer and not np.isfinite(array).all()):
        wanted = "integers" if counter.integer else "finite numbers"
        raise PolicyStateError(f"counter {name!r} must hold {wanted}")
    high = arms - 1 if counter.shape == "arm" else counter.high
    if (array < counter.low).any() or (array > high).any():
        raise PolicyStateError(f"counter {name!r} must lie in [{counter.low}, {high}]")
    return array.astype(np.int64 if counter.integer else float)[None, ...]
