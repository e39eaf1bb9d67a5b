"""`multisample select`: a dueling bandit picks, online, the best of several candidates.

Each round the policy chooses a pair of candidates (one candidate for single-arm
policies); both answer a batch of queries; a reward model, a judge or a person prefers
one answer per query; the policy learns. Every strict preference is also adaptation data
for both candidates of the pair (the paper's collaborative update).

The run directory holds config.yaml, rounds.jsonl (the choice history), answers.jsonl,
adaptation/<candidate>.{sft,dpo}.jsonl and state.json. Writing state.json (atomically)
commits a round: records of later rounds found on resume are dropped, so a killed run
continues from its last committed round with nothing lost or counted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TextIO

import numpy as np
from pydantic import Field, model_validator
from rich.columns import Columns
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from bandits.adaptation import ADAPTATION, OnlineUpdate, adaptation_records
from bandits.policies import (
    CoUCBSettings,
    Feedback,
    Policy,
    PolicySettings,
    make_policy,
    policy_from_state,
)
from bandits.simulator import strong_regret, true_best, weak_regret
from engine.config import (
    ConfigError,
    RewardSpec,
    RunConfig,
    Settings,
    VerifiableRewardSpec,
    repeated,
)
from engine.pool import ModelPool, pool_for
from engine.progress import progress_bar
from engine.prompts import load_prompts
from engine.rewards import Reward, started_reward
from engine.seeds import derive_seed
from engine.storage import (
    SUMMARY,
    RunDirectory,
    check_run_directory,
    read_jsonl,
    write_atomic,
)
from engine.types import GenerationRequest, Message, Prompt, SamplingSettings

STATE = "state.json"
ROUNDS = "rounds.jsonl"
ANSWERS = "answers.jsonl"
STATE_FORMAT = "multisample.select/1"
STDIN = "-"


class CandidateSpec(Settings):
    """One arm of the bandit: a pool model, optionally with its own system prompt and
    sampling (variants of one model share its engine)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    """How the history, the win matrix and the adaptation files name this candidate."""
    model: str
    """The pool model that answers."""
    system_prompt: str | None = None
    """A system turn before every query (the model's own spec must not have one)."""
    sampling: SamplingSettings | None = None
    """Overrides the run's (and the model's) sampling settings for this candidate."""


class RewardFeedback(Settings):
    """A reward model or judge scores both answers; the higher one is preferred."""

    kind: Literal["reward"] = "reward"
    reward: RewardSpec = Field(default_factory=lambda: VerifiableRewardSpec(kind="verifiable"))
    """How answers are scored (any reward of `synthesize`)."""
    tie_margin: float = Field(0.0, ge=0.0)
    """Scores closer than this are a tie (no preference)."""


class HumanFeedback(Settings):
    """A person at the terminal reads both answers side by side and types 1, 2 or t."""

    kind: Literal["human"] = "human"


FeedbackSpec = Annotated[RewardFeedback | HumanFeedback, Field(discriminator="kind")]


class SelectConfig(RunConfig):
    """Online model selection: candidates, queries, the bandit policy and the feedback."""

    candidates: list[CandidateSpec] = Field(default_factory=list)
    """The arms; empty means one candidate per pool model, named after it."""
    batch: int = Field(16, ge=1)
    """Queries per round, all answered by the round's pair."""
    rounds: int | None = Field(None, ge=1)
    """Rounds to play; the prompts file is cycled (reshuffled each pass) when it holds
    fewer than rounds x batch queries. None: one pass over the queries. `--resume` may
    raise it to play on."""
    policy: PolicySettings = Field(default_factory=CoUCBSettings)
    """The bandit policy; `kind` names it."""
    feedback: FeedbackSpec = Field(default_factory=RewardFeedback)
    """Where preferences come from."""
    truth: str | None = None
    """A JSON preference matrix {"candidates": [...], "matrix": [[P(i beats j)]]}: with it
    each round records its strong and weak regret."""
    seed: int = 0
    """Seeds the policy, the query order and every generation."""

    @model_validator(mode="after")
    def _check_candidates(self) -> SelectConfig:
        if not self.candidates:
            self.candidates = [CandidateSpec(name=n, model=n) for n in self.model_names()]
        twice = repeated([c.name for c in self.candidates])
        if twice:
            raise ValueError(f"candidate names must be unique; repeated: {', '.join(twice)}")
        if len(self.candidates) < 2:
            raise ValueError("select needs at least two candidates")
        models = {name: self.model(name) for name in self.model_names()}
        for candidate in self.candidates:
            if candidate.model not in models:
                raise ValueError(
                    f"candidate {candidate.name!r}: no pool model named {candidate.model!r}"
                )
            if candidate.system_prompt and models[candidate.model].system_prompt:
                raise ValueError(
                    f"candidate {candidate.name!r}: model {candidate.model!r} has its own "
                    "system_prompt; give it to the candidate only"
                )
        if self.policy.kind == "fixed" and not 0 <= self.policy.arm < len(self.candidates):
            raise ValueError(f"policy.arm must index a candidate (0..{len(self.candidates) - 1})")
        return self


