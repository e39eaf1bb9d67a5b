"""The registry: the one place a policy is named. Its settings union (the `policy:` of a
config and of a saved state), `make_policy`, the tests and the benchmarks all read it.

To add a policy, write bandits/policies/<kind>.py with its Settings (a `kind` Literal tag)
and its Policy subclass naming them in `settings_type`, and list the class below; or,
from a package of your own, name the class in an entry point of the
`multisample.policies` group.
"""

from __future__ import annotations

from multisample.bandits.policies.base import Policy
from multisample.bandits.policies.co_ucb import CoUCB
from multisample.bandits.policies.double_ts import DoubleTS
from multisample.bandits.policies.fixed import Fixed
from multisample.bandits.policies.rucb import RUCB
from multisample.bandits.policies.ucb1 import UCB1
from multisample.bandits.policies.uniform import Uniform
from multisample.engine.registry import tagged_union, with_plugins

POLICIES: dict[str, type[Policy]] = with_plugins(
    "multisample.policies", [CoUCB, UCB1, RUCB, DoubleTS, Uniform, Fixed], lambda cls: cls.kind
)
"""Every policy by its kind, in the order tables and plots list them."""

# Built from the registry, so a listed policy is accepted everywhere a policy is parsed.
PolicySettings = tagged_union(cls.settings_type for cls in POLICIES.values())


def make_policy(settings: PolicySettings, arms: int, seed: int) -> Policy:
    """A fresh single-run policy over `arms` candidate models, its generator seeded by `seed`."""
    return POLICIES[settings.kind](settings, arms, [seed])
