"""The files of a `select` run and their unit of commit, the round.

state.json holds everything a restart needs. Each round appends its records (rounds.jsonl,
answers.jsonl, adaptation/<candidate>.{sft,dpo}.jsonl), then replaces state.json
atomically: that write commits the round. A candidate's new adapter version is written to
its own folder, then committed the same way. On resume, records of later rounds and
adapter versions not committed are dropped, so a killed run continues from its last
committed round and versions with nothing lost or counted twice.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from multisample.bandits.adaptation import adaptation_records, dpo_file, sft_file
from multisample.bandits.policies.base import Policy, RoundOutcome
from multisample.bandits.policies.persistence import policy_from_state
from multisample.bandits.select.arbiters import Verdict
from multisample.bandits.simulator import strong_regret, weak_regret
from multisample.engine.config import ConfigError
from multisample.engine.storage import (
    SUMMARY,
    RunDirectory,
    RunDirectoryError,
    dumps_line,
    read_jsonl,
    write_atomic,
)
from multisample.engine.types import message_dicts

STATE = "state.json"
ROUNDS = "rounds.jsonl"
ANSWERS = "answers.jsonl"
STATE_FORMAT = "multisample.select/1"
ADAPTERS = "adapters"
"""Adapted candidates' LoRA versions: adapters/<candidate>/v<N>/ (every version is kept),
and, when served merged, adapters/<candidate>/merged/ (the latest, rebuilt on resume)."""


def version_folder(run: Path, candidate: str, version: int) -> Path:
    return run / ADAPTERS / candidate / f"v{version}"


def merged_folder(run: Path, candidate: str) -> Path:
    return run / ADAPTERS / candidate / "merged"


def _version_number(name: str) -> int | None:
    """N for a folder named vN; None for anything else (the merged weights, a torn write)."""
    return int(name[1:]) if name[:1] == "v" and name[1:].isdigit() else None


@dataclass(frozen=True)
class Round:
    """One played round: its number, the pair (candidate indices; first == second for a
    single-arm policy) and a verdict per query answered."""

    number: int
    first: int
    second: int
    verdicts: list[Verdict]

    @cached_property
    def outcome(self) -> RoundOutcome:
        """What the policy learns: a duel's wins and ties with any scores as rewards; a
        single model's round, its answers' rewards only."""
        first_rewards, second_rewards = (
            tuple(s for v in self.verdicts if (s := v.scores[side]) is not None) for side in (0, 1)
        )
        if self.first == self.second:
            return RoundOutcome(self.first, self.second, first_rewards=first_rewards)
        preferred = [v.preferred for v in self.verdicts]
        return RoundOutcome(
            self.first,
            self.second,
            first_wins=preferred.count(0),
            second_wins=preferred.count(1),
            ties=preferred.count(None),
            first_rewards=first_rewards,
            second_rewards=second_rewards,
        )


@dataclass(frozen=True)
class AdapterVersion:
    """A candidate's committed adapter: its version and the last round it learned from."""

    version: int
    through: int


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
    adapters: dict[str, AdapterVersion] = field(default_factory=dict)
    """Each adapted candidate's committed LoRA version (none yet: not listed)."""

    def version(self, candidate: str) -> int:
        """The adapter version a candidate plays (0: its model as configured)."""
        adapter = self.adapters.get(candidate)
        return 0 if adapter is None else adapter.version

    def trained_through(self, candidate: str) -> int:
        """The last round whose lessons a candidate's adapter holds."""
        adapter = self.adapters.get(candidate)
        return 0 if adapter is None else adapter.through

    def apply(self, played: Round) -> None:
        """Count a played round: the policy learns from it, the cursor moves past its
        queries, and the win matrix and ties take its preferences (a single model's round
        has none)."""
        outcome = played.outcome
        self.policy.update(outcome)
        self.round = played.number
        self.cursor += len(played.verdicts)
        self.wins[played.first, played.second] += outcome.first_wins
        self.wins[played.second, played.first] += outcome.second_wins
        self.ties += outcome.ties

    def add_regret(self, truth: np.ndarray, winner: int, played: Round) -> None:
        """The round's strong and weak regret against the true best, per query answered."""
        queries = len(played.verdicts)
        self.regret["strong"] += queries * strong_regret(truth, winner, played.first, played.second)
        self.regret["weak"] += queries * weak_regret(truth, winner, played.first, played.second)

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
            "adapters": {
                name: {"version": a.version, "through": a.through}
                for name, a in self.adapters.items()
            },
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
            wins = np.asarray(data["wins"])  # no dtype: 1.5 or true must not pass as a count
            if wins.dtype.kind != "i" or wins.shape != (len(candidates),) * 2 or (wins < 0).any():
                raise ValueError(f"wins must be a {len(candidates)}x{len(candidates)} count matrix")
            return cls(
                candidates=candidates,
                policy=policy,
                wins=wins,
                round=_count(data, "round"),
                cursor=_count(data, "cursor"),
                ties=_count(data, "ties"),
                regret={k: float(data["cumulative_regret"][k]) for k in ("strong", "weak")},
                adapters=_adapters(data.get("adapters", {}), candidates),
            )
        except (KeyError, TypeError, ValueError) as exc:  # PolicyStateError is a ValueError
            raise SelectStateError(f"{path}: corrupt state: {exc}") from None