class SelectStateError(ConfigError):
    """A state file that is corrupt or belongs to another run; it is left as it is."""


@dataclass
class SelectState:
    """What state.json holds: everything a restart needs, committed once per round."""

    candidates: list[str]
    policy: Policy
    wins: np.ndarray
    """wins[i, j]: queries on which candidate i's answer was preferred to j's."""
    round: int = 0
    cursor: int = 0
    """Queries consumed so far (over all passes of the prompts file)."""
    ties: int = 0
    regret: dict[str, float] = field(default_factory=lambda: {"strong": 0.0, "weak": 0.0})

    def document(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "round": self.round,
            "cursor": self.cursor,
            "candidates": self.candidates,
            "best": self.candidates[self.policy.best()],
            "wins": self.wins.tolist(),
            "ties": self.ties,
            "cumulative_regret": self.regret,
            "policy": self.policy.state(),
        }

    @classmethod
    def parse(cls, path: Path, candidates: list[str], policy_kind: str) -> SelectState:
        """Read and check a state file, or raise SelectStateError saying what is wrong."""
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SelectStateError(f"{path}: not a readable state file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise SelectStateError(f"{path}: not a multisample select state ({STATE_FORMAT})")
        if data.get("candidates") != candidates:
            raise SelectStateError(
                f"{path}: a state of candidates {data.get('candidates')}, but the config has "
                f"{candidates}"
            )
        try:
            policy = policy_from_state(data["policy"])
            if policy.kind != policy_kind:
                raise ValueError(f"a {policy.kind!r} policy, but the config has {policy_kind!r}")
            wins = np.asarray(data["wins"], dtype=int)
            if wins.shape != (len(candidates),) * 2 or (wins < 0).any():
                raise ValueError(f"wins must be a {len(candidates)}x{len(candidates)} count matrix")
            return cls(
                candidates=candidates,
                policy=policy,
                wins=wins,
                round=_count(data, "round"),
                cursor=_count(data, "cursor"),
                ties=_count(data, "ties"),
                regret={k: float(data["cumulative_regret"][k]) for k in ("strong", "weak")},
            )
        except (KeyError, TypeError, ValueError) as exc:  # PolicyStateError is a ValueError
            raise SelectStateError(f"{path}: corrupt state: {exc}") from None


def _count(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a count (got {value!r})")
    return value


class SelectRun(RunDirectory):
    """A run directory whose unit of commit is a round (state.json), not a prompt."""

    def commit_round(self, state: SelectState, records: dict[str, list[dict[str, Any]]]) -> None:
        """Append the round's records, then commit the round by replacing state.json."""
        for name, rows in records.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            self.append(name, rows)
        write_atomic(self.path / STATE, json.dumps(state.document(), indent=1) + "\n")

    def _repair(self) -> None:
        """Drop records of rounds after the committed one, and torn lines. (`select`
        checks the state file before it opens the run.)"""
        (self.path / SUMMARY).unlink(missing_ok=True)
        state = self.path / STATE
        committed = json.loads(state.read_bytes())["round"] if state.exists() else 0
        for file in [*self.path.glob("*.jsonl"), *self.path.glob(f"{ADAPTATION}/*.jsonl")]:
            kept = [r for r in read_jsonl(file) if r["round"] <= committed]
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            if text.encode() != file.read_bytes():
                write_atomic(file, text)


@dataclass(frozen=True)
class Duel:
    """One query of a round: the answers and what the feedback said."""

    query: Prompt
    answers: tuple[str, str]
    scores: tuple[float | None, float | None]
    preferred: int | None
    """0 or 1: whose answer won; None for a tie."""


class Judge(Protocol):
    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Duel]: ...


class RewardJudge:
    """Prefers the answer the reward scores higher (by more than the tie margin)."""

    def __init__(self, reward: Reward, tie_margin: float) -> None:
        self.reward = reward
        self.tie_margin = tie_margin

    async def scores(self, queries: list[Prompt], answers: list[str]) -> list[float]:
        scored = await asyncio.gather(
            *(self.reward.score(q, [a]) for q, a in zip(queries, answers, strict=True))
        )
        return [s[0] for s in scored]

    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Duel]:
        a, b = await asyncio.gather(self.scores(queries, first), self.scores(queries, second))
        return [
            Duel(q, (x, y), (sx, sy), None if abs(sx - sy) <= self.tie_margin else int(sy > sx))
            for q, x, y, sx, sy in zip(queries, first, second, a, b, strict=True)
        ]


