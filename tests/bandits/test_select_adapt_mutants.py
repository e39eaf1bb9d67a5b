"""bandits/select/adapt.py rules test_select_adapt.py leaves unpinned; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from multisample.bandits.adaptation import adaptation_records, sft_file
from multisample.bandits.select import adapt
from multisample.bandits.select.adapt import Adaptation, duel_examples, own_examples
from multisample.bandits.select.config import CandidateSpec
from multisample.bandits.select.state import (
    ANSWERS,
    AdapterVersion,
    SelectRun,
    merged_folder,
    version_folder,
)
from multisample.engine.model_folders import resolve_model_path
from multisample.engine.seeds import derive_seed
from multisample.engine.training import TRAINING, Example
from multisample.engine.types import Message
from tests.bandits.test_select import fresh_state
from tests.bandits.test_select_adapt import AdaptingPool, ToyTrainer, adapt_config, toy_merger


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def answer(
    round_: int, name: str | tuple[str, str], score: float | None, text: str
) -> dict[str, Any]:
    """A single-model round's answer of `name` (or a duel's, when `name` is a pair)."""
    first, second = (name, name) if isinstance(name, str) else name
    return {
        "round": round_,
        "prompt": f"q{round_}",
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "first": first,
        "second": second,
        "first_answer": text,
        "first_score": score,
    }


def test_own_examples_are_the_candidates_accepted_answers_under_its_system_turn(
    tmp_path: Path,
) -> None:
    write_rows(
        tmp_path / ANSWERS,
        [
            answer(1, "a", 1.0, "kept"),
            answer(2, "a", 0.5, "below the threshold"),
            answer(3, "a", None, "unscored"),
            answer(4, "b", 1.0, "another candidate's"),
            answer(5, ("a", "b"), 1.0, "a duel's"),
            answer(6, "a", 1.0, "after the rounds asked for"),
        ],
    )
    brief = CandidateSpec(name="a", model="m", system_prompt="Be brief.")
    turns = (
        Message("system", "Be brief."),
        Message("user", "hi"),
        Message("assistant", "yo"),
        Message("user", "q1"),
    )
    assert own_examples(tmp_path, brief, 0, 5, accept=1.0) == [Example(turns, "kept")]
    plain = CandidateSpec(name="a", model="m")
    taught = own_examples(tmp_path, plain, 0, 5, accept=None)
    assert [e.chosen for e in taught] == ["kept", "below the threshold", "unscored"]
    assert taught[0].prompt == turns[1:]


def test_sft_duel_examples_teach_the_last_turn_after_the_others(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
    ]
    write_rows(tmp_path / sft_file("a"), [{"round": 2, "messages": messages}])
    assert duel_examples(tmp_path, "a", "sft", 1, 2) == [
        Example((Message("system", "Be brief."), Message("user", "Say hi.")), "hi")
    ]
    assert duel_examples(tmp_path, "a", "sft", 2, 3) == []  # round 2 is not after 2


def adaptation(
    tmp_path: Path, model_settings: dict[str, Any] | None = None, **adapt: Any
) -> tuple[Adaptation, ToyTrainer, list[Path]]:
    """An adaptation of candidates a, b and c on a toy pool, trainer and merger; the
    merger's list takes the base each merge got."""
    config = adapt_config(tmp_path, model_settings, adapt={"steps": 1, **adapt})
    run = SelectRun.open(tmp_path / "run", config, resume=False)
    bases: list[Path] = []

    def merger(base: Path, adapter: Path, output: Path) -> None:
        bases.append(base)
        toy_merger(base, adapter, output)

    trainer = ToyTrainer()
    pool = AdaptingPool(config.model_names())
    return Adaptation(config, pool, run, trainer, merger), trainer, bases


def duels(run: Path, pair: tuple[str, str], rounds: range) -> None:
    """A duel of `pair` per round, the first answer preferred, in the run's lesson files."""
    files: dict[str, list[dict[str, Any]]] = {}
    for number in rounds:
        lessons = adaptation_records(
            number, f"q{number}", (Message("user", "hi"),), pair, (None, None), ("x", "y"), 0
        )
        for file, rows in lessons.items():
            files.setdefault(file, []).extend(rows)
    for file, rows in files.items():
        write_rows(run / file, rows)


