"""Rewards: one interface (`Reward.score`, in `base`) over verifiable checks, judges,
embeddings, classifier reward models, weighted mixes and user callables, one module each;
`registry` lists their specs by kind (and a reward from another package, through the
`multisample.rewards` entry points). Import the module you need: this package imports
nothing, so `multisample.engine.rewards.constraints` (pure text rules) stays light."""
