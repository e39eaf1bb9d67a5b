"""engine/config.py and engine/config_files.py: the config models, loading YAML configs and the
error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from multisample.engine import actors
from multisample.engine.config import (
    BudgetConfig,
    ConfigError,
    OpenAIModelSpec,
    PoolConfig,
    VLLMModelSpec,
)
from multisample.engine.config_files import load_config
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.classifier import ClassifierRewardSpec
from multisample.engine.rewards.combine import CallableRewardSpec, WeightedRewardSpec
from multisample.engine.rewards.embedding import EmbeddingRewardSpec
from multisample.engine.rewards.judge import JudgeRewardSpec
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.types import SamplingSettings


class RewardHolder(BaseModel):
    """A config holding one reward spec, the way a search config does."""

    model_config = ConfigDict(extra="forbid")

    reward: RewardSpec


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, model: type[BaseModel] = PoolConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, model)
    return str(info.value)


MINIMAL = """\
models:
  - name: small
    model: embedded:smollm2
"""


# --- valid configs ---------------------------------------------------------------------------


def test_minimal_config_gets_vllm_backend_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), PoolConfig)
    assert len(config.models) == 1
    spec = config.models[0]
    assert isinstance(spec, VLLMModelSpec)
    assert spec.backend == "vllm"
    assert spec.name == "small"
    assert spec.model == "embedded:smollm2"
    assert spec.max_model_len == 2048
    assert spec.dtype == "auto"
    assert spec.num_cpus == 1.0
    assert spec.num_gpus == 0.0
    assert spec.tensor_parallel_size == 1
    assert spec.gpu_memory_utilization == 0.85
    assert spec.kv_cache_gib == 1
    assert spec.max_num_seqs == 256
    assert spec.resources == {}
    assert spec.trust_remote_code is False
    assert spec.seed_offset == 0
    assert spec.prompt_format == "chat"
    assert spec.system_prompt is None
    assert spec.sampling is None
    assert spec.parameters is None
    assert config.ray_address is None
    assert config.request_timeout_s == 600.0
    assert config.start_timeout_s == 900.0


def test_load_config_accepts_str_path(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, MINIMAL)), PoolConfig)
    assert config.models[0].name == "small"


def test_openai_model_and_mixed_pool(tmp_path: Path) -> None:
    text = MINIMAL + (
        "  - name: remote\n"
        "    backend: openai\n"
        "    model: gpt-x\n"
        "    base_url: http://127.0.0.1:8000/v1\n"
        "    api_key_env: MY_KEY\n"
        "    parameters: 7.0e9\n"
    )
    config = load_config(write(tmp_path, text), PoolConfig)
    remote = config.model("remote")
    assert isinstance(remote, OpenAIModelSpec)
    assert remote.backend == "openai"
    assert remote.base_url == "http://127.0.0.1:8000/v1"
    assert remote.api_key_env == "MY_KEY"
    assert remote.parameters == 7.0e9
    assert remote.max_concurrency == 16
    assert remote.timeout_s == 120.0
    assert remote.max_retries == 5
    assert remote.backoff_s == 0.5
    assert isinstance(config.model("small"), VLLMModelSpec)


def test_explicit_vllm_backend(tmp_path: Path) -> None:
    text = "models:\n  - name: a\n    backend: vllm\n    model: /models/a\n    max_model_len: ~\n"
    spec = load_config(write(tmp_path, text), PoolConfig).models[0]
    assert isinstance(spec, VLLMModelSpec)
    assert spec.max_model_len is None


def test_tensor_parallel_with_enough_gpus(tmp_path: Path) -> None:
    text = MINIMAL + "    tensor_parallel_size: 2\n    num_gpus: 2\n"
    spec = load_config(write(tmp_path, text), PoolConfig).models[0]
    assert isinstance(spec, VLLMModelSpec)
    assert spec.tensor_parallel_size == 2


def test_model_sampling_override(tmp_path: Path) -> None:
    text = MINIMAL + '    sampling:\n      temperature: 0.0\n      stop: ["\\n\\n"]\n'
    spec = load_config(write(tmp_path, text), PoolConfig).models[0]
    assert spec.sampling is not None
    assert spec.sampling.temperature == 0.0
    assert spec.sampling.stop == ("\n\n",)
    assert spec.sampling.max_tokens == 256


# --- error messages --------------------------------------------------------------------------


def test_typo_key_reports_line_and_path(tmp_path: Path) -> None:
    text = MINIMAL + "    dtype: auto\n    max_model_lenn: 512\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message == (
        f"{path}:5: models[0].max_model_lenn: Extra inputs are not permitted (got 512)"
    )


def test_typo_key_at_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, "ray_adress: auto\n" + MINIMAL)
    message = config_error(path)
    assert message == f"{path}:1: ray_adress: Extra inputs are not permitted (got 'auto')"


def test_typo_key_in_second_model(tmp_path: Path) -> None:
    text = MINIMAL + "  - name: other\n    model: x\n    num_gpu: 1\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}:6: models[1].num_gpu: Extra inputs are not permitted")


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    max_model_len: lots\n")
    message = config_error(path)
    assert message.startswith(f"{path}:4: models[0].max_model_len: Input should be a valid integer")
    assert message.endswith("(got 'lots')")


def test_wrong_type_of_container(tmp_path: Path) -> None:
    path = write(tmp_path, "models: 3\n")
    assert config_error(path) == f"{path}:1: models: Input should be a valid list (got 3)"


def test_value_out_of_range_names_field_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    max_model_len: 5\n")
    message = config_error(path)
    assert message == (
        f"{path}:4: models[0].max_model_len: Input should be greater than or equal to 16 (got 5)"
    )


def test_top_level_value_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "request_timeout_s: -1\n")
    message = config_error(path)
    assert message == f"{path}:4: request_timeout_s: Input should be greater than 0 (got -1)"


def test_nested_sampling_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    sampling:\n      temperature: 9\n")
    message = config_error(path)
    assert message == (
        f"{path}:5: models[0].sampling.temperature: Input should be less than or equal to 5 (got 9)"
    )


def test_bad_model_name_pattern(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: -bad\n    model: x\n")
    message = config_error(path)
    assert message.startswith(f"{path}:2: models[0].name: String should match pattern")
    assert message.endswith("(got '-bad')")


def test_missing_required_field_of_openai_model(tmp_path: Path) -> None:
    text = MINIMAL + "  - name: remote\n    backend: openai\n    model: gpt-x\n"
    path = write(tmp_path, text)
    message = config_error(path)
    # A missing key has no line of its own: the line of the model that lacks it.
    assert message == f"{path}:4: models[1].base_url: Field required"


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    text = MINIMAL + "    max_model_len: 5\n    kv_cache_gib: 0\n"
    path = write(tmp_path, text)
    lines = config_error(path).split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4: models[0].max_model_len: ")
    assert lines[1].startswith(f"{path}:5: models[0].kv_cache_gib: ")
    assert lines[1].endswith("(got 0)")


def test_tagged_union_field_path_shows_no_tag(tmp_path: Path) -> None:
    text = (
        "models:\n"
        "  - name: remote\n"
        "    backend: openai\n"
        "    model: gpt-x\n"
        "    base_url: http://h/v1\n"
        "    max_concurrency: 0\n"
        "  - name: local\n"
        "    model: x\n"
        "    dtype: 3\n"
    )
    path = write(tmp_path, text)
    lines = config_error(path).split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:6: models[0].max_concurrency: ")
    assert lines[1].startswith(f"{path}:9: models[1].dtype: ")
    for line in lines:
        assert ".vllm" not in line
        assert ".openai" not in line


def test_unknown_backend(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "    backend: tgi\n")
    message = config_error(path)
    assert message.startswith(f"{path}:2: models[0]: ")
    assert "'tgi'" in message
    assert "'vllm'" in message and "'openai'" in message


def test_duplicate_model_names(tmp_path: Path) -> None:
    text = MINIMAL + "  - name: small\n    model: other\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}:1: ")
    assert "model names must be unique; repeated: small" in message


def test_empty_model_list(tmp_path: Path) -> None:
    path = write(tmp_path, "models: []\n")
    message = config_error(path)
    assert message.startswith(f"{path}:1: models: List should have at least 1 item")


def test_tensor_parallel_needs_enough_gpus(tmp_path: Path) -> None:
    text = MINIMAL + "    tensor_parallel_size: 2\n    num_gpus: 1\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}:2: models[0]")
    assert "tensor_parallel_size=2 needs num_gpus >= 2 (got 1.0)" in message


def test_tensor_parallel_error_path_shows_no_tag(tmp_path: Path) -> None:
    text = MINIMAL + "    tensor_parallel_size: 2\n    num_gpus: 1\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}:2: models[0]: ")
    assert ".vllm" not in message


def test_non_mapping_model_path_shows_no_tag(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  - 5\n")
    message = config_error(path)
    assert message.startswith(f"{path}:4: models[1]: ")
    assert ".vllm" not in message


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    text = "request_timeout_s: 5\nmodels:\n  - name: a\n    model: x: y\n"
    path = write(tmp_path, text)
    message = config_error(path)
    assert message == f"{path}:4: not valid YAML: mapping values are not allowed here"


def test_yaml_tab_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "request_timeout_s: 5\nmodels:\n\t- name: a\n")
    message = config_error(path)
    assert message.startswith(f"{path}:3: not valid YAML: ")


def test_top_level_list_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: a\n  model: x\n")
    assert config_error(path) == f"{path}: expected a mapping of settings at the top level"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "just a string\n", "42\n"])
def test_non_mapping_documents_rejected(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: expected a mapping of settings at the top level"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert config_error(path) == f"{path}: no such config file"


def test_unreadable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"models: \xff\xfe\n")
    message = config_error(path)
    assert message.startswith(f"{path}: cannot read: ")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert message.startswith(f"{tmp_path}: cannot read: ")


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- BudgetConfig ----------------------------------------------------------------------------


def test_budget_defaults() -> None:
    budget = BudgetConfig()
    assert budget.generations == 16
    assert budget.tokens is None


def test_budget_tokens_only() -> None:
    budget = BudgetConfig(generations=None, tokens=1000)
    assert budget.generations is None
    assert budget.tokens == 1000


def test_budget_requires_a_limit() -> None:
    with pytest.raises(ValidationError, match=r"set at least one of budget\.generations"):
        BudgetConfig(generations=None)
    with pytest.raises(ValidationError, match=r"set at least one of budget\.generations"):
        BudgetConfig(generations=None, tokens=None)


def test_budget_requires_a_limit_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "generations: null\n")
    message = config_error(path, BudgetConfig)
    assert message.startswith(f"{path}:1: (top level): ")
    assert "set at least one of budget.generations and budget.tokens" in message


@pytest.mark.parametrize("field", ["generations", "tokens"])
def test_budget_limits_at_least_one(field: str) -> None:
    with pytest.raises(ValidationError):
        BudgetConfig(**{field: 0})


def test_budget_forbids_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        BudgetConfig(generation=4)  # type: ignore[call-arg]


# --- reward specs ----------------------------------------------------------------------------

WEIGHTED = """\
reward:
  kind: weighted
  components:
    - weight: 0.7
      reward: {kind: judge, model: small}
    - weight: 0.3
      reward:
        kind: weighted
        components:
          - weight: 1
            reward: {kind: embedding}
          - weight: 2
            reward: {kind: callable, path: "my_pkg.rewards:score"}
