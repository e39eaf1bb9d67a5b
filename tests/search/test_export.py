"""Run directories as datasets: prompts' metadata and turns carried into the records,
the dataset card (README.md), and `multisample export` (SFT and pairs, split by prompt)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

from multisample.engine.prompts import PromptsError
from multisample.engine.storage import PROGRESS, SUMMARY, read_jsonl
from multisample.engine.types import Generation, GenerationRequest, Message
from multisample.jobs.export import ExportInputError, ExportOptions, export_run, parse_split
from multisample.jobs.train import split_by_prompt
from multisample.search.synthesize.card import CARD
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import PAIRS, PROMPTS, SAMPLES
from multisample.search.synthesize.run import synthesize
from tests.search.toy import ToyPool

SYSTEM = "You are model a."
TURNS = [
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
]


class RecordingPool(ToyPool):
    """The toy pool, keeping the messages of every request it was sent."""

    def __init__(self) -> None:
        super().__init__(("a", "b"))
        self.sent: list[tuple[Message, ...]] = []

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.sent += [r.messages for r in requests]
        return await super().generate(model, requests)


def toy_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """The toy texts are 'model|seed|...': reward = (seed mod 100) / 100."""
    return [int(r.split("|")[1]) % 100 / 100 for r in responses]


def write_prompts(tmp_path: Path, n: int = 6) -> Path:
    """A parquet file: other column names, a metadata column, multi-turn rows."""
    rows = [
        {
            "qid": f"q{i}",
            "conv": [*TURNS, {"role": "user", "content": f"Question {i}?"}]
            if i % 2
            else [{"role": "user", "content": f"Question {i}?"}],
            "topic": f"t{i}",
        }
        for i in range(n)
    ]
    path = tmp_path / "prompts.parquet"
    datasets.Dataset.from_list(rows).to_parquet(path)
    return path


def toy_config(path: Path, **changes: Any) -> SynthesizeConfig:
    return SynthesizeConfig.model_validate(
        {
            "models": [
                {"name": "a", "model": "/no/a", "system_prompt": SYSTEM},
                {"name": "b", "model": "/no/b"},
            ],
            "prompts": {"path": str(path), "columns": {"id": "qid", "messages": "conv"}},
            "budget": {"generations": 4},
            "strategy": {"kind": "ensemble"},
            "reward": {"kind": "callable", "path": "tests.search.test_export:toy_reward"},
            **changes,
        }
    )


@pytest.fixture
async def run(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    await synthesize(toy_config(write_prompts(tmp_path)), path, pool=RecordingPool())  # type: ignore[arg-type]
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path))


# --- what a run carries of its prompts -------------------------------------------------------


async def test_earlier_turns_precede_every_call_and_reach_the_pairs(tmp_path: Path) -> None:
    pool = RecordingPool()
    run = tmp_path / "run"
    await synthesize(toy_config(write_prompts(tmp_path)), run, pool=pool)  # type: ignore[arg-type]
    history = tuple(Message(t["role"], t["content"]) for t in TURNS)
    asked = {m[-1].content: m[:-1] for m in pool.sent}
    assert asked["Question 1?"] == history  # the strategy's message comes after the turns
    assert asked["Question 0?"] == ()
    pairs = {p["prompt_id"]: p for p in read(run / PAIRS)}
    assert pairs, "the toy rewards differ: every prompt has pairs"
    for prompt_id, pair in pairs.items():
        system = [{"role": "system", "content": SYSTEM}] if pair["chosen_model"] == "a" else []
        turns = TURNS if int(prompt_id[1:]) % 2 else []
        question = {"role": "user", "content": f"Question {prompt_id[1:]}?"}
        assert pair["prompt"] == [*system, *turns, question]
        assert pair["metadata"] == {"topic": f"t{prompt_id[1:]}"}


async def test_samples_carry_the_metadata_and_prompts_jsonl_the_prompt(run: Path) -> None:
    samples = read(run / SAMPLES)
    assert samples and all(s["metadata"] == {"topic": f"t{s['prompt_id'][1:]}"} for s in samples)
    prompts = {p["prompt_id"]: p for p in read(run / PROMPTS)}
    assert set(prompts) == {f"q{i}" for i in range(6)}
    assert prompts["q1"]["history"] == TURNS and prompts["q1"]["prompt"] == "Question 1?"
    assert "history" not in prompts["q0"]


async def test_a_plain_prompts_file_writes_records_as_before(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "x", "prompt": "Say hi."}\n', encoding="utf-8")
    run = tmp_path / "run"
    await synthesize(toy_config(prompts, prompts=str(prompts)), run, pool=RecordingPool())  # type: ignore[arg-type]
    assert all("metadata" not in r for r in read(run / SAMPLES) + read(run / PAIRS))


async def test_a_system_turn_of_the_data_and_a_system_prompt_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    path.write_text(json.dumps({"id": "s", "messages": conv}) + "\n", encoding="utf-8")
    config = toy_config(path, prompts={"path": str(path)})
    with pytest.raises(PromptsError, match=r"p.jsonl:1: prompt 's' has a system turn .* 'a'"):
        await synthesize(config, tmp_path / "run", pool=RecordingPool())  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()
    # Without a model's system prompt, the data's system turn is the conversation's first.
    models = [{"name": "a", "model": "/no/a"}, {"name": "b", "model": "/no/b"}]
    config = toy_config(path, prompts={"path": str(path)}, models=models)
    pool = RecordingPool()
    await synthesize(config, tmp_path / "run", pool=pool)  # type: ignore[arg-type]
    assert all(m[0] == Message("system", "Be brief.") for m in pool.sent)


# --- the dataset card ------------------------------------------------------------------------


def front_matter(run: Path) -> dict[str, Any]:
    text = (run / CARD).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


async def test_the_card_describes_the_run_and_loads_with_datasets(
    run: Path, tmp_path: Path
) -> None:
    summary = json.loads((run / SUMMARY).read_text(encoding="utf-8"))
    configs = {c["config_name"]: c for c in front_matter(run)["configs"]}
    assert set(configs) == {"samples", "pairs", "prompts"}
    assert configs["samples"]["data_files"] == [{"split": "train", "path": SAMPLES}]
    assert configs["samples"]["default"] is True
    text = (run / CARD).read_text(encoding="utf-8")
    for fragment in (
        "strategy **ensemble**",
        "reward **callable**",
        "| a | `/no/a` | vllm | You are model a. |",
        f"| samples | {summary['samples']} |",
        f"| preference pairs | {summary['pairs']} |",
        'pairs = load_dataset("RUN_DIR", "pairs")',
        "## Config\n\n```yaml\nmodels:\n- name: a",  # the config itself
    ):
        assert fragment in text, fragment
    cache = str(tmp_path / "hf-cache")
    pairs = datasets.load_dataset(str(run), "pairs", split="train", cache_dir=cache)
    assert len(pairs) == summary["pairs"]
    samples = datasets.load_dataset(str(run), split="train", cache_dir=cache)  # the default
    assert len(samples) == summary["samples"]


# --- export ----------------------------------------------------------------------------------


def best_by_hand(run: Path) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for s in read(run / SAMPLES):
        if s["reward"] is None:
            continue
        held = best.get(s["prompt_id"])
        if held is None or s["reward"] > held["reward"]:  # file order: ids ascend
            best[s["prompt_id"]] = s
    return best


async def test_sft_export_is_the_best_sample_as_the_model_saw_it(run: Path) -> None:
    manifest = export_run(run, ExportOptions(pairs=False))
    assert not (run / "export" / "sft-test.jsonl").exists()
    rows = read(run / "export" / "sft-train.jsonl")
    assert manifest["rows"] == {"sft-train.jsonl": 6}
    best = best_by_hand(run)
    assert {r["prompt_id"] for r in rows} == set(best)
    for row in rows:
        sample = best[row["prompt_id"]]
        i = int(row["prompt_id"][1:])
        system = [{"role": "system", "content": SYSTEM}] if sample["model"] == "a" else []
        assert row["messages"] == [
            *system,
            *(TURNS if i % 2 else []),
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": sample["text"]},
        ]
        assert (row["sample_id"], row["reward"], row["model"]) == (
            sample["id"],
            sample["reward"],
            sample["model"],
        )
        assert row["metadata"] == {"topic": f"t{i}"}


async def test_the_split_is_by_prompt_seeded_and_the_same_for_sft_and_pairs(
    run: Path, tmp_path: Path
) -> None:
    manifest = export_run(run, ExportOptions(test=0.34, seed=3))
    ids = [f"q{i}" for i in range(6)]
    train, test = split_by_prompt(ids, 0.34, 3)  # the split `train` makes
    assert (manifest["train_prompts"], manifest["test_prompts"]) == (train, test)
    assert len(test) == 2
    export = run / "export"
    for kind in ("sft", "pairs"):
        held = {r["prompt_id"] for r in read(export / f"{kind}-test.jsonl")}
        kept = {r["prompt_id"] for r in read(export / f"{kind}-train.jsonl")}
        assert held <= set(test) and kept <= set(train)
    assert {r["prompt_id"] for r in read(export / "sft-test.jsonl")} == set(test)
    everything = read(export / "pairs-train.jsonl") + read(export / "pairs-test.jsonl")
    assert sorted(map(json.dumps, everything)) == sorted(map(json.dumps, read(run / PAIRS)))
    assert json.loads((export / "split.json").read_text())["test_prompts"] == test
    # The same options give the same files; the card now lists them.
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    export_run(run, ExportOptions(test=0.34, seed=3))
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before
    configs = {c["config_name"]: c["data_files"] for c in front_matter(run)["configs"]}
    assert configs["sft"] == [
        {"split": "train", "path": "export/sft-train.jsonl"},
        {"split": "test", "path": "export/sft-test.jsonl"},
    ]
    sft = datasets.load_dataset(str(run), "sft", cache_dir=str(tmp_path / "hf-cache"))
    assert (len(sft["train"]), len(sft["test"])) == (4, 2)
    # Another export replaces the folder whole: no test file of the last one is left.
    export_run(run, ExportOptions(sft=True, pairs=False))
    assert sorted(p.name for p in export.iterdir()) == ["sft-train.jsonl", "split.json"]
    assert not list(run.glob(".export*"))
    assert "sft-test" not in (run / CARD).read_text(encoding="utf-8").split("---")[1]


async def test_only_committed_prompts_are_exported(run: Path) -> None:
    progress = read(run / PROGRESS)
    (run / PROGRESS).write_text(
        "".join(json.dumps(r) + "\n" for r in progress[:-1]), encoding="utf-8"
    )
    dropped = progress[-1]["prompt_id"]
    manifest = export_run(run, ExportOptions())
    assert dropped not in manifest["train_prompts"]
    export = run / "export"
    rows = read(export / "sft-train.jsonl") + read(export / "pairs-train.jsonl")
    assert rows and all(r["prompt_id"] != dropped for r in rows)


async def test_a_run_without_prompts_jsonl_takes_the_config_prompts_file(run: Path) -> None:
    export_run(run, ExportOptions(pairs=False))
    expected = read(run / "export" / "sft-train.jsonl")
    (run / PROMPTS).unlink()  # a run made before prompts.jsonl was written
    export_run(run, ExportOptions(pairs=False))
    assert read(run / "export" / "sft-train.jsonl") == expected


@pytest.mark.parametrize(
    ("text", "share"), [("test=0.1", 0.1), ("test=0", 0.0), ("test = 0.5", 0.5)]
)
def test_parse_split(text: str, share: float) -> None:
    assert parse_split(text) == share


@pytest.mark.parametrize("text", ["0.1", "valid=0.1", "test=x", "test=1", "test=-0.1", "test="])
def test_parse_split_refuses(text: str) -> None:
    with pytest.raises(ExportInputError, match=r"^--split: "):
        parse_split(text)


# --- on the command line ---------------------------------------------------------------------


def multisample(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("multisample")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True)


def sweep_like(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    (sweep / "cells").mkdir(parents=True)
    (sweep / "config.yaml").write_text("methods: []\n", encoding="utf-8")
    return sweep


async def test_the_export_command(run: Path, tmp_path: Path) -> None:
    done = multisample("export", run, "--sft", "--split", "test=0.5")
    assert done.returncode == 0, done.stderr
    assert "sft-train.jsonl: 3 rows" in done.stdout and "3 train / 3 test prompts" in done.stdout
    assert not (run / "export" / "pairs-train.jsonl").exists()
    for args, fragment in (
        ((run, "--split", "valid=0.1"), "--split: expected test=FRACTION"),
        ((tmp_path / "nowhere",), "not a run directory"),
        ((sweep_like(tmp_path),), "a sweep; export one of its cells"),
    ):
        before = sorted(p.name for p in (run / "export").iterdir())
        done = multisample("export", *args)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and fragment in line, line
        assert sorted(p.name for p in (run / "export").iterdir()) == before
    help_text = multisample("export", "--help").stdout
    assert "--sft" in help_text and "--split" in help_text
