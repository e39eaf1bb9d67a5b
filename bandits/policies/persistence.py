"""A policy's saved state back as a policy: `Policy.state()` writes it, `policy_from_state`
reads and checks it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from multisample.bandits.policies.base import Policy, StateArray
from multisample.bandits.policies.registry import POLICIES, PolicySettings
from multisample.engine.config import Settings


class PolicyStateError(ValueError):
    """A saved policy state that cannot be restored; the message says what is wrong."""


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


def _counter_array(name: str, value: Any, counter: StateArray, arms: int) -> np.ndarray:
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