"""


def test_weighted_reward_with_nested_components(tmp_path: Path) -> None:
    holder = load_config(write(tmp_path, WEIGHTED), RewardHolder)
    reward = holder.reward
    assert isinstance(reward, WeightedRewardSpec)
    assert [c.weight for c in reward.components] == [0.7, 0.3]
    judge = reward.components[0].reward
    assert isinstance(judge, JudgeRewardSpec)
    assert judge.model == "small"
    assert judge.use_reference is True
    assert judge.top_logprobs == 20
    inner = reward.components[1].reward
    assert isinstance(inner, WeightedRewardSpec)
    embedding, func = (c.reward for c in inner.components)
    assert isinstance(embedding, EmbeddingRewardSpec)
    assert embedding.model is None
    assert embedding.missing_reference == 0.0
    assert isinstance(func, CallableRewardSpec)
    assert func.path == "my_pkg.rewards:score"


def test_callable_path_rejects_missing_function(tmp_path: Path) -> None:
    text = "reward:\n  kind: callable\n  path: nomodule\n"
    path = write(tmp_path, text)
    message = config_error(path, RewardHolder)
    assert message.startswith(f"{path}:3: reward.path: String should match pattern")
    assert message.endswith("(got 'nomodule')")


@pytest.mark.parametrize("value", ["pkg.mod:fn", "_m:_f", "a:b1"])
def test_callable_path_accepts(value: str) -> None:
    assert CallableRewardSpec(kind="callable", path=value).path == value


@pytest.mark.parametrize("value", ["nomodule", "pkg.mod:", ":fn", "1pkg:fn", "pkg:1fn", "a:b:c"])
def test_callable_path_rejects(value: str) -> None:
    with pytest.raises(ValidationError):
        CallableRewardSpec(kind="callable", path=value)


def test_nested_reward_error_path_has_no_kind_tag(tmp_path: Path) -> None:
    text = (
        "reward:\n"
        "  kind: weighted\n"
        "  components:\n"
        "    - weight: 1\n"
        "      reward:\n"
        "        kind: callable\n"
        "        path: nomodule\n"
    )
    path = write(tmp_path, text)
    message = config_error(path, RewardHolder)
    assert message.startswith(f"{path}:7: reward.components[0].reward.path: ")
    assert ".callable" not in message


def test_weighted_needs_components(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n  kind: weighted\n  components: []\n")
    message = config_error(path, RewardHolder)
    assert message.startswith(f"{path}:3: reward.components: List should have at least 1 item")


def test_unknown_reward_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n  kind: bogus\n")
    message = config_error(path, RewardHolder)
    assert message.startswith(f"{path}:1: reward: ")
    assert "'bogus'" in message


def test_judge_top_logprobs_range(tmp_path: Path) -> None:
    path = write(tmp_path, "reward:\n  kind: judge\n  model: a\n  top_logprobs: 21\n")
    message = config_error(path, RewardHolder)
    assert message == (
        f"{path}:4: reward.top_logprobs: Input should be less than or equal to 20 (got 21)"
    )


# --- PoolConfig.model ------------------------------------------------------------------------


def test_pool_model_lookup(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), PoolConfig)
    assert config.model("small") is config.models[0]


def test_pool_model_unknown_name(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), PoolConfig)
    with pytest.raises(KeyError, match="no model named 'big'") as info:
        config.model("big")
    assert "['small']" in str(info.value)


# --- Ray placement -----------------------------------------------------------------------------


class RunWithReward(PoolConfig):
    """A pool config with a reward, the way synthesize, sweep and select configs are."""

    reward: RewardSpec


def run_with_classifier_reward() -> RunWithReward:
    classifier = {"kind": "classifier", "model": "/rm", "num_cpus": 2}
    return RunWithReward.model_validate(
        {
            "models": [
                {"name": "a", "model": "/a"},
                {"name": "b", "model": "/b", "num_cpus": 0.5},
                {"name": "api", "backend": "openai", "model": "m", "base_url": "http://h/v1"},
            ],
            "reward": {
                "kind": "weighted",
                "components": [
                    {"weight": 1, "reward": {"kind": "verifiable"}},
                    {"weight": 1, "reward": classifier},
                ],
            },
        }
    )


def test_actor_specs_finds_models_and_nested_classifier_rewards() -> None:
    specs = actors.specs(run_with_classifier_reward())
    assert [type(s) for s in specs] == [VLLMModelSpec, VLLMModelSpec, ClassifierRewardSpec]
    assert sum(s.num_cpus for s in specs) == 3.5


def test_local_cluster_has_a_cpu_for_the_reward_model_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting only the pool's models left a classifier reward's actor waiting forever
    for a CPU on a machine with as many cores as models."""
    import ray

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(actors.os, "cpu_count", lambda: 2)
    actors.connect(run_with_classifier_reward())
    assert calls[0]["num_cpus"] == 4  # 1 + 0.5 + 2, rounded up


def test_sampling_overrides_of_a_model_spec() -> None:
    config = PoolConfig.model_validate(
        {"models": [{"name": "a", "model": "x", "sampling": {"temperature": 0.1}}]}
    )
    pool = ModelPool(config, SamplingSettings(temperature=0.9, max_tokens=77))
    merged = pool.sampling("a")
    assert merged.temperature == 0.1
    assert merged.max_tokens == 77  # fields the spec does not set keep the run's value
