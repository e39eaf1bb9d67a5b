"""A selection route: `select`'s bandit answering live requests, one round per request.

Per request the policy picks a pair (one candidate for a single-arm policy); both answer
at once. With a reward as feedback, the reward scores both, the preferred answer is the
response and the round is committed at once. With client feedback, the response carries
both answers as its two choices and the round waits for POST /v1/feedback (a duel with
no feedback before a restart is not counted). The state (the policy's statistics, the
win matrix, adapter versions) is a select run directory's, committed with every round
and read back by a resumed server. With `adapt`, model candidates train on what the
duels taught them (select's collaborative update) in the background, and their new
versions answer from the next request on, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multisample.bandits.policies.registry import make_policy
from multisample.bandits.select.adapt import (
    Adaptation,
    Merger,
    Trainer,
    merge_with_peft,
    train_with_trl,
)
from multisample.bandits.select.arbiters import RewardArbiter, Verdict
from multisample.bandits.select.config import SelectConfig
from multisample.bandits.select.state import (
    ROUNDS,
    STATE,
    Round,
    SelectRun,
    SelectState,
    round_records,
)
from multisample.bandits.simulator import strong_regret
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.base import Reward
from multisample.engine.storage import CONFIG
from multisample.engine.types import Prompt
from multisample.serve.config import SelectionSpec

logger = logging.getLogger(__name__)
MAX_PENDING = 10_000
"""Duels waiting for their client's feedback that are kept; beyond, the oldest is
dropped (its round never counted), so clients that never answer cannot fill memory."""

Answerer = Callable[[str, Prompt, int], Awaitable[tuple[str, str | None, int, int]]]
"""Answers as one candidate: (candidate name, prompt, seed) -> (text, finish reason,
prompt tokens, completion tokens)."""


@dataclass
class Duel:
    """A round in play: the pair, the query and both answers."""

    first: int
    second: int
    query: Prompt
    answers: tuple[str, str]


class SelectionRoute:
    def __init__(
        self,
        spec: SelectionSpec,
        config: SelectConfig,
        pool: ModelPool,
        path: Path,
        resume: bool,
        reward: Reward | None,
        trainer: Trainer = train_with_trl,
        merger: Merger = merge_with_peft,
    ) -> None:
        self.spec = spec
        self.config = config
        self.names = [c.name for c in config.candidates]
        self.system_prompts = {c.name: c.system_prompt for c in config.candidates}
        policy = make_policy(config.policy, len(self.names), config.seed)
        wins = np.zeros((len(self.names),) * 2, dtype=int)
        self.state = SelectState(self.names, policy, wins)
        self.run = SelectRun.open(path, config, resume and (path / CONFIG).exists())
        if resume and (path / STATE).exists():
            self.state = SelectState.parse(path / STATE, self.names, config.policy.kind)
        tie = getattr(config.feedback, "tie_margin", 0.0)
        self.arbiter = None if reward is None else RewardArbiter(reward, tie)
        self.adaptation = None
        if config.adapt is not None:
            self.adaptation = Adaptation(config, pool, self.run, trainer, merger)
        self.pending: dict[str, Duel] = {}
        self.lock = asyncio.Lock()
        self.training: asyncio.Task[None] | None = None
        self.selections = dict.fromkeys(self.names, 0)

    async def restore(self) -> None:
        """Serve the committed adapter versions (a resumed server on fresh engines)."""
        if self.adaptation is not None:
            await self.adaptation.restore(self.state)

    def model_of(self, candidate: str) -> str | None:
        """The pool model that answers for a model candidate now (its adapter, once it
        has one); None for a route candidate."""
        spec = next(c for c in self.spec.candidates if c.name == candidate)
        if spec.route is not None:
            return None
        if self.adaptation is not None:
            return self.adaptation.served.get(candidate, spec.model)
        return spec.model

    async def play(
        self, id: str, query: Prompt, seed: int, answer: Answerer
    ) -> tuple[list[tuple[str, str | None]], int, int, dict[str, Any]]:
        """One request's round: the choices to return (the preferred answer; both, when
        the client will say), the tokens spent, and what was played."""
        async with self.lock:
            first, second = self.state.policy.select()
        names = (self.names[first], self.names[second])
        pair = list(dict.fromkeys(names))
        results = await asyncio.gather(*(answer(n, query, seed) for n in pair))
        texts = [r[0] for r in results]
        prompt_tokens = sum(r[2] for r in results)
        completion_tokens = sum(r[3] for r in results)
        answers = (texts[0], texts[-1])
        reasons = (results[0][1], results[-1][1])
        for name in pair:
            self.selections[name] += 1
        played = {"candidates": list(names)}
        if self.arbiter is None and first != second:
            self.pending[id] = Duel(first, second, query, answers)
            if len(self.pending) > MAX_PENDING:  # a duel never decided is dropped at last
                del self.pending[next(iter(self.pending))]
            return (
                [(answers[0], reasons[0]), (answers[1], reasons[1])],
                prompt_tokens,
                completion_tokens,
                played,
            )
        if self.arbiter is None:  # one candidate, no arbiter: nothing to compare
            return [(answers[0], reasons[0])], prompt_tokens, completion_tokens, played
        (verdict,) = await self.arbiter([query], [answers[0]], [answers[1]])
        await self.commit(first, second, verdict)
        preferred = 0 if verdict.preferred is None else verdict.preferred
        played["preferred"] = None if verdict.preferred is None else names[verdict.preferred]
        played["scores"] = list(verdict.scores)
        return [(answers[preferred], reasons[preferred])], prompt_tokens, completion_tokens, played

    async def feedback(self, id: str, preferred: int) -> dict[str, Any]:
        """The client's preference between the two answers of response `id`."""
        duel = self.pending.pop(id)
        verdict = Verdict(duel.query, duel.answers, (None, None), preferred)
        await self.commit(duel.first, duel.second, verdict)
        return {"preferred": self.names[(duel.first, duel.second)[preferred]]}

    async def commit(self, first: int, second: int, verdict: Verdict) -> None:
        """Count the round, commit it, and start an adaptation update when one is due."""
        async with self.lock:
            played = Round(self.state.round + 1, first, second, [verdict])
            self.state.apply(played)
            names = (self.names[first], self.names[second])
            versions = None
            if self.adaptation is not None:
                versions = (self.state.version(names[0]), self.state.version(names[1]))
            system = (self.system_prompts[names[0]], self.system_prompts[names[1]])
            best = self.names[self.state.policy.best()]
            records = round_records(played, names, system, best, None, versions)
            self.run.commit_round(self.state, records)
        if self.adaptation is not None and (self.training is None or self.training.done()):
            self.training = asyncio.create_task(self._adapt())

    async def _adapt(self) -> None:
        assert self.adaptation is not None
        try:
            await self.adaptation.update(self.state, lambda line: logger.info("%s", line))
        except Exception:  # the server goes on with the versions it has
            logger.exception("selection %r: adaptation failed", self.spec.name)

    def document(self, history: bool = False) -> dict[str, Any]:
        """What the dashboard shows: the win matrix, the selections and, with `history`,
        every round with its estimated regret (below)."""
        wins = self.state.wins
        compared = wins + wins.T
        rates = [
            [None if n == 0 else round(float(w / n), 4) for w, n in zip(wr, nr, strict=True)]
            for wr, nr in zip(wins, compared, strict=True)
        ]
        return {
            "name": self.spec.name,
            "policy": self.config.policy.kind,
            "feedback": self.config.feedback.kind,
            "candidates": self.names,
            "rounds": self.state.round,
            "best": self.names[self.state.policy.best()],
            "wins": wins.tolist(),
            "win_rate": rates,
            "ties": self.state.ties,
            "selections": self.selections,
            "pending": len(self.pending),
            "adapter_versions": {n: self.state.version(n) for n in self.names}
            if self.adaptation is not None
            else None,
        } | ({"history": self.history(rates)} if history else {})

    def history(self, rates: list[list[float | None]]) -> list[dict[str, Any]]:
        """Every committed round, with the cumulative strong regret estimated from the
        win rates so far: no truth is known live, so the current best candidate stands
        for the best, and an unplayed pair's rate for 0.5."""
        matrix = np.array([[0.5 if r is None else r for r in row] for row in rates])
        np.fill_diagonal(matrix, 0.5)
        best = self.state.policy.best()
        total = 0.0
        rounds = []
        for row in self.run.records(ROUNDS):
            first, second = self.names.index(row["first"]), self.names.index(row["second"])
            total += strong_regret(matrix, best, first, second)
            rounds.append(
                {
                    "round": row["round"],
                    "first": row["first"],
                    "second": row["second"],
                    "first_wins": row["first_wins"],
                    "second_wins": row["second_wins"],
                    "best": row["best"],
                    "estimated_regret": round(total, 4),
                }
            )
        return rounds

    async def close(self) -> None:
        if self.training is not None:
            await self.training  # a version being trained is finished and committed
        self.run.write_summary({"status": "served", **self.document()})
