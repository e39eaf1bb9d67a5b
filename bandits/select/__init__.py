"""`multisample select`: a dueling bandit picks, online, the best of several candidates.

`config` holds what a run is given, `arbiters` who prefers one answer to the other,
`state` the run's files and the round that commits them, `loop` the rounds themselves.
"""

from bandits.select.config import (
    CandidateSpec,
    HumanPreference,
    RewardPreference,
    SelectConfig,
)
from bandits.select.loop import candidate_answers, run_select
from bandits.select.state import ANSWERS, ROUNDS, STATE, SelectState

__all__ = [
    "ANSWERS",
    "ROUNDS",
    "STATE",
    "CandidateSpec",
    "HumanPreference",
    "RewardPreference",
    "SelectConfig",
    "SelectState",
    "candidate_answers",
    "run_select",
]
