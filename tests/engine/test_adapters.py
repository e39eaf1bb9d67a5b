"""LoRA adapters as pool models: the config and folder checks (fast), and on one real
engine (marked `engine`), a random LoRA built here answering as transformers + PEFT do."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from multisample.engine.adapters import AdapterError, ServedAdapter, check_adapter
from multisample.engine.backends import vllm
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.vllm import VLLMBackend
from multisample.engine.backends.vllm_actor import lora_engine_args
from multisample.engine.config import ConfigError, PoolConfig, VLLMModelSpec
from multisample.engine.pool import ModelPool, check_local_models
from multisample.engine.types import Generation, GenerationRequest, Message, SamplingSettings
from multisample.search.base import Candidate
from tests.reliability.test_restart_logic import FakeActor

SMOLLM2 = {  # the widths of SmolLM2-135M's config.json, for folders made without weights
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
}


def fake_base(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**SMOLLM2, **overrides}), encoding="utf-8")
    return folder


def fake_adapter(
    folder: Path,
    rank: int = 8,
    hidden: int = 576,
    layer: int = 0,
    base_model: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """A PEFT-shaped LoRA folder (q_proj of one layer) with zero weights."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"peft_type": "LORA", "r": rank, "target_modules": ["q_proj"]}
    document.update(base_model_name_or_path=base_model, **(config or {}))
    (folder / "adapter_config.json").write_text(json.dumps(document), encoding="utf-8")
    prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": np.zeros((rank, hidden), np.float32),
            f"{prefix}.lora_B.weight": np.zeros((hidden, rank), np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def pool_config(base: Path | str, adapters: list[dict[str, str]], **spec: Any) -> PoolConfig:
    model = {"name": "base", "model": str(base), "adapters": adapters, **spec}
    return PoolConfig.model_validate({"models": [model]})


# --- config ---------------------------------------------------------------------------


def test_adapters_are_pool_model_names_and_inherit_their_base() -> None:
    config = PoolConfig.model_validate(
        {
            "models": [
                {
                    "name": "a",
                    "model": "x",
                    "system_prompt": "Be brief.",
                    "adapters": [{"name": "a-tuned", "path": "/l1"}, {"name": "a2", "path": "/l2"}],
                },
                {"name": "b", "model": "y"},
            ]
        }
    )
    assert config.model_names() == ["a", "a-tuned", "a2", "b"]
    assert config.model("a-tuned").name == "a"  # the base's spec: its prompt and sampling
    assert config.model("a-tuned").system_prompt == "Be brief."
    spec = config.model("a")
    assert isinstance(spec, VLLMModelSpec) and spec.lora_enabled
    assert lora_engine_args(spec) == {"enable_lora": True, "max_lora_rank": 16, "max_loras": 4}
    plain = config.model("b")
    assert isinstance(plain, VLLMModelSpec) and not plain.lora_enabled
    assert lora_engine_args(plain) == {}  # no LoRA support unless asked for


def test_enable_lora_without_adapters_starts_lora_support() -> None:
    spec = VLLMModelSpec.model_validate({"name": "a", "model": "x", "enable_lora": True})
    assert spec.lora_enabled and lora_engine_args(spec)["enable_lora"] is True


@pytest.mark.parametrize(
    "models",
    [
        [{"name": "a", "model": "x", "adapters": [{"name": "a", "path": "/l"}]}],
        [
            {"name": "a", "model": "x", "adapters": [{"name": "t", "path": "/l"}]},
            {"name": "b", "model": "y", "adapters": [{"name": "t", "path": "/m"}]},
        ],
        [
            {"name": "a", "model": "x", "adapters": [{"name": "b", "path": "/l"}]},
            {"name": "b", "model": "y"},
        ],
    ],
)
def test_adapter_names_are_unique_among_models_and_adapters(models: list[Any]) -> None:
    with pytest.raises(ValueError, match="model names must be unique"):
        PoolConfig.model_validate({"models": models})


def test_max_lora_rank_is_one_vllm_accepts() -> None:
    with pytest.raises(ValueError, match="max_lora_rank"):
        VLLMModelSpec.model_validate({"name": "a", "model": "x", "max_lora_rank": 12})


def test_strategies_sweeps_and_select_take_adapter_names() -> None:
    from multisample.bandits.select.config import SelectConfig
    from multisample.search.sweep.config import SweepConfig
    from multisample.search.synthesize.config import SynthesizeConfig

    models = [{"name": "a", "model": "x", "adapters": [{"name": "a-tuned", "path": "/l"}]}]
    synthesize = SynthesizeConfig.model_validate(
        {"models": models, "strategy": {"kind": "best_of_n", "model": "a-tuned"}}
    )
    synthesize.check_models()  # no error: the adapter is a model name
    sweep = SweepConfig.model_validate(
        {
            "models": models,
            "methods": [{"name": "m", "strategy": {"kind": "best_of_n", "model": "a-tuned"}}],
            "budgets": [1],
        }
    )
    assert sweep.models_used() == ["a-tuned"]
    select = SelectConfig.model_validate({"models": models})
    assert [c.model for c in select.candidates] == ["a", "a-tuned"]
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        SynthesizeConfig.model_validate(
            {"models": models, "strategy": {"kind": "best_of_n", "model": "nope"}}
        ).check_models()


def test_old_records_without_adapter_fields_still_load() -> None:
    generation = Generation("t", "m", 1, 1, "stop", 0, 0.0)
    assert generation.adapter is None and generation.adapter_version is None
    candidate = Candidate(0, "m", "sample", (), 0, "t", 1.0, 1, 1, "stop", 0, 0.0)  # type: ignore[arg-type]
    assert candidate.adapter is None and candidate.adapter_version is None


# --- adapter folders --------------------------------------------------------------------


def test_a_fitting_adapter_passes(tmp_path: Path) -> None:
    base = fake_base(tmp_path / "base")
    check_adapter(fake_adapter(tmp_path / "lora", base_model=str(base)), base, max_rank=16)
    # A hub id or a folder of another machine is not compared: the shapes decide.
    check_adapter(fake_adapter(tmp_path / "hub", base_model="HuggingFaceTB/x"), base, 16)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "missing", "no adapter folder"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "has no adapter_config.json"),
        (
            lambda t: fake_adapter(t / "r32", rank=32),
            "rank 32 is above the engine's max_lora_rank 16",
        ),
        (
            lambda t: fake_adapter(t / "r", config={"rank_pattern": {"q_proj": 64}}),
            "rank 64 is above",
        ),
        (lambda t: fake_adapter(t / "wide", hidden=960), "width 960 is none of the base's"),
        (lambda t: fake_adapter(t / "deep", layer=31), "adapts layer 31, but the base has 30"),
        (
            lambda t: fake_adapter(
                t / "named", base_model=str(fake_base(t / "big", hidden_size=960))
            ),
            "hidden_size 960",
        ),
        (
            lambda t: fake_adapter(t / "ia3", config={"peft_type": "IA3"}),
            "peft_type 'IA3' is not LORA",
        ),
    ],
)
def test_an_adapter_that_cannot_be_served_says_why(make: Any, message: str, tmp_path: Path) -> None:
    base = fake_base(tmp_path / "base")
    with pytest.raises(AdapterError, match=message):
        check_adapter(make(tmp_path), base, max_rank=16)


