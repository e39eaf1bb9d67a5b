"""`multisample select` without engines: config rules, the state file, repair on resume,
the human arbiter, queries and the true matrix. (Live runs: test_select_live.py.)"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from rich.console import Console

from multisample.bandits.adaptation import adaptation_records, dpo_file, sft_file
from multisample.bandits.policies.co_ucb import CoUCBSettings
from multisample.bandits.policies.registry import make_policy
from multisample.bandits.select.arbiters import HumanArbiter, Verdict
from multisample.bandits.select.config import SelectConfig, query_stream, read_truth
from multisample.bandits.select.state import (
    ANSWERS,
    ROUNDS,
    STATE,
    AdapterVersion,
    Round,
    SelectRun,
    SelectState,
    SelectStateError,
)
from multisample.engine.config import ConfigError
from multisample.engine.storage import config_text, read_jsonl
from multisample.engine.types import Message, Prompt
from tests.bandits.select_process import start

MODELS = [
    {"name": "chat", "model": "/models/a"},
    {"name": "base", "model": "/models/b", "prompt_format": "base"},
]


def config(**overrides: Any) -> SelectConfig:
    return SelectConfig.model_validate({"models": MODELS, **overrides})


def test_candidates_default_to_the_pool_models() -> None:
    names = [(c.name, c.model) for c in config().candidates]
    assert names == [("chat", "chat"), ("base", "base")]
    assert config().policy.kind == "co_ucb"
    assert config().feedback.kind == "reward"


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([{"name": "x", "model": "chat"}, {"name": "x", "model": "base"}], "repeated: x"),
        ([{"name": "x", "model": "chat"}], "at least two candidates"),
        ([{"name": "x", "model": "chat"}, {"name": "y", "model": "nope"}], "no pool model"),
    ],
)
def test_bad_candidates_are_refused(candidates: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(candidates=candidates)


def test_a_candidate_system_prompt_may_not_stack_on_the_model_s() -> None:
    models = [{**MODELS[0], "system_prompt": "Be brief."}, MODELS[1]]
    with pytest.raises(ValidationError, match="has its own system_prompt"):
        SelectConfig.model_validate(
            {
                "models": models,
                "candidates": [
                    {"name": "x", "model": "chat", "system_prompt": "Be long."},
                    {"name": "y", "model": "base"},
                ],
            }
        )


def test_fixed_policy_arm_must_exist() -> None:
    with pytest.raises(ValidationError, match=r"policy\.arm"):
        config(policy={"kind": "fixed", "arm": 2})


def fresh_state(names: list[str]) -> SelectState:
    policy = make_policy(CoUCBSettings(), len(names), seed=3)
    return SelectState(names, policy, np.zeros((len(names),) * 2, dtype=int))


def played_state(names: list[str]) -> SelectState:
    """Three rounds of four queries each: the first answer wins twice, the second once,
    and one tie."""
    state = fresh_state(names)
    for number in (1, 2, 3):
        first, second = state.policy.select()
        verdicts = [
            Verdict(Prompt(id=f"q{i}", prompt="p"), ("x", "y"), (None, None), preferred)
            for i, preferred in enumerate([0, 0, 1, None])
        ]
        state.apply(Round(number, first, second, verdicts))
    return state


def test_apply_counts_a_round_once() -> None:
    state = played_state(["a", "b", "c"])
    assert (state.round, state.cursor, state.ties) == (3, 12, 3)
    assert state.wins.sum() == 9 and state.policy.rounds == 3


def test_state_document_round_trips(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    state = played_state(names)
    state.regret = {"strong": 1.5, "weak": 0.5}
    # Every candidate adapted, one still at version 0 (a count may be 0).
    state.adapters = {name: AdapterVersion(i, 2 * i) for i, name in enumerate(names)}
    path = tmp_path / STATE
    path.write_text(json.dumps(state.document()))
    again = SelectState.parse(path, names, "co_ucb")
    assert again.document() == state.document()
    assert state.document()["best"] == names[state.policy.best()]
    assert again.policy.select() == state.policy.select()


def corrupt(document: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**document, key: value}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not a readable state file"),
        (lambda d: json.dumps({"summary": 1}), "not a multisample select state"),
        (
            lambda d: json.dumps(corrupt(d, "candidates", ["a", "b"])),
            re.escape("a state of candidates ['a', 'b'], but the config has ['a', 'b', 'c']"),
        ),
        (lambda d: json.dumps(corrupt(d, "round", -1)), "round must be a count"),
        (lambda d: json.dumps(corrupt(d, "round", True)), "round must be a count"),
        (lambda d: json.dumps(corrupt(d, "wins", [[0]])), "count matrix"),
        (lambda d: json.dumps(corrupt(d, "wins", [[0, 1.5, 0]] * 3)), "count matrix"),
        (lambda d: json.dumps(corrupt(d, "adapters", ["a"])), "adapters must map candidates"),
        (lambda d: json.dumps(corrupt(d, "adapters", {"z": {}})), "adapters must map candidates"),
        (lambda d: json.dumps(corrupt(d, "policy", {"kind": "nope"})), "corrupt state"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "cursor"}), "cursor"),
    ],
)
def test_bad_state_files_are_refused_and_left_alone(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    names = ["a", "b", "c"]
    path = tmp_path / STATE
    path.write_text(mutate(played_state(names).document()))
    before = path.read_bytes()
    with pytest.raises(SelectStateError, match=message) as error:
        SelectState.parse(path, names, "co_ucb")
    assert str(path) in str(error.value)
    assert path.read_bytes() == before


def test_state_of_another_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STATE
    path.write_text(json.dumps(played_state(["a", "b", "c"]).document()))
    with pytest.raises(SelectStateError, match="'co_ucb' policy, but the config has 'rucb'"):
        SelectState.parse(path, ["a", "b", "c"], "rucb")


def test_resume_drops_rounds_after_the_committed_one(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    run = SelectRun.open(tmp_path / "run", config(), resume=False)
    state = fresh_state(names)
    for number in (1, 2):
        state.round = number
        run.commit_round(
            state,
            {ROUNDS: [{"round": number}], sft_file("a"): [{"round": number, "messages": []}]},
        )
    # Round 3 reached the files but was never committed, and its last line is torn.
    run.append(ROUNDS, [{"round": 3}])
    run.append(sft_file("a"), [{"round": 3, "messages": []}])
    with (tmp_path / "run" / ANSWERS).open("a") as handle:
        handle.write('{"round": 3, "que')
    SelectRun.open(tmp_path / "run", config(), resume=True)
    assert [r["round"] for r in read_jsonl(tmp_path / "run" / ROUNDS)] == [1, 2]
    assert [r["round"] for r in read_jsonl(tmp_path / "run" / sft_file("a"))] == [1, 2]
    assert (tmp_path / "run" / ANSWERS).read_bytes() == b""


def test_adaptation_records_teach_both_candidates(tmp_path: Path) -> None:
    records = adaptation_records(
        4,
        "q1",
        (Message("user", "Say hi."),),
        ("a", "b"),
        ("Be brief.", None),
        ("hello", "hi"),
        preferred=1,
    )
    assert set(records) == {sft_file("a"), sft_file("b"), dpo_file("a"), dpo_file("b")}
    sft_a = records[sft_file("a")][0]
    assert sft_a["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
    ]
    assert sft_a["source"] == "b" and sft_a["round"] == 4
    dpo_b = records[dpo_file("b")][0]
    # Each record names the query that taught it, as the round's answers do.
    assert {r["query_id"] for rows in records.values() for r in rows} == {"q1"}
    assert dpo_b["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert dpo_b["chosen"] == [{"role": "assistant", "content": "hi"}]
    assert dpo_b["rejected"] == [{"role": "assistant", "content": "hello"}]

    # The files load as TRL's conversational datasets.
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "dpo.jsonl"
    path.write_text(json.dumps(dpo_b) + "\n")
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    assert loaded[0]["chosen"][0]["content"] == "hi"


class ScriptedCoin:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def random(self) -> float:
        return self.values.pop(0)


async def test_human_arbiter_maps_shown_order_back_to_the_pair() -> None:
    output = io.StringIO()
    replies = iter(["2", "maybe", "1", "t", "q"])
    judge = HumanArbiter(Console(file=output, width=100), lambda _: next(replies), seed=0)
    judge.coin = ScriptedCoin([0.9, 0.1, 0.9, 0.9])  # no swap, swap, no swap, no swap
    queries = [Prompt(id=f"q{i}", prompt=f"question {i}") for i in range(4)]
    verdicts = await judge(queries, ["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"])
    # q0: shown (a0, b0), typed 2 -> b wins. q1: shown swapped (b1, a1); 'maybe' is asked
    # again; typed 1 -> b wins. q2: tie. q3: stop, so only three verdicts.
    assert [v.preferred for v in verdicts] == [1, 1, None]
    assert "type 1, 2, t or q" in output.getvalue()
    assert "question 1" in output.getvalue()


async def test_human_arbiter_shows_the_conversation_before_the_query() -> None:
    output = io.StringIO()
    judge = HumanArbiter(Console(file=output, width=100), lambda _: "1", seed=0)
    earlier = (Message("user", "hi there"), Message("assistant", "hello you"))
    await judge([Prompt(id="q", prompt="and now?", history=earlier)], ["a"], ["b"])
    shown = output.getvalue()
    assert shown.index("[user] hi there") < shown.index("[assistant] hello you")
    assert shown.index("[assistant] hello you") < shown.index("and now?")


async def test_human_arbiter_stops_at_end_of_input() -> None:
    def closed(_: str) -> str:
        raise EOFError

    judge = HumanArbiter(Console(file=io.StringIO()), closed, seed=0)
    assert await judge([Prompt(id="q", prompt="p")], ["a"], ["b"]) == []


def test_truth_is_reordered_to_the_config_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"candidates": ["b", "a"], "matrix": [[0.5, 0.8], [0.2, 0.5]]}))
    assert read_truth(str(path), ["a", "b"]).tolist() == [[0.5, 0.2], [0.8, 0.5]]
    with pytest.raises(ConfigError, match="the config has"):
        read_truth(str(path), ["a", "c"])
    path.write_text(json.dumps({"candidates": ["a", "b"], "matrix": [[0.5, 0.8], [0.8, 0.5]]}))
    with pytest.raises(ConfigError, match=r"P\[i,j\] \+ P\[j,i\] = 1"):
        read_truth(str(path), ["a", "b"])
    path.write_text("[]")
    with pytest.raises(ConfigError, match="not a preference matrix file"):
        read_truth(str(path), ["a", "b"])


def write_prompts(path: Path, count: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(count))
    )
    return path


def test_queries_cycle_reshuffled_when_rounds_need_more(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    once = [q.id for q in query_stream(config(prompts=str(prompts)), io.StringIO())]
    assert once == ["p0", "p1", "p2"]
    stream = query_stream(config(prompts=str(prompts), rounds=5), io.StringIO())
    ids = [next(stream).id for _ in range(9)]
    assert ids[:3] == ["p0", "p1", "p2"]
    assert sorted(ids[3:6]) == sorted(ids[6:9]) == ["p0", "p1", "p2"]


def test_queries_from_stdin_one_per_line() -> None:
    stream = query_stream(config(prompts="-"), io.StringIO("first\n\nsecond\n"))
    assert [(q.id, q.prompt) for q in stream] == [("stdin-1", "first"), ("stdin-3", "second")]


CONFIG = {  # a run of three candidates on one engine, as a user would start it
    "models": [{"name": "smollm2", "model": "embedded:smollm2-135m-instruct"}],
    "candidates": [
        {"name": "plain", "model": "smollm2"},
        {"name": "terse", "model": "smollm2", "system_prompt": "Answer in one word only."},
        {"name": "hot", "model": "smollm2", "sampling": {"temperature": 1.5}},
    ],
    "limit": 8,
    "batch": 3,
    "rounds": 9,
    "sampling": {"temperature": 0.8, "max_tokens": 12},
}


def test_corrupt_state_is_refused_and_kept(tmp_path: Path) -> None:
    """Checked before any engine starts; the file is left exactly as it was."""
    config = tmp_path / "select.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    run.mkdir()  # a run stopped before it committed a round, whose state is then damaged
    saved = SelectConfig.model_validate(CONFIG)
    (run / "config.yaml").write_text(config_text(saved, exclude={"rounds"}))
    for content, message in [
        (b'{"round": 3, "pol', "not a readable state file"),
        (json.dumps({"status": "complete"}).encode(), "not a multisample select state"),
    ]:
        (run / STATE).write_bytes(content)
        done = start(config, tmp_path, resume=True)
        _, stderr = done.communicate()
        assert done.returncode == 2
        text = stderr.decode()
        assert message in text and str(run / STATE) in text and "Traceback" not in text
        assert (run / STATE).read_bytes() == content
