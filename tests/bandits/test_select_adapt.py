"""Online adaptation in `select` on a toy pool, trainer and merger: who trains on what,
which version answers each round, and resuming after a crash during an update with no
version lost or trained twice. (Real engines and TRL: test_select_adapt_live.py.)"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from multisample.bandits.select.adapt import TrainingJob
from multisample.bandits.select.config import SelectConfig
from multisample.bandits.select.loop import run_select
from multisample.bandits.select.state import ANSWERS, ROUNDS, STATE
from multisample.engine.storage import read_jsonl
from multisample.engine.training import TRAINING, TrainingResult
from multisample.engine.types import Generation, GenerationRequest
from tests.engine.test_adapters import fake_base
from tests.search.toy import ToyPool

QUERIES = 12
REWARD = f"{__name__}:toy_reward"


def toy_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """A fixed function of the answer's seed: strict preferences, never a tie."""
    return [int(r.split("|")[1]) % 997 / 997 for r in responses]


class AdaptingPool(ToyPool):
    """A toy pool that serves adapters and merged weights: an answer names the model and
    the version that wrote it."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self.weights: dict[str, str] = {}  # model -> adapter folder merged into it
        self.adapters: dict[str, tuple[str, int]] = {}  # adapter -> (base, version)
        self.loads: list[tuple[str, str]] = []  # (model or adapter, version folder name)

    async def load_weights(self, model: str, path: str | Path) -> None:
        merged_from = (Path(path) / "merged_from").read_text()
        self.weights[model] = merged_from
        self.loads.append((model, merged_from))

    async def add_adapter(
        self, base: str, name: str, path: str | Path, version: int | None = None
    ) -> None:
        assert version is not None and Path(path).name == f"v{version}"
        self.adapters[name] = (base, version)
        self.loads.append((name, Path(path).name))

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        served = self.weights.get(model) or (
            f"v{self.adapters[model][1]}" if model in self.adapters else "v0"
        )
        generations = await super().generate(model, requests)
        return [
            Generation(**{**vars(g), "text": f"{model}@{served}|{g.text.split('|', 1)[1]}"})
            for g in generations
        ]


class ToyTrainer:
    """Writes the examples it got into the version folder; `crash_on` (a call number)
    raises there instead, after writing half of it."""

    def __init__(self, crash_on: int | None = None) -> None:
        self.jobs: list[TrainingJob] = []
        self.crash_on = crash_on

    def __call__(self, job: TrainingJob) -> TrainingResult:
        self.jobs.append(job)
        job.output.mkdir(parents=True)
        if len(self.jobs) == self.crash_on:
            raise RuntimeError("killed while training")
        examples = [[m.content for m in e.prompt] + [e.chosen, e.rejected] for e in job.examples]
        (job.output / "examples.json").write_text(json.dumps(examples))
        return TrainingResult(
            steps=1,
            loss_curve=[],
            validation_loss=None,
            seconds=0.0,
            train_seconds=0.0,
            examples_seen=len(job.examples),
        )


def toy_merger(base: Path, adapter: Path, output: Path) -> None:
    output.mkdir(parents=True)
    (output / "merged_from").write_text(adapter.name)


def adapt_config(
    tmp_path: Path, model_settings: dict[str, Any] | None = None, **overrides: Any
) -> SelectConfig:
    prompts = tmp_path / "queries.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(QUERIES)
        )
    )
    models = [
        {
            "name": name,
            "model": str(fake_base(tmp_path / "models" / name)),
            **(model_settings or {}),
        }
        for name in ("a", "b", "c")
    ]
    return SelectConfig.model_validate(
        {
            "models": models,
            "prompts": str(prompts),
            "batch": 3,
            "rounds": 4,
            "feedback": {"kind": "reward", "reward": {"kind": "callable", "path": REWARD}},
            "adapt": {"steps": 1},
            **overrides,
        }
    )


async def play(
    config: SelectConfig,
    run: Path,
    trainer: ToyTrainer,
    pool: AdaptingPool | None = None,
    resume: bool = False,
) -> tuple[dict[str, Any], AdaptingPool]:
    pool = pool or AdaptingPool(config.model_names())
    summary = await run_select(
        config,
        run,
        resume=resume,
        pool=pool,
        trainer=trainer,
        merger=toy_merger,  # type: ignore[arg-type]
    )
    return summary, pool


def preferred_answer(answer: dict[str, Any]) -> str:
    side = "first" if answer["preferred"] == answer["first"] else "second"
    return answer[f"{side}_answer"]


def trained_on(run: Path, candidate: str, version: int) -> list[list[Any]]:
    return json.loads((run / "adapters" / candidate / f"v{version}" / "examples.json").read_text())


async def test_both_models_of_each_played_pair_learn_from_the_preferred_answers(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    trainer = ToyTrainer()
    summary, pool = await play(adapt_config(tmp_path), run, trainer)
    rounds = list(read_jsonl(run / ROUNDS))
    answers = list(read_jsonl(run / ANSWERS))
    versions = {"a": 0, "b": 0, "c": 0}
    for row in rounds:
        pair = (row["first"], row["second"])
        assert row["versions"] == {name: versions[name] for name in pair}
        played = [a for a in answers if a["round"] == row["round"]]
        # Each answer was written by the version the round names (merged into its model).
        for answer in played:
            for side in ("first", "second"):
                assert answer[f"{side}_answer"].startswith(
                    f"{answer[side]}@v{versions[answer[side]]}|"
                )
        lessons = [
            [f"question {a['query_id'][1:]}", preferred_answer(a), None]
            for a in played
            if a["preferred"] is not None  # a tie teaches nothing
        ]
        for name in pair:
            versions[name] += 1
            assert trained_on(run, name, versions[name]) == lessons
    assert summary["adapter_versions"] == versions
    assert sum(versions.values()) == 2 * len(rounds) == len(trainer.jobs)
    # Each version trains on from the one before, with its own seed.
    for job in trainer.jobs:
        version = int(job.output.name.split(".")[0][1:])
        expected = None if version == 1 else job.output.parent / f"v{version - 1}"
        assert job.start_from == expected
        assert job.settings.max_steps == 1 and job.settings.method == "sft"
    assert len({job.seed for job in trainer.jobs}) == len(trainer.jobs)
    assert pool.loads == [
        (j.output.parent.name, j.output.name.removesuffix(".partial")) for j in trainer.jobs
    ]
    state = json.loads((run / STATE).read_text())
    assert {n: a["version"] for n, a in state["adapters"].items()} == {
        n: v for n, v in versions.items() if v
    }
    record = json.loads((run / "adapters" / "a" / "v1" / TRAINING).read_text())
    assert record["candidate"] == "a" and record["version"] == 1 and record["start_from"] is None


async def test_dpo_learns_the_preferred_answer_over_the_other(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = adapt_config(tmp_path, rounds=1, adapt={"method": "dpo"})
    await play(config, run, ToyTrainer())
    (row,) = read_jsonl(run / ROUNDS)
    for answer in read_jsonl(run / ANSWERS):
        if answer["preferred"] is None:
            continue
        won = "first" if answer["preferred"] == answer["first"] else "second"
        lost = "second" if won == "first" else "first"
        pair = [
            f"question {answer['query_id'][1:]}",
            answer[f"{won}_answer"],
            answer[f"{lost}_answer"],
        ]
        for name in (row["first"], row["second"]):
            assert pair in trained_on(run, name, 1)


async def test_ucb1_unfiltered_trains_the_chosen_model_on_all_its_own_answers(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    config = adapt_config(tmp_path, policy={"kind": "ucb1"}, adapt={"steps": 1, "accept": None})
    summary, _ = await play(config, run, ToyTrainer())
    counts = {"a": 0, "b": 0, "c": 0}
    for row in read_jsonl(run / ROUNDS):
        name = row["first"]
        assert row["second"] == name and row["versions"] == {name: counts[name]}
        counts[name] += 1
        own = [a for a in read_jsonl(run / ANSWERS) if a["round"] == row["round"]]
        assert trained_on(run, name, counts[name]) == [
            [f"question {a['query_id'][1:]}", a["first_answer"], None] for a in own
        ]
    assert summary["adapter_versions"] == counts


async def test_ucb1_trains_the_chosen_model_only_on_the_answers_the_feedback_accepts(
    tmp_path: Path,
) -> None:
    """The authors' UCB1: the chosen model learns only where its answer was right."""
    run = tmp_path / "run"
    config = adapt_config(tmp_path, policy={"kind": "ucb1"}, adapt={"steps": 1, "accept": 0.5})
    trainer = ToyTrainer()
    await play(config, run, trainer)
    answers = list(read_jsonl(run / ANSWERS))
    accepted = [
        [f"question {a['query_id'][1:]}", a["first_answer"], None]
        for a in answers
        if a["first_score"] >= 0.5
    ]
    assert 0 < len(accepted) < len(answers)  # the toy reward accepts some, not all
    learned = [example for job in trainer.jobs for example in job.examples]
    assert [[m.content for m in e.prompt] + [e.chosen, e.rejected] for e in learned] == accepted