def test_adapter_without_weights_is_refused(tmp_path: Path) -> None:
    folder = fake_adapter(tmp_path / "lora")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"no adapter_model\.safetensors or adapter_model\.bin"):
        check_adapter(folder, fake_base(tmp_path / "base"), 16)


def test_pool_checks_name_the_adapter_field_before_any_engine(tmp_path: Path) -> None:
    base = fake_base(tmp_path / "base")
    good = fake_adapter(tmp_path / "good")
    config = pool_config(
        base, [{"name": "ok", "path": str(good)}, {"name": "bad", "path": str(tmp_path / "no")}]
    )
    with pytest.raises(ConfigError, match=r"^models\[0\]\.adapters\[1\]\.path \(bad\): no adapter"):
        check_local_models(config)
    config = pool_config(base, [{"name": "big", "path": str(fake_adapter(tmp_path / "r", 32))}])
    config.models[0].max_lora_rank = 16  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"adapters\[0\]\.path \(big\): rank 32 is above"):
        check_local_models(config)


def test_cli_refuses_a_bad_adapter_with_exit_2(tmp_path: Path) -> None:
    base = fake_base(tmp_path / "base")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"models:\n  - name: m\n    model: {base}\n    adapters:\n"
        f"      - name: tuned\n        path: {tmp_path / 'nowhere'}\n",
        encoding="utf-8",
    )
    cli = str(Path(sys.executable).with_name("multisample"))
    done = subprocess.run(
        [cli, "synthesize", str(config), "--output-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "models[0].adapters[0].path (tuned): no adapter folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --- routing and restarts, with a fake actor -------------------------------------------


class LoRAFakeActor(FakeActor):
    """A FakeActor that also loads adapters and answers as the adapter it is given."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.loaded: list[ServedAdapter] = []
        self.load_adapter = _method(self._load)
        self.generate = _method(self._generate_as)

    async def _load(self, adapter: ServedAdapter) -> None:
        self.loaded.append(adapter)

    async def _generate_as(
        self, requests: list[GenerationRequest], adapter: ServedAdapter | None = None
    ) -> list[Generation]:
        if self.dead:
            from tests.reliability.test_restart_logic import ActorDiedError

            raise ActorDiedError()
        name = None if adapter is None else adapter.name
        version = None if adapter is None else adapter.version
        model = name or "base"
        return [
            Generation(f"actor{self.number}", model, 1, 1, "stop", r.seed, 0.0, (), name, version)
            for r in requests
        ]


def _method(function: Any) -> Any:
    from tests.reliability.test_restart_logic import _Method

    return _Method(function)


@pytest.fixture
def lora_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelPool, list[Any]]:
    base = fake_base(tmp_path / "base")
    config = pool_config(base, [{"name": "tuned", "path": str(fake_adapter(tmp_path / "a"))}])
    pool = ModelPool(config)
    backend = pool.backends["base"]
    assert isinstance(backend, VLLMBackend)
    made: list[LoRAFakeActor] = []

    def new_actor(replica: object = None) -> LoRAFakeActor:
        made.append(LoRAFakeActor(len(made)))
        return made[-1]

    monkeypatch.setattr(backend, "_new_actor", new_actor)
    monkeypatch.setattr(vllm.ray, "kill", lambda actor, **kwargs: None)
    return pool, made


async def test_adapter_requests_go_to_the_bases_engine(lora_pool: Any) -> None:
    pool, made = lora_pool
    await pool.backends["base"].start()
    assert pool.names == ["base", "tuned"]
    assert pool.spec("tuned").name == "base"
    assert [a.name for a in made[0].loaded] == ["tuned"]  # loaded when the engine starts
    requests = [GenerationRequest((Message("user", "q"),), SamplingSettings(), 0)]
    (tuned,) = await pool.generate("tuned", requests)
    (plain,) = await pool.generate("base", requests)
    assert (tuned.model, tuned.adapter, tuned.adapter_version) == ("tuned", "tuned", 1)
    assert (plain.model, plain.adapter) == ("base", None)


async def test_adapters_added_at_run_time_survive_an_engine_restart(
    lora_pool: Any, tmp_path: Path
) -> None:
    pool, made = lora_pool
    await pool.backends["base"].start()
    fresh = await pool.add_adapter("base", "fresh", fake_adapter(tmp_path / "fresh"))
    newer = await pool.add_adapter("base", "tuned", fake_adapter(tmp_path / "tuned2"))
    assert (fresh.version, newer.version) == (1, 2)
    assert len({a.lora_id for a in made[0].loaded}) == 3  # vLLM caches by id: one per version
    assert pool.names == ["base", "tuned", "fresh"]
    made[0].die()
    requests = [GenerationRequest((Message("user", "q"),), SamplingSettings(), 0)]
    (answer,) = await pool.generate("tuned", requests)
    assert answer.text == "actor1" and answer.adapter_version == 2
    assert {(a.name, a.version) for a in made[1].loaded} == {("tuned", 2), ("fresh", 1)}


async def test_add_adapter_refuses_what_the_engine_cannot_serve(
    lora_pool: Any, tmp_path: Path
) -> None:
    pool, _ = lora_pool
    await pool.backends["base"].start()
    with pytest.raises(AdapterError, match="rank 32 is above"):
        await pool.add_adapter("base", "big", fake_adapter(tmp_path / "big", rank=32))
    with pytest.raises(AdapterError, match="not a free model name"):
        await pool.add_adapter("base", "base", fake_adapter(tmp_path / "x"))
    with pytest.raises(BackendError, match="not a vLLM model"):
        await pool.add_adapter("nope", "x", fake_adapter(tmp_path / "x"))
    assert "big" not in pool.names
    plain = ModelPool(PoolConfig.model_validate({"models": [{"name": "p", "model": "x"}]}))
    with pytest.raises(BackendError, match="no LoRA support; set enable_lora"):
        await plain.backends["p"].add_adapter("x", str(tmp_path / "x"))  # type: ignore[attr-defined]


# --- on a real engine ------------------------------------------------------------------

PROMPTS = ("Name three colors.", "What is 2 + 2?", "Write a haiku about rain.")
NEW_TOKENS = 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_lora(base: Path, folder: Path, seed: int) -> list[str]:
    """Save a random r=8 LoRA on `base` to `folder`; return its greedy answers to PROMPTS
    by transformers + PEFT, in float32 (as the engine below serves it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter really changes the answers.
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(folder))
    return greedy(peft_model, tokenizer)


def greedy(model: Any, tokenizer: Any) -> list[str]:
    import torch

    answers = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer.encode(text, add_special_tokens=False)  # as the engine renders it
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        answers.append(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    return answers


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two random LoRAs and the greedy answers of PEFT (each) and of the base alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multisample.engine.embedded import prepare

    base = prepare("smollm2-135m-instruct")
    root = tmp_path_factory.mktemp("loras")
    found: dict[str, Any] = {"base_folder": base}
    for name, seed in (("one", 1), ("two", 2)):
        found[name] = root / name
        found[f"{name}_answers"] = build_lora(base, root / name, seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    found["base_answers"] = greedy(model, AutoTokenizer.from_pretrained(base))
    return found


@pytest.fixture(scope="module")
async def lora_engine(loras: dict[str, Any]) -> AsyncIterator[ModelPool]:
    """One engine: SmolLM2 in float32 with adapter 'one' (float32 on both sides, so the
    greedy tokens agree exactly and not only for a first few)."""
    model = {
        "name": "smol",
        "model": "embedded:smollm2-135m-instruct",
        "dtype": "float32",
        "max_model_len": 1024,
        "max_lora_rank": 8,
        "max_loras": 2,
        "adapters": [{"name": "smol-one", "path": str(loras["one"])}],
        # The session's shared pool may already hold every CPU of the test cluster; CPUs
        # are logical, so this actor reserves none instead of waiting forever for one.
        "num_cpus": 0,
    }
    async with ModelPool(PoolConfig.model_validate({"models": [model]})) as pool:
        yield pool


def greedy_requests() -> list[GenerationRequest]:
    settings = SamplingSettings(temperature=0, max_tokens=NEW_TOKENS)
    return [GenerationRequest((Message("user", p),), settings, i) for i, p in enumerate(PROMPTS)]


@pytest.mark.engine
async def test_engine_serves_adapter_and_base_as_peft_does(
    lora_engine: ModelPool, loras: dict[str, Any]
) -> None:
    pool = lora_engine
    # Concurrent calls: base and adapter requests share the engine's batches.
    base, tuned = await asyncio.gather(
        pool.generate("smol", greedy_requests()), pool.generate("smol-one", greedy_requests())
    )
    assert [g.text for g in tuned] == loras["one_answers"]
    assert [g.text for g in base] == loras["base_answers"]
    assert loras["one_answers"] != loras["base_answers"]
    assert {(g.model, g.adapter, g.adapter_version) for g in tuned} == {("smol-one", "smol-one", 1)}
    assert {(g.model, g.adapter) for g in base} == {("smol", None)}
    assert pool.parameters("smol-one") == pool.parameters("smol")


@pytest.mark.engine
async def test_engine_adds_adapters_and_versions_without_a_restart(
    lora_engine: ModelPool, loras: dict[str, Any]
) -> None:
    pool = lora_engine
    backend = pool.backends["smol"]
    assert isinstance(backend, VLLMBackend)
    actor = backend.actor
    await pool.add_adapter("smol", "smol-two", loras["two"])
    two = await pool.generate("smol-two", greedy_requests())
    assert [g.text for g in two] == loras["two_answers"]
    # A new version of an adapter (here: the other weights) replaces the old one. (An
    # adapter of its own: the engine's 'smol-one' is another test's.)
    first = await pool.add_adapter("smol", "smol-versions", loras["one"])
    newer = await pool.add_adapter("smol", "smol-versions", loras["two"])
    assert (first.version, newer.version) == (1, 2)
    again = await pool.generate("smol-versions", greedy_requests())
    assert [g.text for g in again] == loras["two_answers"]
    assert {g.adapter_version for g in again} == {2}
    assert backend.actor is actor and pool.events()["smol"] == {"engine_restarts": 0}
