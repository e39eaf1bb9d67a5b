"""`multisample select`'s rounds: `run_select` starts the engines and the arbiter, and a
Session plays rounds from the committed state until the rounds or the queries run out.

Each round the policy chooses a pair of candidates (one candidate for single-arm
policies); both answer a batch of queries; the arbiter prefers one answer per query; the
state counts the round, with its regret when the truth is known; the round's records are
committed. Every strict preference is also adaptation data for both candidates of the
pair; with `adapt:` set, the candidates then train on it and play their new versions
(the paper's collaborative update, bandits/select/adapt.py).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from rich.console import Console

from multisample.bandits.policies.registry import make_policy
from multisample.bandits.select.adapt import (
    Adaptation,
    Merger,
    Trainer,
    merge_with_peft,
    train_with_trl,
)
from multisample.bandits.select.arbiters import Arbiter, HumanArbiter, RewardArbiter, Verdict
from multisample.bandits.select.config import (
    STDIN,
    CandidateSpec,
    RewardPreference,
    SelectConfig,
    check_inputs,
    query_stream,
    read_truth,
)
from multisample.bandits.select.state import (
    ROUNDS,
    STATE,
    Round,
    SelectRun,
    SelectState,
    round_records,
)
from multisample.bandits.simulator import RegretCurves, plot_regret, true_best
from multisample.engine.pool import ModelPool
from multisample.engine.progress import progress_bar
from multisample.engine.prompts import load_prompts
from multisample.engine.run_session import running
from multisample.engine.seeds import derive_seed
from multisample.engine.storage import check_run_directory
from multisample.engine.types import GenerationRequest, Message, Prompt, SamplingSettings


async def run_select(
    config: SelectConfig,
    run_path: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    pool: ModelPool | None = None,
    stdin: TextIO | None = None,
    ask: Callable[[str], str] | None = None,
    trainer: Trainer = train_with_trl,
    merger: Merger = merge_with_peft,
) -> dict[str, Any]:
    """Play rounds until `rounds` (or the queries) run out; return the summary.

    `pool`, when given, must be started and hold the config's models; it is left running
    (with adapted candidates' weights or adapters loaded). `stdin` and `ask` replace
    standard input for queries and for a person's verdicts; `trainer` and `merger` how
    adapted candidates train and merge (TRL and PEFT).
    """
    console = console or Console(stderr=True)
    candidates = [c.name for c in config.candidates]
    truth = read_truth(config.truth, candidates) if config.truth else None
    policy = make_policy(config.policy, len(candidates), config.seed)
    check_inputs(config)
    exclude = {"rounds"}  # `rounds` only says when to stop: a resume may raise it
    # Refused before the state is read: a new run over an existing one, another config.
    check_run_directory(run_path, config, resume, exclude)
    state = SelectState(candidates, policy, np.zeros((len(candidates),) * 2, dtype=int))
    if resume and (run_path / STATE).exists():
        state = SelectState.parse(run_path / STATE, candidates, config.policy.kind)
    reward = config.feedback.reward if isinstance(config.feedback, RewardPreference) else None
    session = running(
        config, run_path, resume, console=console, pool=pool, reward=reward, exclude=exclude
    )
    async with session as (started, scorer):
        arbiter: Arbiter
        if isinstance(config.feedback, RewardPreference):
            assert scorer is not None
            arbiter = RewardArbiter(scorer, config.feedback.tie_margin)
        else:
            seed = derive_seed(config.seed, "order")
            arbiter = HumanArbiter(console, ask or console.input, seed)
        # Only now, with engines up and inputs checked, does the run directory appear.
        run = SelectRun.open(run_path, config, resume, exclude=exclude)
        adaptation = None
        if config.adapt is not None:
            adaptation = Adaptation(config, started, run, trainer, merger)
            await adaptation.restore(state)
        rounds = Session(config, started, run, state, arbiter, truth, console, adaptation)
        return await rounds.play(stdin or sys.stdin)


class Session:
    """The rounds of one `select` run, from its committed state onwards."""

    def __init__(
        self,
        config: SelectConfig,
        pool: ModelPool,
        run: SelectRun,
        state: SelectState,
        arbiter: Arbiter,
        truth: np.ndarray | None,
        console: Console,
        adaptation: Adaptation | None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.run = run
        self.state = state
        self.arbiter = arbiter
        self.truth = truth
        self.winner = None if truth is None else true_best(truth)
        self.console = console
        self.adaptation = adaptation
        self.specs = {c.name: c for c in config.candidates}

    async def play(self, stdin: TextIO) -> dict[str, Any]:
        config, state = self.config, self.state
        queries = query_stream(config, stdin)
        if config.prompts != STDIN:  # stdin is a new stream on every run: nothing to skip
            queries = itertools.islice(queries, state.cursor, None)
        total = config.rounds
        if total is None and config.prompts != STDIN:
            total = -(-len(load_prompts(config.prompts, config.limit).prompts) // config.batch)
        stopped = False
        # A person's screen shows answers: a redrawn bar would write over them.
        with progress_bar(self.console, disable=isinstance(self.arbiter, HumanArbiter)) as bar:
            task = bar.add_task(config.policy.kind, total=total, completed=state.round, line="")
            await self.adapt(lambda line: bar.update(task, line=line))  # a kill's unfinished one
            while not stopped and (config.rounds is None or state.round < config.rounds):
                batch = list(itertools.islice(queries, config.batch))
                if not batch:
                    break
                stopped = not await self.round(batch)
                bar.update(task, completed=state.round, line=f"best {self.best()}")
                await self.adapt(lambda line: bar.update(task, line=line))
        summary = self.summary("stopped" if stopped else "complete")
        self.run.write_summary(summary)
        if self.truth is not None:
            plot_run_regret(self.run.records(ROUNDS), self.run.path / "regret.png", config)
        return summary

    def best(self) -> str:
        return self.state.candidates[self.state.policy.best()]

    async def adapt(self, say: Callable[[str], None]) -> None:
        if self.adaptation is not None:
            await self.adaptation.update(self.state, say)

    async def round(self, queries: list[Prompt]) -> bool:
        """Play one round and commit it; False when a person stopped it early."""
        state = self.state
        number = state.round + 1
        first, second = state.policy.select()
        names = (state.candidates[first], state.candidates[second])
        played = Round(number, first, second, await self.verdicts(names, queries, number))
        if not played.verdicts:
            return False
        state.apply(played)
        regret = None
        if self.truth is not None and self.winner is not None:
            state.add_regret(self.truth, self.winner, played)
            regret = dict(state.regret)
        system_prompts = (self.specs[names[0]].system_prompt, self.specs[names[1]].system_prompt)
        versions = None
        if self.adaptation is not None:
            versions = (state.version(names[0]), state.version(names[1]))
        records = round_records(played, names, system_prompts, self.best(), regret, versions)
        self.run.commit_round(state, records)
        return len(played.verdicts) == len(queries)

    async def verdicts(
        self, names: tuple[str, str], queries: list[Prompt], number: int
    ) -> list[Verdict]:
        """Both candidates answer and the arbiter judges; a single candidate's answers are
        scored instead (no preference, absolute rewards)."""
        a, b = names
        if a == b:
            answers = await self.answers(a, queries, number)
            assert isinstance(self.arbiter, RewardArbiter)  # check_inputs refuses the others
            scores = await self.arbiter.scores(queries, answers)
            return [
                Verdict(q, (x, x), (s, s), None)
                for q, x, s in zip(queries, answers, scores, strict=True)
            ]
        first_answers, second_answers = await asyncio.gather(
            self.answers(a, queries, number), self.answers(b, queries, number)
        )
        return await self.arbiter(queries, first_answers, second_answers)

    async def answers(self, name: str, queries: list[Prompt], number: int) -> list[str]:
        seeds = [derive_seed(self.config.seed, number, q.id, name) for q in queries]
        model = self.specs[name].model
        if self.adaptation is not None:
            model = self.adaptation.served[name]
        return await candidate_answers(
            self.pool, self.specs[name], self.config.sampling, queries, seeds, model
        )

    def summary(self, status: str) -> dict[str, Any]:
        state = self.state
        plays = dict.fromkeys(state.candidates, 0)
        for row in self.run.records(ROUNDS):
            for name in {row["first"], row["second"]}:
                plays[name] += len(row["queries"])
        compared = state.wins + state.wins.T
        rates = [
            [round(float(w / n), 4) if n else None for w, n in zip(wr, nr, strict=True)]
            for wr, nr in zip(state.wins, compared, strict=True)
        ]
        summary = {
            "status": status,
            "policy": self.config.policy.kind,
            "rounds": state.round,
            "queries": state.cursor,
            "best": self.best(),
            "candidates": state.candidates,
            "queries_per_candidate": plays,
            "wins": state.wins.tolist(),
            "win_rate": rates,
            "ties": state.ties,
            "true_best": None if self.winner is None else state.candidates[self.winner],
            "cumulative_regret": state.regret if self.truth is not None else None,
        }
        if self.adaptation is not None:
            summary["adapter_versions"] = {n: state.version(n) for n in state.candidates}
        return summary


async def candidate_answers(
    pool: ModelPool,
    spec: CandidateSpec,
    sampling: SamplingSettings,
    queries: list[Prompt],
    seeds: list[int],
    model: str | None = None,
) -> list[str]:
    """A candidate's answers: its model (or `model`, its adapter), its system prompt, and
    its sampling over the model's over the run's."""
    model = model or spec.model
    settings = pool.sampling(model, sampling)
    if spec.sampling is not None:
        settings = settings.model_copy(update=spec.sampling.model_dump(exclude_unset=True))
    system = (Message("system", spec.system_prompt),) if spec.system_prompt else ()
    requests = [
        GenerationRequest((*system, *q.conversation()), settings, seed)
        for q, seed in zip(queries, seeds, strict=True)
    ]
    return [g.text for g in await pool.generate(model, requests)]


def plot_run_regret(rows: list[dict[str, Any]], path: Path, config: SelectConfig) -> None:
    """This run's cumulative strong and weak regret against the round (one "seed")."""
    regrets = [r["cumulative_regret"] for r in rows if "cumulative_regret" in r]
    curves = RegretCurves(*(np.array([[r[k] for r in regrets]]) for k in ("strong", "weak")))
    title = f"{len(config.candidates)} candidates, batch {config.batch}"
    plot_regret({config.policy.kind: curves}, path, title=title)