async def test_an_update_trains_each_candidate_with_new_lessons_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapted, trainer, _ = adaptation(tmp_path)
    duels(adapted.run.path, ("b", "c"), range(1, 3))
    state = fresh_state(["a", "b", "c"])
    state.round = 2
    state.adapters = {"a": AdapterVersion(1, 2)}  # a has learned these rounds already
    # Serving a version takes 2.3456 s on this clock: b's, then c's.
    clock = iter([100.0, 102.3456, 200.0, 202.3456])
    monkeypatch.setattr(adapt, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    said: list[str] = []
    await adapted.update(state, said.append)
    assert said == ["training b v1 on 2 examples", "training c v1 on 2 examples"]
    assert state.adapters == {n: AdapterVersion(v, 2) for n, v in (("a", 1), ("b", 1), ("c", 1))}
    seed = derive_seed(adapted.config.seed, "adapt", "b", 1)
    assert trainer.jobs[0].seed == seed
    record = json.loads((version_folder(adapted.run.path, "b", 1) / TRAINING).read_text())
    assert record == {
        "candidate": "b",
        "version": 1,
        "rounds": [1, 2],
        "examples": 2,
        "method": "sft",
        "hyperparameters": {**adapted.settings.record(seed), "weights": "lora"},
        "start_from": None,
        "steps": 1,
        "loss_curve": [],
        "seconds": 0.0,
        "train_seconds": 0.0,
        "versions": {},
        "serve_seconds": 2.35,
    }


async def test_a_version_trains_from_the_last_with_the_models_own_settings(
    tmp_path: Path,
) -> None:
    settings = {"system_prompt": "Be brief.", "prompt_format": "base"}
    adapted, trainer, _ = adaptation(tmp_path, settings)
    stale = version_folder(adapted.run.path, "a", 2).with_name("v2.partial")
    stale.mkdir(parents=True)  # a try cut short: the trainer writes a new folder
    examples = [Example((Message("user", "hi"),), "x")]
    record = await adapted.train("a", 2, examples, 2, 3)
    (job,) = trainer.jobs
    assert job.base == resolve_model_path(adapted.spec("a").model)
    assert (job.prompt_format, job.system_prompt) == ("base", "Be brief.")
    assert job.carry_optimizer is True and job.seed == adapted.seed("a", 2)
    assert job.start_from == version_folder(adapted.run.path, "a", 1)
    assert (record["start_from"], record["rounds"], record["examples"]) == ("v1", [3, 3], 1)
    assert (
        not stale.exists() and (version_folder(adapted.run.path, "a", 2) / "examples.json").exists()
    )


async def test_a_merged_version_replaces_a_merge_cut_short(tmp_path: Path) -> None:
    adapted, _, bases = adaptation(tmp_path)
    version_folder(adapted.run.path, "a", 1).mkdir(parents=True)
    merged = merged_folder(adapted.run.path, "a")
    merged.with_name("merged.partial").mkdir(parents=True)  # the merger makes a new one
    await adapted.load_version("a", 1)
    assert bases == [resolve_model_path(adapted.spec("a").model)]
    assert (merged / "merged_from").read_text() == "v1"
    assert not merged.with_name("merged.partial").exists()


def test_dpo_teaches_only_duels_not_a_models_own_accepted_answers(tmp_path: Path) -> None:
    """A single-model round's accepted answer is a lesson for sft only (it has no pair)."""
    turns = (Message("user", "hi"), Message("assistant", "yo"), Message("user", "q1"))
    for method, lessons in (("sft", [Example(turns, "kept")]), ("dpo", [])):
        (tmp_path / method).mkdir()
        adapted, _, _ = adaptation(tmp_path / method, method=method)
        write_rows(adapted.run.path / ANSWERS, [answer(1, "a", 1.0, "kept")])
        assert adapted.examples("a", 0, 1) == lessons