async def test_served_as_lora_adapters_the_new_version_answers_under_the_adapter_name(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    config = adapt_config(tmp_path, {"enable_lora": True}, adapt={"serve": "lora"}, rounds=2)
    _, pool = await play(config, run, ToyTrainer())
    first, _ = read_jsonl(run / ROUNDS)
    assert set(pool.adapters) <= {"a-adapted", "b-adapted", "c-adapted"}
    for name in (first["first"], first["second"]):
        assert pool.adapters[f"{name}-adapted"][0] == name
    for answer in read_jsonl(run / ANSWERS):
        if answer["round"] == 2:
            for side in ("first", "second"):
                name = answer[side]
                model = f"{name}-adapted" if name in (first["first"], first["second"]) else name
                assert answer[f"{side}_answer"].startswith(f"{model}@")


class FullTrainer(ToyTrainer):
    """Writes a toy model folder: it names itself, as a merged one names its adapter."""

    def __call__(self, job: TrainingJob) -> TrainingResult:
        result = super().__call__(job)
        (job.output / "merged_from").write_text(job.output.name.removesuffix(".partial"))
        return result


async def test_fully_trained_versions_go_on_from_the_last_and_are_served_in_place(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    trainer = FullTrainer()
    # A GPU model too: full weights are served in place there as well, never as a LoRA.
    config = adapt_config(tmp_path, {"num_gpus": 1}, adapt={"weights": "full"})
    _, pool = await play(config, run, trainer)
    assert trainer.jobs and all(job.full for job in trainer.jobs)
    for job in trainer.jobs:
        version = int(job.output.name.removesuffix(".partial")[1:])
        previous = job.output.parent / f"v{version - 1}"
        assert job.start_from == (previous if version > 1 else None)
        record = json.loads((job.output.with_name(f"v{version}") / TRAINING).read_text())
        assert record["hyperparameters"]["weights"] == "full"
    # Each load is a version's own folder (no merge), and no adapter was added.
    assert pool.loads and all(folder.startswith("v") for _, folder in pool.loads)
    assert not pool.adapters and not list(run.glob("adapters/*/merged"))
    for row in read_jsonl(run / ROUNDS):
        for name, version in row["versions"].items():
            if version:
                assert (name, f"v{version}") in pool.loads


async def test_every_n_rounds_trains_once_on_all_of_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = ToyTrainer()
    await play(adapt_config(tmp_path, adapt={"every": 2}), run, trainer)
    rows = list(read_jsonl(run / ROUNDS))
    assert all(
        row["versions"] == dict.fromkeys((row["first"], row["second"]), 0) for row in rows[:2]
    )
    for job in trainer.jobs:
        record = json.loads(
            (job.output.parent / job.output.name.removesuffix(".partial") / TRAINING).read_text()
        )
        assert record["rounds"] in ([1, 2], [3, 4], [1, 4])


@pytest.mark.parametrize("crash", ["training", "loading"])
async def test_a_crash_during_an_update_resumes_with_no_version_lost_or_trained_twice(
    tmp_path: Path, crash: str
) -> None:
    config = adapt_config(tmp_path)
    whole = tmp_path / "whole"
    await play(config, whole, ToyTrainer())

    run = tmp_path / "run"
    trainer = ToyTrainer(crash_on=3 if crash == "training" else None)
    pool = AdaptingPool(config.model_names())
    if crash == "loading":
        original = pool.load_weights
        calls = 0

        async def flaky(model: str, path: str | Path) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:  # after version folder was renamed, before state.json
                raise RuntimeError("engine died while loading weights")
            await original(model, path)

        pool.load_weights = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await play(config, run, trainer, pool)
    # Round 2 is committed, and round 1's two versions; round 2's first one is not.
    state = json.loads((run / STATE).read_text())
    assert state["round"] == 2
    assert sorted(a["version"] for a in state["adapters"].values()) == [1, 1]
    assert len(list((run / "adapters").glob("*/v*"))) == 3  # the uncommitted one too

    await play(config, run, ToyTrainer(), resume=True)
    assert list(read_jsonl(run / ROUNDS)) == list(read_jsonl(whole / ROUNDS))
    assert list(read_jsonl(run / ANSWERS)) == list(read_jsonl(whole / ANSWERS))
    assert json.loads((run / STATE).read_text()) == json.loads((whole / STATE).read_text())
    folders = sorted(p.relative_to(run).as_posix() for p in (run / "adapters").glob("*/v*"))
    assert folders == sorted(
        p.relative_to(whole).as_posix() for p in (whole / "adapters").glob("*/v*")
    )
    for folder in folders:
        assert (run / folder / "examples.json").read_text() == (
            whole / folder / "examples.json"
        ).read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adapt": {"method": "dpo"}, "policy": {"kind": "ucb1"}}, "use method 'sft'"),
        ({"adapt": {"candidates": ["zz"]}}, "no candidate named 'zz'"),
        ({"adapt": {"serve": "lora"}}, "set enable_lora: true"),
        ({"adapt": {"weights": "full", "serve": "lora"}}, "in place of the engine's own"),
        (
            {
                "candidates": [
                    {"name": "x", "model": "a"},
                    {"name": "y", "model": "a", "system_prompt": "Hi."},
                ]
            },
            "used by x, y",
        ),
        (
            {"feedback": {"kind": "reward", "reward": {"kind": "judge", "model": "a"}}},
            "used by a, the judge",
        ),
    ],
)
def test_adaptations_that_cannot_work_are_refused(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        adapt_config(tmp_path, **overrides)


class RecordingPool(AdaptingPool):
    """Also keeps every request's turns."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self.sent: list[list[str]] = []

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.sent += [[m.content for m in r.messages] for r in requests]
        return await super().generate(model, requests)


@pytest.mark.parametrize("policy", ["co_ucb", "ucb1"])
async def test_a_multi_turn_query_reaches_the_models_and_their_lessons_whole(
    tmp_path: Path, policy: str
) -> None:
    """The earlier turns of a conversation go to the candidates before the query, stay in
    the answers file, and are in every example learnt from it (duels and self-training)."""
    # Every answer accepted: the self-training rounds learn from all of theirs.
    adapt = {"steps": 1, "accept": None}
    config = adapt_config(tmp_path, policy={"kind": policy}, rounds=2, adapt=adapt)
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (tmp_path / "queries.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"question {i}", "history": earlier}) + "\n"
            for i in range(QUERIES)
        )
    )
    run = tmp_path / "run"
    pool = RecordingPool(config.model_names())
    await play(config, run, ToyTrainer(), pool)
    assert pool.sent and all(turns[:2] == ["hi", "hello"] for turns in pool.sent)
    answers = list(read_jsonl(run / ANSWERS))
    assert all(a["history"] == earlier for a in answers)
    lessons = [
        lesson
        for folder in (run / "adapters").glob("*/v*")
        for lesson in json.loads((folder / "examples.json").read_text())
    ]
    assert lessons and all(lesson[:2] == ["hi", "hello"] for lesson in lessons)
    assert {lesson[2] for lesson in lessons} <= {a["prompt"] for a in answers}


def test_a_system_turn_of_the_data_beside_a_candidates_system_prompt_is_refused(
    tmp_path: Path,
) -> None:
    from multisample.bandits.select.config import check_inputs
    from multisample.engine.config import ConfigError

    config = adapt_config(
        tmp_path,
        candidates=[
            {"name": "a", "model": "a", "system_prompt": "Be brief."},
            {"name": "b", "model": "b"},
        ],
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"id": "q0", "prompt": "hi", "history": [{"role": "system", "content": "Arr."}]})
        + "\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"queries.jsonl:1: prompt 'q0' has a system turn of its own, and "
        r"candidate 'a' has a system_prompt",
    ):
        check_inputs(config)
