"""The registry: the one place a policy is named. Its settings union (the `policy:` of a
config and of a saved state), `make_policy`, the tests and the benchmarks all read it.

To add a policy, write bandits/policies/<kind>.py with its Settings (a `kind` Literal tag)
and its Policy subclass naming them in `settings_type`, and list the class below.
"""

from __future__ import annotations

from bandits.policies.base import Policy
from bandits.policies.co_ucb import CoUCB
from bandits.policies.double_ts import DoubleTS
from bandits.policies.fixed import Fixed
from bandits.policies.rucb import RUCB
from bandits.policies.ucb1 import UCB1
from bandits.policies.uniform import Uniform
from engine.registry import tagged_union

POLICIES: dict[str, type[Policy]] = {
    cls.kind: cls for cls in (CoUCB, UCB1, RUCB, DoubleTS, Uniform, Fixed)
}
"""Every policy by its kind, in the order tables and plots list them."""

# Built from the registry, so a listed policy is accepted everywhere a policy is parsed.
PolicySettings = tagged_union(cls.settings_type for cls in POLICIES.values())


def make_policy(settings: PolicySettings, arms: int, seed: int) -> Policy:
    """A fresh single-run policy over `arms` candidate models, its generator seeded by `seed`."""
    return POLICIES[settings.kind](settings, arms, [seed])