class HumanJudge:
    """Shows both answers side by side, in random order so that position tells nothing,
    and asks which is better. 'q' (or the end of input) stops after the queries judged."""

    def __init__(self, console: Console, ask: Callable[[str], str], seed: int) -> None:
        self.console = console
        self.ask = ask
        self.coin = random.Random(seed)

    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Duel]:
        duels: list[Duel] = []
        for query, x, y in zip(queries, first, second, strict=True):
            swap = self.coin.random() < 0.5
            shown = (y, x) if swap else (x, y)
            self.console.rule(f"query {query.id}")
            self.console.print(query.prompt, markup=False)
            panels = [
                Panel(Text(text or "(empty)"), title=str(i + 1)) for i, text in enumerate(shown)
            ]
            self.console.print(Columns(panels, equal=True, expand=True))
            choice = self._choice()
            if choice == "q":
                break
            preferred = None if choice == "t" else (int(choice) - 1) ^ int(swap)
            duels.append(Duel(query, (x, y), (None, None), preferred))
        return duels

    def _choice(self) -> str:
        while True:
            try:
                answer = self.ask("better answer: 1, 2, t (tie), q (stop) > ").strip().lower()
            except EOFError:
                return "q"
            if answer in {"1", "2", "t", "q"}:
                return answer
            self.console.print("type 1, 2, t or q", style="red")


