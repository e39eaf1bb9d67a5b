"""Bandit policies for online model selection: which pair of the K candidate models answers
the next round of queries, and which model is best so far.

One module per policy (its settings and its code), the shared interface in `base`, the
list of policies in `registry`, saved states in `persistence`. Policies (defaults are the
published ones):
- `co_ucb`: Co-UCB (Ye, Xie & Ng, ACL 2023; docs/BANDITS.md), the default.
- `ucb1`: single-arm UCB1 (Auer et al. 2002) on absolute rewards.
- `rucb`: Relative UCB (Zoghi et al., ICML 2014, Algorithm 1).
- `double_ts`: Double Thompson sampling (Wu & Liu, NeurIPS 2016, Algorithm 1).
- `uniform`: a uniformly random pair of distinct models every round.
- `fixed`: always one given model.
"""

from bandits.policies.base import OutcomeArrays, Policy, RoundOutcome
from bandits.policies.co_ucb import CoUCBSettings
from bandits.policies.double_ts import DoubleTSSettings
from bandits.policies.fixed import FixedSettings
from bandits.policies.persistence import PolicyStateError, policy_from_state
from bandits.policies.registry import POLICIES, PolicySettings, make_policy
from bandits.policies.rucb import RUCBSettings
from bandits.policies.ucb1 import UCB1Settings
from bandits.policies.uniform import UniformSettings

__all__ = [
    "POLICIES",
    "CoUCBSettings",
    "DoubleTSSettings",
    "FixedSettings",
    "OutcomeArrays",
    "Policy",
    "PolicySettings",
    "PolicyStateError",
    "RUCBSettings",
    "RoundOutcome",
    "UCB1Settings",
    "UniformSettings",
    "make_policy",
    "policy_from_state",
]