def _adapters(data: Any, candidates: list[str]) -> dict[str, AdapterVersion]:
    """The "adapters" entry (absent from states of runs that do not adapt)."""
    if not isinstance(data, dict) or not set(data) <= set(candidates):
        raise ValueError(f"adapters must map candidates to versions (got {data!r})")
    return {
        name: AdapterVersion(_count(entry, "version"), _count(entry, "through"))
        for name, entry in data.items()
    }


def _count(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a count (got {value!r})")
    return value


def round_records(
    played: Round,
    names: tuple[str, str],
    system_prompts: tuple[str | None, str | None],
    best: str,
    regret: dict[str, float] | None,
    versions: tuple[int, int] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The round's history row, its answers and its adaptation data, by file. `names`,
    `system_prompts` and `versions` (the adapter versions played, when candidates adapt)
    are the pair's; `regret` is the cumulative regret after the round, when the truth is
    known."""
    number, outcome = played.number, played.outcome
    a, b = names
    row: dict[str, Any] = {
        "round": number,
        "first": a,
        "second": b,
        "queries": [v.query.id for v in played.verdicts],
        "first_wins": outcome.first_wins,
        "second_wins": outcome.second_wins,
        "ties": outcome.ties,
        "best": best,
    }
    if versions is not None:
        row["versions"] = dict(zip(names, versions, strict=True))
    if regret is not None:
        row["cumulative_regret"] = regret
    records: dict[str, list[dict[str, Any]]] = {ROUNDS: [row], ANSWERS: []}
    for verdict in played.verdicts:
        records[ANSWERS].append(
            {
                "round": number,
                "query_id": verdict.query.id,
                "prompt": verdict.query.prompt,
                **(
                    {"history": message_dicts(verdict.query.history)}
                    if verdict.query.history
                    else {}
                ),
                "first": a,
                "second": b,
                "first_answer": verdict.answers[0],
                "second_answer": verdict.answers[1],
                "first_score": verdict.scores[0],
                "second_score": verdict.scores[1],
                "preferred": None if verdict.preferred is None else names[verdict.preferred],
            }
        )
        if a != b and verdict.preferred is not None:
            extra = adaptation_records(
                number,
                verdict.query.id,
                verdict.query.conversation(),
                names,
                system_prompts,
                verdict.answers,
                verdict.preferred,
            )
            for file, rows in extra.items():
                records.setdefault(file, []).extend(rows)
    return records


class SelectRun(RunDirectory):
    """A run directory whose unit of commit is a round (state.json), not a prompt."""

    def commit_round(self, state: SelectState, records: dict[str, list[dict[str, Any]]]) -> None:
        """Append the round's records, then commit the round by replacing state.json."""
        for name, rows in records.items():
            (self.path / name).parent.mkdir(exist_ok=True)  # adaptation/, in the run
            self.append(name, rows)
        self.commit_state(state)

    def commit_state(self, state: SelectState) -> None:
        """Replace state.json: commits a round, or a new adapter version."""
        write_atomic(self.path / STATE, json.dumps(state.document(), indent=1) + "\n")

    def _repair(self) -> None:
        """Drop the records of rounds after the committed one, and torn lines, from the
        run's own record files, and the adapter versions trained but not committed (or
        torn); nothing else is touched. (`run_select` checks the state file before it
        opens the run.)"""
        (self.path / SUMMARY).unlink(missing_ok=True)
        state = self.path / STATE
        document = json.loads(state.read_bytes()) if state.exists() else {}
        committed = document.get("round", 0)
        candidates = [str(c) for c in document.get("candidates", [])]
        versions = {n: a["version"] for n, a in document.get("adapters", {}).items()}
        for candidate in candidates:
            for folder in _uncommitted(
                self.path / ADAPTERS / candidate, versions.get(candidate, 0)
            ):
                # Trained again from the committed version.
                shutil.rmtree(folder)
        records = [ROUNDS, ANSWERS]
        records += [name(c) for c in candidates for name in (sft_file, dpo_file)]
        for file in [self.path / name for name in records]:
            if file.exists():
                kept = [r for r in _numbered(file) if r["round"] <= committed]
                text = "".join(dumps_line(r) for r in kept)
                if text.encode() != file.read_bytes():
                    write_atomic(file, text)


def _uncommitted(folder: Path, committed: int) -> list[Path]:
    """A candidate's version folders after its committed one, and those left half written
    (`v<N>.partial`, `merged.partial`); not what the run did not write."""
    if not folder.is_dir():
        return []
    return [
        child
        for child in folder.iterdir()
        if child.is_dir()
        and (
            child.name.endswith(".partial")
            or ((number := _version_number(child.name)) is not None and number > committed)
        )
    ]


def _numbered(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one of the run's files, each with the round it belongs to."""
    for number, record in enumerate(read_jsonl(path), start=1):
        if not isinstance(record.get("round"), int):
            raise RunDirectoryError(
                f"{path}:{number}: round: not a round number; repair or delete that line"
            )
        yield record
