"""`multisample train`: the pairs format it reads, real (tiny) LoRA training on the CPU,
and bad input refused in one line with nothing written.

The training tests (marker `train`) fine-tune the embedded SmolLM2 for two steps on a
handful of pairs written by hand; each trained adapter is shared by the tests of a module
fixture, so the file trains three times (DPO, SFT, a text-format run).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multisample.cli.app import app
from multisample.engine.backends.base import render_base_prompt
from multisample.engine.prompts import load_prompts
from multisample.engine.storage import CONFIG, PROGRESS, config_text, dumps_line
from multisample.engine.training import TRAINING, Example, dataset_rows
from multisample.engine.types import Message
from multisample.jobs.train import ADAPTERS, Pair, read_pairs, split_by_prompt
from multisample.search.pairs import as_text_format
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.job import RunJob
from multisample.search.synthesize.records import PAIRS
from multisample.search.templates import load_templates
from tests.search.toy import ToyPool, ToyReward

SYSTEM = "Answer in one short sentence."
PROMPT_IDS = [f"p{i}" for i in range(5)]
TINY = ["--max-steps", "2", "--batch-size", "2", "--max-length", "64"]

MODELS = [
    {"name": "smol", "model": "embedded:smollm2-135m-instruct", "system_prompt": SYSTEM},
    {"name": "remote", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
    {"name": "gone", "model": "/nonexistent/model/folder"},
    {"name": "smolbase", "model": "embedded:smollm2-135m-instruct", "prompt_format": "base"},
]


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    return CliRunner()


def conversational_pair(prompt_id: str, method: str) -> dict[str, Any]:
    topic = f"topic {prompt_id}"
    return {
        "prompt": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Say one thing about {topic}."},
        ],
        "chosen": [{"role": "assistant", "content": f"{topic} is interesting."}],
        "rejected": [{"role": "assistant", "content": f"I will not talk about {topic}!!"}],
        "prompt_id": prompt_id,
        "method": method,
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "chosen_id": 0,
        "rejected_id": 1,
        "chosen_model": "smol",
        "rejected_model": "smol",
        "chosen_action": "generate",
        "rejected_action": "generate",
    }


def text_pair(prompt_id: str, method: str) -> dict[str, Any]:
    """A pair as runs wrote them before pairs carried the conversation."""
    pair = conversational_pair(prompt_id, method)
    return {
        **pair,
        "prompt": pair["prompt"][-1]["content"],
        "chosen": pair["chosen"][0]["content"],
        "rejected": pair["rejected"][0]["content"],
    }


def write_run(
    run: Path, pairs: list[dict[str, Any]], models: list[dict[str, Any]] = MODELS
) -> Path:
    """A run directory as synthesize leaves it, minus samples and trees."""
    run.mkdir(parents=True)
    config = SynthesizeConfig.model_validate({"models": models})
    (run / CONFIG).write_text(config_text(config), encoding="utf-8")
    ids = sorted({p["prompt_id"] for p in pairs})
    (run / PROGRESS).write_text("".join(dumps_line({"prompt_id": i}) for i in ids))
    (run / PAIRS).write_text("".join(dumps_line(p) for p in pairs), encoding="utf-8")
    return run


def every_pair(make: Any = conversational_pair) -> list[dict[str, Any]]:
    return [make(i, m) for i in PROMPT_IDS for m in ("max_min", "max_mu_minus_2sigma")]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def names(adapters: Path) -> list[str]:
    """What a folder of adapters holds, lock files aside."""
    return sorted(p.name for p in adapters.iterdir() if not p.name.endswith(".lock"))


def train(cli: CliRunner, run: Path, *args: str) -> Any:
    return cli.invoke(app, ["train", str(run), *TINY, *args])


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from multisample.engine.embedded import prepare

    return prepare("smollm2-135m-instruct")


# --- the pairs synthesize writes ------------------------------------------------------------


def toy_config(tmp_path: Path) -> SynthesizeConfig:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(dumps_line({"id": f"q{i}", "prompt": f"question {i}"}) for i in range(3))
    )
    return SynthesizeConfig.model_validate(
        {
            "models": [
                {"name": "a", "model": "x", "system_prompt": SYSTEM},
                {"name": "b", "model": "y"},
            ],
            "prompts": str(prompts),
            "budget": {"generations": 6},
            "strategy": {"kind": "ensemble"},
        }
    )


async def run_toy(config: SynthesizeConfig, run: Path, resume: bool, limit: int) -> None:
    prompts = load_prompts(config.prompts, limit)
    job = RunJob.open(
        config,
        prompts,
        load_templates({}),
        run,
        resume,
        ToyPool(),
        ToyReward(),  # type: ignore[arg-type]
    )
    gate = asyncio.Semaphore(4)
    for prompt in job.todo:
        await job.search(prompt, gate)
    job.finish(ToyPool())  # type: ignore[arg-type]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_synthesize_writes_the_conversation_the_chosen_model_saw(tmp_path: Path) -> None:
    run = tmp_path / "run"
    await run_toy(toy_config(tmp_path), run, resume=False, limit=3)
    pairs = read(run / PAIRS)
    assert pairs and {p["chosen_model"] for p in pairs} == {"a", "b"}
    for pair in pairs:
        user = {"role": "user", "content": f"question {pair['prompt_id'][1:]}"}
        system = [{"role": "system", "content": SYSTEM}] if pair["chosen_model"] == "a" else []
        assert pair["prompt"] == [*system, user]
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert pair["chosen"][0]["content"].startswith(pair["chosen_model"] + "|")
        assert pair["chosen_reward"] > pair["rejected_reward"]


async def test_resuming_an_old_text_format_run_keeps_its_format(tmp_path: Path) -> None:
    config = toy_config(tmp_path)
    run = tmp_path / "run"
    await run_toy(config, run, resume=False, limit=1)
    # Make it a run from before the format change, stopped after its first prompt.
    old = [as_text_format(p) for p in read(run / PAIRS)]
    (run / PAIRS).write_text("".join(dumps_line(p) for p in old))
    (run / "summary.json").unlink()
    await run_toy(config, run, resume=True, limit=3)
    pairs = read(run / PAIRS)
    assert {p["prompt_id"] for p in pairs} == {"q0", "q1", "q2"}
    assert all(isinstance(p[key], str) for p in pairs for key in ("prompt", "chosen", "rejected"))
    assert {p["prompt"] for p in pairs} == {"question 0", "question 1", "question 2"}


# --- what the target model is trained on ---------------------------------------------------


def test_examples_take_the_target_models_own_prompt(tmp_path: Path) -> None:
    pairs = [conversational_pair("p0", "max_min"), text_pair("p1", "max_min")]
    run = write_run(tmp_path / "run", pairs)
    read, pair_format = read_pairs(run)
    assert pair_format == "conversational+text"
    for pair in read:  # the pair's system turn is the sampling model's; the target's replaces it
        assert [m.role for m in pair.example.prompt] == ["user"]
    example = read[0].example
    chat = dataset_rows([example], "dpo", "chat", "Be kind.")[0]
    assert chat["prompt"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Say one thing about topic p0."},
    ]
    assert chat["chosen"] == [{"role": "assistant", "content": "topic p0 is interesting."}]
    base = dataset_rows([example], "sft", "base", "Be kind.")[0]
    assert base == {
        "prompt": render_base_prompt(
            [Message("system", "Be kind."), Message("user", "Say one thing about topic p0.")]
        ),
        "completion": "topic p0 is interesting.",
    }
    assert dataset_rows([example], "dpo", "base", None)[0]["prompt"] == (
        "Instruction:\nSay one thing about topic p0.\n\nResponse:\n"
    )


def test_a_system_turn_of_the_data_is_kept(tmp_path: Path) -> None:
    """Only the generator's own system prompt is dropped; one the prompt brought is the
    conversation's and reaches the target."""
    data = conversational_pair("p0", "max_min")
    data["prompt"][0]["content"] = "You are a pirate."
    data["chosen_model"] = "smolbase"  # no system prompt of its own
    mistaken = {**conversational_pair("p1", "max_min"), "chosen_model": "smolbase"}
    run = write_run(tmp_path / "run", [data, mistaken])
    prompts = {p.prompt_id: p.example.prompt for p in read_pairs(run)[0]}
    assert prompts["p0"][0] == Message("system", "You are a pirate.")
    # smolbase has no system prompt, so SYSTEM in p1 came from the data: kept too.
    assert prompts["p1"][0] == Message("system", SYSTEM)


