"""Bandit policies for online model selection: which pair of the K candidate models answers
the next round of queries, and which model is best so far.

One module per policy (its settings and its code), the shared interface in `base`, the
list of policies in `registry` (with those other packages register), saved states in
`persistence`; this package imports none of them (import the module you need). The
policies (defaults are the published ones):
- `co_ucb`: Co-UCB (Ye, Xie & Ng, ACL 2023; docs/BANDITS.md), the default.
- `ucb1`: single-arm UCB1 (Auer et al. 2002) on absolute rewards.
- `rucb`: Relative UCB (Zoghi et al., ICML 2014, Algorithm 1).
- `double_ts`: Double Thompson sampling (Wu & Liu, NeurIPS 2016, Algorithm 1).
- `uniform`: a uniformly random pair of distinct models every round.
- `fixed`: always one given model.
"""
