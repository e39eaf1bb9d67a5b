"""`--set PATH=VALUE` overrides: applied to the YAML before validation, values parsed as
YAML, a path that is no setting named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config, read_config
from multisample.search.sweep.config import SweepConfig
from multisample.search.synthesize.config import SynthesizeConfig

CONFIG = """\
models:
  - name: smollm2
    model: embedded:smollm2-135m-instruct
  - name: gemma
    model: embedded:gemma3-270m-instruct
strategy:
  kind: best_of_n
budget:
  generations: 4
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_values_are_parsed_as_yaml(config: Path) -> None:
    loaded = load_config(
        config,
        SynthesizeConfig,
        ["budget.generations=8", "sampling.temperature=0.5", "pairs.min_margin=0", "seed=3"],
    )
    assert loaded.budget.generations == 8
    assert loaded.sampling.temperature == 0.5
    assert loaded.seed == 3
    assert load_config(config, SynthesizeConfig, ["budget.tokens=null"]).budget.tokens is None


def test_a_setting_absent_from_the_file_is_created(config: Path) -> None:
    loaded = load_config(config, SynthesizeConfig, ["budget.tokens=500", "limit=2"])
    assert loaded.budget.tokens == 500 and loaded.budget.generations == 4
    assert loaded.limit == 2


def test_list_entries_by_index_or_by_name(config: Path) -> None:
    loaded = load_config(
        config,
        SynthesizeConfig,
        [
            "models[0].max_model_len=1024",
            "models.gemma.max_model_len=512",
            "models.1.dtype=float32",
        ],
    )
    assert loaded.models[0].max_model_len == 1024
    assert loaded.models[1].max_model_len == 512
    assert loaded.models[1].dtype == "float32"


def test_later_overrides_win_and_the_file_is_untouched(config: Path) -> None:
    loaded = load_config(config, SynthesizeConfig, ["seed=1", "seed=2"])
    assert loaded.seed == 2
    assert config.read_text(encoding="utf-8") == CONFIG


def test_a_flow_list_value(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        CONFIG.split("strategy:")[0] + "methods:\n  - name: bon\n    strategy: {kind: best_of_n}\n",
        encoding="utf-8",
    )
    assert load_config(path, SweepConfig, ["budgets=[1, 3]"]).budgets == [1, 3]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budgett.generations=4", "--set budgett.generations=4: budgett: no such setting"),
        ("budget.generationz=4", "--set budget.generationz=4: budget.generationz: no such setting"),
        ("strategy.temprature=1", "--set strategy.temprature=1: strategy.temprature: no such"),
        ("models.0.colour=red", "--set models.0.colour=red: models[0].colour: no such setting"),
    ],
)
def test_an_unknown_path_is_one_line_naming_it(config: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config, SynthesizeConfig, [override])
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.generations=-1", "--set budget.generations=-1: budget.generations: Input should"),
        ("budget.generations", "--set budget.generations: expected PATH=VALUE"),
        ("=3", "--set =3: expected PATH=VALUE"),
        ("budget..generations=3", "expected PATH=VALUE"),
        ("models.5.dtype=auto", "--set models.5.dtype=auto: models has no entry '5'"),
        ("models.nope.dtype=auto", "models has no entry 'nope'"),
        ("budget.generations.x=1", "--set budget.generations.x=1: budget.generations is 4"),
        ("seed=[1", "--set seed=[1: not a YAML value"),
    ],
)
def test_bad_overrides_name_the_override(config: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config, SynthesizeConfig, [override])
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith("--set "), str(info.value)


def test_problems_in_the_file_still_name_its_line(config: Path) -> None:
    config.write_text(CONFIG + "sed: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config, SynthesizeConfig, ["seed=2"])
    assert str(info.value).startswith(f"{config}:10: sed: Extra inputs"), str(info.value)


def test_read_config_returns_the_overridden_data(config: Path) -> None:
    _, data, applied = read_config(config, ["models.gemma.dtype=half"])
    assert data["models"][1]["dtype"] == "half"
    assert applied[0].resolved == ("models", 1, "dtype")