def read_truth(path: str, candidates: list[str]) -> np.ndarray:
    """The true preference matrix, reordered to the config's candidates."""
    where = Path(path)
    try:
        data = json.loads(where.read_bytes())
        names = [str(n) for n in data["candidates"]]
        matrix = np.asarray(data["matrix"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a preference matrix file: {exc}") from None
    if sorted(names) != sorted(candidates) or matrix.shape != (len(names),) * 2:
        raise ConfigError(
            f"{where}: a matrix of candidates {names}, but the config has {candidates}"
        )
    if not np.allclose(matrix + matrix.T, 1.0) or ((matrix < 0) | (matrix > 1)).any():
        raise ConfigError(f"{where}: entries must be probabilities with P[i,j] + P[j,i] = 1")
    order = [names.index(c) for c in candidates]
    return matrix[np.ix_(order, order)]


def query_stream(config: SelectConfig, stdin: TextIO) -> Iterator[Prompt]:
    """Queries in play order: the file's (reshuffled on each further pass), or stdin's."""
    if config.prompts == STDIN:
        for number, line in enumerate(stdin, start=1):
            if line.strip():
                yield Prompt(id=f"stdin-{number}", prompt=line.rstrip("\n"))
        return
    prompts = load_prompts(config.prompts, config.limit).prompts
    order, passes = list(prompts), 0
    while True:
        yield from order
        if config.rounds is None:
            return
        passes += 1
        order = list(prompts)
        random.Random(derive_seed(config.seed, "pass", passes)).shuffle(order)


def check(config: SelectConfig, policy: Policy) -> None:
    """What the config schema cannot see: combinations that would fail mid-run."""
    if config.feedback.kind == "human":
        if policy.absolute_feedback:
            raise ConfigError(
                f"policy {policy.kind!r} learns from absolute rewards; a person gives "
                "preferences (use feedback kind 'reward', or a dueling policy)"
            )
        if config.prompts == STDIN:
            raise ConfigError(
                "human feedback reads the verdicts from standard input; "
                "queries must come from a prompts file"
            )
    if config.prompts != STDIN:
        load_prompts(config.prompts, config.limit)  # a bad file fails before engines start


async def select(
    config: SelectConfig,
    run_path: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    pool: ModelPool | None = None,
    stdin: TextIO | None = None,
    ask: Callable[[str], str] | None = None,
    online_update: OnlineUpdate | None = None,
) -> dict[str, Any]:
    """Play rounds until `rounds` (or the queries) run out; return the summary.

    `pool`, when given, must be started and hold the config's models; it is left running.
    `stdin` and `ask` replace standard input for queries and for a person's verdicts.
    """
    console = console or Console(stderr=True)
    candidates = [c.name for c in config.candidates]
    truth = read_truth(config.truth, candidates) if config.truth else None
    policy = make_policy(config.policy, len(candidates), config.seed)
    check(config, policy)
    # `rounds` only says when to stop: a resumed run may raise it to play on.
    check_run_directory(run_path, config, resume, exclude={"rounds"})
    state = SelectState(candidates, policy, np.zeros((len(candidates),) * 2, dtype=int))
    if resume and (run_path / STATE).exists():
        state = SelectState.parse(run_path / STATE, candidates, config.policy.kind)
    async with AsyncExitStack() as stack:
        started = await stack.enter_async_context(pool_for(config, config.sampling, console, pool))
        judge: Judge
        if isinstance(config.feedback, RewardFeedback):
            spec = config.feedback.reward
            reward = await stack.enter_async_context(started_reward(spec, started))
            judge = RewardJudge(reward, config.feedback.tie_margin)
        else:
            seed = derive_seed(config.seed, "order")
            judge = HumanJudge(console, ask or console.input, seed)
        # Only now, with engines up and inputs checked, does the run directory appear.
        run = SelectRun.open(run_path, config, resume, exclude={"rounds"})
        session = Session(config, started, run, state, judge, truth, console, online_update)
        return await session.play(stdin or sys.stdin)


class Session:
    """The rounds of one `select` run, from its committed state onwards."""

    def __init__(
        self,
        config: SelectConfig,
        pool: ModelPool,
        run: SelectRun,
        state: SelectState,
        judge: Judge,
        truth: np.ndarray | None,
        console: Console,
        online_update: OnlineUpdate | None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.run = run
        self.state = state
        self.judge = judge
        self.truth = truth
        self.winner = None if truth is None else true_best(truth)
        self.console = console
        self.online_update = online_update
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
        with progress_bar(self.console, disable=isinstance(self.judge, HumanJudge)) as bar:
            task = bar.add_task(config.policy.kind, total=total, completed=state.round, line="")
            while not stopped and (config.rounds is None or state.round < config.rounds):
                batch = list(itertools.islice(queries, config.batch))
                if not batch:
                    break
                stopped = not await self.round(batch)
                bar.update(task, completed=state.round, line=f"best {self.best()}")
        summary = self.summary("stopped" if stopped else "complete")
        self.run.write_summary(summary)
        if self.truth is not None:
            plot_run_regret(self.run.records(ROUNDS), self.run.path / "regret.png")
        return summary

    def best(self) -> str:
        return self.state.candidates[self.state.policy.best()]

    async def round(self, queries: list[Prompt]) -> bool:
        """Play one round and commit it; False when a person stopped it early."""
        state = self.state
        number = state.round + 1
        first, second = state.policy.select()
        a, b = state.candidates[first], state.candidates[second]
        if first == second:  # a single-arm policy: one answer per query, absolute rewards
            answers = await self.answers(a, queries, number)
            assert isinstance(self.judge, RewardJudge)  # check() refuses the other judges
            scores = await self.judge.scores(queries, answers)
            duels = [
                Duel(q, (x, x), (s, s), None)
                for q, x, s in zip(queries, answers, scores, strict=True)
            ]
            feedback = Feedback(first, second, first_rewards=tuple(scores))
        else:
            first_answers, second_answers = await asyncio.gather(
                self.answers(a, queries, number), self.answers(b, queries, number)
            )
            duels = await self.judge(queries, first_answers, second_answers)
            if not duels:
                return False
            outcomes = [d.preferred for d in duels]
            feedback = Feedback(
                first,
                second,
                first_wins=outcomes.count(0),
                second_wins=outcomes.count(1),
                ties=outcomes.count(None),
                first_rewards=tuple(d.scores[0] for d in duels if d.scores[0] is not None),
                second_rewards=tuple(d.scores[1] for d in duels if d.scores[1] is not None),
            )
        state.policy.update(feedback)
        state.round = number
        state.cursor += len(duels)
        if first != second:
            state.wins[first, second] += feedback.first_wins
            state.wins[second, first] += feedback.second_wins
            state.ties += feedback.ties
        records = self.records(number, a, b, duels)
        self.run.commit_round(state, records)
        if self.online_update is not None:
            await self.online_update(number, records)
        return len(duels) == len(queries)

    async def answers(self, name: str, queries: list[Prompt], number: int) -> list[str]:
        seeds = [derive_seed(self.config.seed, number, q.id, name) for q in queries]
        return await candidate_answers(
            self.pool, self.specs[name], self.config.sampling, queries, seeds
        )

    def records(
        self, number: int, a: str, b: str, duels: list[Duel]
    ) -> dict[str, list[dict[str, Any]]]:
        """The round's history row, its answers and its adaptation data, by file."""
        state = self.state
        outcomes = [d.preferred for d in duels]
        row: dict[str, Any] = {
            "round": number,
            "first": a,
            "second": b,
            "queries": [d.query.id for d in duels],
            "first_wins": outcomes.count(0) if a != b else 0,
            "second_wins": outcomes.count(1) if a != b else 0,
            "ties": outcomes.count(None) if a != b else 0,
            "best": self.best(),
        }
        if self.truth is not None and self.winner is not None:
            i, j = state.candidates.index(a), state.candidates.index(b)
            state.regret["strong"] += len(duels) * strong_regret(self.truth, self.winner, i, j)
            state.regret["weak"] += len(duels) * weak_regret(self.truth, self.winner, i, j)
            row["cumulative_regret"] = dict(state.regret)
        records: dict[str, list[dict[str, Any]]] = {ROUNDS: [row], ANSWERS: []}
        names = (a, b)
        for duel in duels:
            records[ANSWERS].append(
                {
                    "round": number,
                    "query_id": duel.query.id,
                    "prompt": duel.query.prompt,
                    "first": a,
                    "second": b,
                    "first_answer": duel.answers[0],
                    "second_answer": duel.answers[1],
                    "first_score": duel.scores[0],
                    "second_score": duel.scores[1],
                    "preferred": None if duel.preferred is None else names[duel.preferred],
                }
            )
            if a != b and duel.preferred is not None:
                extra = adaptation_records(
                    number,
                    duel.query.id,
                    duel.query.prompt,
                    names,
                    (self.specs[a].system_prompt, self.specs[b].system_prompt),
                    duel.answers,
                    duel.preferred,
                )
                for file, rows in extra.items():
                    records.setdefault(file, []).extend(rows)
        return records

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
        return {
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


async def candidate_answers(
    pool: ModelPool,
    spec: CandidateSpec,
    sampling: SamplingSettings,
    queries: list[Prompt],
    seeds: list[int],
) -> list[str]:
    """A candidate's answers: its model, its system prompt, and its sampling over the
    model's over the run's."""
    settings = pool.sampling(spec.model, sampling)
    if spec.sampling is not None:
        settings = settings.model_copy(update=spec.sampling.model_dump(exclude_unset=True))
    system = (Message("system", spec.system_prompt),) if spec.system_prompt else ()
    requests = [
        GenerationRequest((*system, Message("user", q.prompt)), settings, seed)
        for q, seed in zip(queries, seeds, strict=True)
    ]
    return [g.text for g in await pool.generate(spec.model, requests)]


def plot_run_regret(rows: list[dict[str, Any]], path: Path) -> None:
    """Cumulative strong and weak regret of this run against the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "cumulative_regret" in r]
    figure, axes = plt.subplots(figsize=(6, 4))
    for kind in ("strong", "weak"):
        axes.plot(
            [r["round"] for r in rows],
            [r["cumulative_regret"][kind] for r in rows],
            label=f"{kind} regret",
        )
    axes.set_xlabel("round")
    axes.set_ylabel("cumulative regret (queries)")
    axes.legend()
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)
