"""`select` over the real embedded models (the session pool): reward and human feedback,
the files a run writes, and resuming to play on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from multisample.bandits.adaptation import dpo_file, sft_file
from multisample.bandits.policies.base import RoundOutcome
from multisample.bandits.policies.registry import make_policy
from multisample.bandits.select.config import SelectConfig
from multisample.bandits.select.loop import run_select
from multisample.bandits.select.state import ANSWERS, ROUNDS, STATE
from multisample.bandits.simulator import strong_regret, weak_regret
from multisample.engine.prompts import EMBEDDED_TASKS, load_prompts
from multisample.engine.storage import SUMMARY, read_jsonl
from tests.conftest import BASE_MODEL, CHAT_MODEL, embedded_pool_config

pytestmark = pytest.mark.engine

CANDIDATES = [
    {"name": CHAT_MODEL, "model": CHAT_MODEL},
    {"name": BASE_MODEL, "model": BASE_MODEL},
    {"name": "terse", "model": CHAT_MODEL, "system_prompt": "Answer in one word only."},
]
TRUTH = [[0.5, 0.7, 0.6], [0.3, 0.5, 0.4], [0.4, 0.6, 0.5]]


def live_config(tmp_path: Path, **overrides: Any) -> SelectConfig:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"candidates": [c["name"] for c in CANDIDATES], "matrix": TRUTH}))
    return SelectConfig.model_validate(
        {
            **embedded_pool_config().model_dump(),
            "candidates": CANDIDATES,
            "limit": 6,
            "batch": 3,
            "rounds": 3,
            "sampling": {"temperature": 0.8, "max_tokens": 24},
            "truth": str(truth),
            **overrides,
        }
    )


def records(run: Path, name: str) -> list[dict[str, Any]]:
    return list(read_jsonl(run / name))


async def test_co_ucb_over_live_models_writes_history_state_and_adaptation_data(
    pool: Any, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = live_config(tmp_path)
    summary = await run_select(config, run, pool=pool)
    assert summary["status"] == "complete"
    assert (summary["rounds"], summary["queries"]) == (3, 9)

    rows = records(run, ROUNDS)
    answers = records(run, ANSWERS)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["first"] != r["second"] for r in rows)
    assert len(answers) == 9
    names = [c["name"] for c in CANDIDATES]
    # The history is the policy's: replaying its feedback picks the same pairs.
    replay = make_policy(config.policy, 3, config.seed)
    for r in rows:
        first, second = names.index(r["first"]), names.index(r["second"])
        assert replay.select() == (first, second)
        replay.update(RoundOutcome(first, second, r["first_wins"], r["second_wins"], r["ties"]))
        assert names[replay.best()] == r["best"]

    # The reward decides: the higher score wins, equal scores tie.
    for a in answers:
        if a["first_score"] == a["second_score"]:
            assert a["preferred"] is None
        else:
            winner = "first" if a["first_score"] > a["second_score"] else "second"
            assert a["preferred"] == a[winner]

    # The state's win matrix is the sum of the history, nothing more.
    state = json.loads((run / STATE).read_text())
    wins = np.zeros((3, 3), dtype=int)
    for r in rows:
        i, j = names.index(r["first"]), names.index(r["second"])
        wins[i, j] += r["first_wins"]
        wins[j, i] += r["second_wins"]
    assert state["wins"] == wins.tolist() == summary["wins"]
    assert (
        state["ties"]
        == sum(r["ties"] for r in rows)
        == sum(a["preferred"] is None for a in answers)
    )

    # Regret against the given truth, per query.
    truth, regret = np.array(TRUTH), {"strong": 0.0, "weak": 0.0}
    for r in rows:
        i, j = names.index(r["first"]), names.index(r["second"])
        regret["strong"] += 3 * strong_regret(truth, 0, i, j)
        regret["weak"] += 3 * weak_regret(truth, 0, i, j)
        assert r["cumulative_regret"] == pytest.approx(regret)
    assert summary["true_best"] == CHAT_MODEL
    assert (run / "regret.png").stat().st_size > 0

    # Every strict preference teaches both candidates of its pair.
    strict = [a for a in answers if a["preferred"] is not None]
    for name in names:
        mine = [a for a in strict if name in (a["first"], a["second"])]
        sft = records(run, sft_file(name))
        dpo = records(run, dpo_file(name))
        assert len(sft) == len(dpo) == len(mine)
        for example, answer in zip(sft, mine, strict=True):
            winner = "first" if answer["preferred"] == answer["first"] else "second"
            assert example["messages"][-1]["content"] == answer[f"{winner}_answer"]
            assert example["messages"][0]["role"] == ("system" if name == "terse" else "user")

    # Resuming with more rounds plays on from round 4; nothing is repeated.
    more = await run_select(live_config(tmp_path, rounds=5), run, resume=True, pool=pool)
    rows = records(run, ROUNDS)
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5]
    assert more["queries"] == 15 == len(records(run, ANSWERS))
    assert json.loads((run / SUMMARY).read_text())["rounds"] == 5


async def test_single_arm_ucb1_learns_from_absolute_rewards(pool: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = live_config(tmp_path, policy={"kind": "ucb1"}, rounds=4, truth=None)
    summary = await run_select(config, run, pool=pool)
    rows = records(run, ROUNDS)
    assert all(r["first"] == r["second"] for r in rows)
    # UCB1 plays each untried arm first.
    assert sorted(r["first"] for r in rows[:3]) == sorted(c["name"] for c in CANDIDATES)
    assert not (run / "adaptation").exists()
    assert summary["cumulative_regret"] is None
    assert all(a["first_score"] is not None for a in records(run, ANSWERS))


async def test_a_person_judges_stops_and_resumes(pool: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = live_config(tmp_path, feedback={"kind": "human"}, batch=2, rounds=2, truth=None)
    replies = iter(["1", "q"])
    summary = await run_select(config, run, pool=pool, ask=lambda _: next(replies))
    # The first query was judged, then the person stopped: a round of one query.
    assert summary["status"] == "stopped"
    assert (summary["rounds"], summary["queries"]) == (1, 1)
    first = records(run, ANSWERS)
    assert len(first) == 1 and first[0]["preferred"] is not None

    replies = iter(["t", "2", "1"])
    summary = await run_select(config, run, resume=True, pool=pool, ask=lambda _: next(replies))
    assert summary["status"] == "complete"
    answers = records(run, ANSWERS)
    # The query the person did not judge comes again: no query is skipped or repeated.
    ids = [p.id for p in load_prompts(EMBEDDED_TASKS, 3).prompts]
    assert [a["query_id"] for a in answers] == ids
    assert [a["round"] for a in answers] == [1, 2, 2]
    assert summary["ties"] == 1