def test_uncommitted_pairs_are_not_read(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair())
    (run / PROGRESS).write_text(dumps_line({"prompt_id": "p3"}))  # p3 alone finished
    assert {p.prompt_id for p in read_pairs(run)[0]} == {"p3"}


# --- the split ------------------------------------------------------------------------------


def test_split_is_by_prompt_deterministic_and_never_empty() -> None:
    ids = [f"p{i}" for i in range(20)] * 3
    train_ids, held = split_by_prompt(ids, 0.1, seed=3)
    assert len(held) == 2 and not set(train_ids) & set(held)
    assert sorted(train_ids + held) == sorted(set(ids))
    assert split_by_prompt(ids, 0.1, seed=3) == (train_ids, held)
    assert split_by_prompt(ids, 0.1, seed=4) != (train_ids, held)
    assert split_by_prompt(ids, 0.0, seed=3) == (sorted(set(ids)), [])
    assert split_by_prompt(["a", "b"], 0.9, seed=0)[0] != []  # never all held out
    assert split_by_prompt(["a"], 0.5, seed=0) == (["a"], [])


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def refused(cli: CliRunner, root: Path, run: Path, *args: str) -> str:
    before = snapshot(root)
    result = train(cli, run, *args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert snapshot(root) == before
    assert not (run / ADAPTERS).exists()
    return str(result.output)


def test_not_a_run_directory(cli: CliRunner, tmp_path: Path) -> None:
    assert "not a run directory (no config.yaml)" in refused(cli, tmp_path, tmp_path)


def test_no_pairs(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [])
    assert "no pairs to train on" in refused(cli, tmp_path, run)


def test_no_pairs_after_the_method_filter(cli: CliRunner, tmp_path: Path) -> None:
    pairs = [conversational_pair(i, "max_min") for i in PROMPT_IDS]
    run = write_run(tmp_path / "run", pairs)
    line = refused(cli, tmp_path, run, "--pairs-method", "max_rank_k")
    assert "--pairs-method: no pairs made by max_rank_k" in line
    assert "--pairs-method: unknown best" in refused(cli, tmp_path, run, "--pairs-method", "best")


def test_two_system_turns(cli: CliRunner, tmp_path: Path) -> None:
    pair = {**conversational_pair("p0", "max_min"), "chosen_model": "smolbase"}
    run = write_run(tmp_path / "run", [pair])
    line = refused(cli, tmp_path, run, "--model", "smol")
    assert "prompt 'p0' has a system turn of its own, and model 'smol' has a system_prompt" in line


def test_unknown_model(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair())
    assert "--model: no model named 'nope'" in refused(cli, tmp_path, run, "--model", "nope")


def test_an_endpoint_has_no_weights_here(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair())
    line = refused(cli, tmp_path, run, "--model", "remote")
    assert "'remote' is an OpenAI endpoint" in line


def test_a_missing_model_folder(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair())
    found = refused(cli, tmp_path, run, "--model", "gone", "--pairs-from", "all")
    assert "/nonexistent/model/folder" in found


def test_pairs_of_other_models_answers_are_left_out_unless_asked(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Only smol's own answers are on-policy for smol; gone's pairs are other models'."""
    message = refused(cli, tmp_path, write_run(tmp_path / "run", every_pair()), "--model", "gone")
    assert "--pairs-from own: no pair" in message and "'both_other': 10" in message
    assert "--pairs-from all" in message


def test_pairs_are_counted_by_who_wrote_them() -> None:
    own = Pair("p", "max_min", Example((Message("user", "q"),), "a", "b"), "m", "m")
    mixed = Pair("p", "max_min", Example((Message("user", "q"),), "a", "b"), "x", "m")
    old = Pair("p", "max_min", Example((Message("user", "q"),), "a", "b"))
    assert [p.kind("m") for p in (own, mixed, old)] == ["own", "chosen_other", "unknown"]
    assert own.kind("x") == "both_other" and mixed.kind("x") == "rejected_other"


def test_no_chat_model_to_default_to(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair(), models=MODELS[1:2])
    assert "--model: the run's strategy used no vLLM chat model" in refused(cli, tmp_path, run)


def test_without_the_train_extra(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    run = write_run(tmp_path / "run", every_pair())
    assert "install the train extra" in refused(cli, tmp_path, run)


def test_an_existing_adapter_is_kept_without_overwrite(cli: CliRunner, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", every_pair())
    (run / ADAPTERS / "mine").mkdir(parents=True)
    (run / ADAPTERS / "mine" / "adapter_config.json").write_text("{}")
    before = snapshot(tmp_path)
    result = train(cli, run, "--name", "mine")
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert result.output.count("\n") == 1 and snapshot(tmp_path) == before


def test_help_documents_every_option(cli: CliRunner) -> None:
    result = cli.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--model", "--name", "--method", "--epochs", "--max-steps", "--learning-rate", "--rank",
        "--alpha", "--batch-size", "--beta", "--max-length", "--validation", "--seed",
        "--pairs-method", "--overwrite",
    ):  # fmt: skip
        assert option in result.output


# --- real training (tiny) -------------------------------------------------------------------


def trained(cli: CliRunner, run: Path, *args: str) -> dict[str, Any]:
    result = train(cli, run, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((run / ADAPTERS / args[args.index("--name") + 1] / TRAINING).read_text())


@pytest.fixture(scope="module")
def dpo(
    cli: CliRunner, smollm2: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, Any]]]:
    run = write_run(tmp_path_factory.mktemp("dpo") / "run", every_pair())
    yield run, trained(cli, run, "--name", "d", "--validation", "0.2", "--seed", "1")


@pytest.mark.train
def test_dpo_writes_a_peft_adapter_whose_lora_b_moved(
    dpo: tuple[Path, dict[str, Any]], smollm2: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run, _ = dpo
    folder = run / ADAPTERS / "d"
    assert {"adapter_config.json", "adapter_model.safetensors", TRAINING} <= {
        p.name for p in folder.iterdir()
    }
    assert names(run / ADAPTERS) == ["d"]  # no temporary folder left
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
    weights = load_file(folder / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(bool(torch.any(w != 0)) for w in lora_b)  # B starts at zero
    base = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, folder)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = model(ids).logits
        with model.disable_adapter():
            plain = model(ids).logits
    assert not torch.allclose(adapted, plain)


@pytest.mark.train
def test_dpo_training_json(dpo: tuple[Path, dict[str, Any]], smollm2: Path) -> None:
    run, record = dpo
    assert record["adapter"] == "d" and record["method"] == "dpo"
    assert record["source_run"] == str(run.resolve())
    assert record["config_sha256"] == hashlib.sha256((run / CONFIG).read_bytes()).hexdigest()
    assert record["base_model"] == {
        "name": "smol",
        "model": "embedded:smollm2-135m-instruct",
        "folder": str(smollm2),
        "prompt_format": "chat",
        "system_prompt": SYSTEM,
    }
    pairs = record["pairs"]
    assert pairs["format"] == "conversational" and pairs["methods_filter"] is None
    assert (pairs["train"], pairs["validation"]) == (8, 2)
    assert pairs["methods"] == {
        "max_min": {"train": 4, "validation": 1},
        "max_mu_minus_2sigma": {"train": 4, "validation": 1},
    }
    hp = record["hyperparameters"]
    assert (hp["max_steps"], hp["batch_size"], hp["max_length"], hp["seed"]) == (2, 2, 64, 1)
    assert (hp["rank"], hp["alpha"], hp["beta"], hp["learning_rate"]) == (16, 32, 0.1, 5e-5)
    assert record["seed"] == 1 and record["steps"] == 2 and record["examples_seen"] == 4
    assert [p["step"] for p in record["loss_curve"]] == [1, 2]
    assert record["loss_curve"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # B = 0: ln 2
    assert record["validation_loss"] is not None and record["validation_loss"] > 0
    assert record["seconds"] >= record["train_seconds"] > 0 and record["seconds_per_example"] > 0
    assert set(record["versions"]) == {"trl", "peft", "transformers", "torch"}
    print(f"\nDPO: {record['seconds_per_example']:.2f} s per pair ({record['train_seconds']} s)")


@pytest.mark.train
def test_the_split_keeps_validation_prompts_out_of_training(
    dpo: tuple[Path, dict[str, Any]],
) -> None:
    _, record = dpo
    train_ids, held = record["prompts"]["train"], record["prompts"]["validation"]
    assert len(held) == 1 and not set(train_ids) & set(held)
    assert sorted(train_ids + held) == PROMPT_IDS
    assert (train_ids, held) == split_by_prompt(PROMPT_IDS, 0.2, seed=1)


@pytest.mark.train
def test_sft_trains_on_the_best_answer_of_each_prompt(
    cli: CliRunner, smollm2: Path, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", every_pair())
    options = ["--method", "sft", "--pairs-method", "max_min", "--batch-size", "1"]
    record = trained(cli, run, "--name", "s", *options)
    assert record["method"] == "sft" and record["pairs"]["methods_filter"] == ["max_min"]
    assert (record["pairs"]["train"], record["pairs"]["validation"]) == (4, 1)
    assert record["pairs"]["methods"] == {"best": {"train": 4, "validation": 1}}
    assert record["steps"] == 2 and len(record["loss_curve"]) == 2
    assert record["validation_loss"] is not None
    assert (run / ADAPTERS / "s" / "adapter_model.safetensors").is_file()


@pytest.mark.train
def test_an_old_text_format_run_trains_a_base_model_and_overwrite_replaces(
    cli: CliRunner, smollm2: Path, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", every_pair(text_pair))
    (run / ADAPTERS / "t").mkdir(parents=True)
    (run / ADAPTERS / "t" / "stale").write_text("old")
    (run / ADAPTERS / ".t.partial-killed").mkdir()  # a training SIGKILLed before its rename
    # A base-format model: DPO on the text the engine sends it, plain-text answers.
    # Its pairs are another model's answers: trained on with --pairs-from all.
    options = ["--model", "smolbase", "--validation", "0", "--overwrite", "--batch-size", "1"]
    options += ["--pairs-from", "all"]
    record = trained(cli, run, "--name", "t", *options, "--max-steps", "1")
    assert record["pairs"]["format"] == "text" and record["method"] == "dpo"
    assert record["base_model"]["prompt_format"] == "base"
    assert (record["pairs"]["train"], record["pairs"]["validation"]) == (10, 0)
    assert record["validation_loss"] is None
    assert names(run / ADAPTERS) == ["t"]
    assert not (run / ADAPTERS / "t" / "stale").exists()


@pytest.mark.train
def test_a_killed_training_leaves_no_adapter_under_its_name(smollm2: Path, tmp_path: Path) -> None:
    from tests.reliability.helpers import kill_session, start_cli

    run = write_run(tmp_path / "run", every_pair())
    process = start_cli("train", run, "--name", "k", *TINY, log=tmp_path / "log")
    while not list((run / ADAPTERS).glob(".k.partial-*")):  # it trains into this folder
        assert process.poll() is None, (tmp_path / "log").read_text()
        time.sleep(0.2)
    kill_session(process)  # while it trains into its temporary folder
    assert not (run / ADAPTERS / "k").exists()
    assert names(run / ADAPTERS)[0].startswith(".k.partial-")  # removed by the next training
