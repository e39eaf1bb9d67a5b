"""Configs that run but do not do what was meant: warned about (or refused) before any
engine starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from multisample.bandits.select.config import SelectConfig
from multisample.bandits.select.traps import select_traps
from multisample.engine.config import ConfigError
from multisample.engine.rewards.base import RewardError
from multisample.engine.rewards.judge import read_template
from multisample.engine.traps import check_judge_templates, judges_generating, unconstrained_prompts
from multisample.engine.types import Prompt
from multisample.search.sweep.config import SweepConfig
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.traps import search_traps

MODELS = [
    {"name": "judge", "model": "embedded:smollm2-135m-instruct"},
    {"name": "a", "model": "embedded:smollm2-135m-instruct", "seed_offset": 1},
    {"name": "b", "model": "embedded:smollm2-135m-instruct", "seed_offset": 2},
]
JUDGE = {"kind": "judge", "model": "judge"}
BARE = [Prompt(id="1", prompt="hi"), Prompt(id="2", prompt="ho")]
CONSTRAINED = [Prompt(id="3", prompt="x", constraints=({"kind": "lowercase"},))]


def synthesize(**fields: Any) -> SynthesizeConfig:
    return SynthesizeConfig.model_validate({"models": MODELS, **fields})


# --- the verifiable reward on prompts without constraints ------------------------------------


def test_verifiable_on_prompts_without_constraints_is_warned() -> None:
    config = synthesize()  # the default reward: verifiable
    (message,) = unconstrained_prompts(config.reward, BARE, "reward")
    assert "none of the 2 prompts has constraints" in message
    assert "score 1.0" in message and "no pair" in message
    (some,) = unconstrained_prompts(config.reward, BARE + CONSTRAINED, "reward")
    assert "2 of the 3 prompts have no constraints" in some


def test_no_warning_when_every_prompt_has_constraints_or_the_reward_is_another() -> None:
    assert unconstrained_prompts(synthesize().reward, CONSTRAINED, "reward") == []
    judged = synthesize(reward=JUDGE, strategy={"kind": "best_of_n", "model": "a"})
    assert unconstrained_prompts(judged.reward, BARE, "reward") == []


# --- a judge silently becoming a generator ---------------------------------------------------


@pytest.mark.parametrize("kind", ["ensemble", "refine", "moa", "toa"])
def test_a_judge_in_the_pool_generating_for_a_many_model_strategy_is_warned(kind: str) -> None:
    config = synthesize(reward=JUDGE, strategy={"kind": kind})
    (message,) = search_traps(config, [("strategy", config.strategy)], CONSTRAINED)
    assert message.startswith("reward.model 'judge' also generates: strategy.models is not set")
    assert "judge, a, b" in message


@pytest.mark.parametrize("kind", ["ensemble", "refine", "moa", "toa"])
def test_no_warning_when_the_strategy_names_its_models(kind: str) -> None:
    config = synthesize(reward=JUDGE, strategy={"kind": kind, "models": ["a", "b"]})
    assert search_traps(config, [("strategy", config.strategy)], CONSTRAINED) == []


def test_a_one_model_strategy_defaulting_to_the_judge_is_warned() -> None:
    config = synthesize(reward=JUDGE, strategy={"kind": "best_of_n"})  # the first model
    (message,) = search_traps(config, [("strategy", config.strategy)], CONSTRAINED)
    assert "strategy.model is not set" in message
    chosen = synthesize(reward=JUDGE, strategy={"kind": "best_of_n", "model": "a"})
    assert search_traps(chosen, [("strategy", chosen.strategy)], CONSTRAINED) == []


def test_a_judge_inside_a_weighted_reward_is_found() -> None:
    reward = {
        "kind": "weighted",
        "components": [
            {"weight": 1.0, "reward": {"kind": "verifiable"}},
            {"weight": 1.0, "reward": JUDGE},
        ],
    }
    config = synthesize(reward=reward)
    found = judges_generating(config.reward, "reward", ["judge"], "strategy.models")
    assert len(found) == 1 and found[0].startswith("reward.components[1].reward.model 'judge'")


def test_sweep_methods_are_each_checked() -> None:
    config = SweepConfig.model_validate(
        {
            "models": MODELS,
            "reward": JUDGE,
            "methods": [
                {"name": "ens", "strategy": {"kind": "ensemble"}},
                {"name": "moa", "strategy": {"kind": "moa", "models": ["a", "b"]}},
            ],
        }
    )
    strategies = [(f"methods[{i}].strategy", m.strategy) for i, m in enumerate(config.methods)]
    (message,) = search_traps(config, strategies, CONSTRAINED)
    assert "methods[0].strategy.models is not set" in message


def test_select_with_implicit_candidates_and_a_judge_in_the_pool_is_warned() -> None:
    base = {
        "models": MODELS,
        "prompts": "embedded:tasks",
        "feedback": {"kind": "reward", "reward": JUDGE},
    }
    (message,) = select_traps(SelectConfig.model_validate(base))
    assert "feedback.reward.model 'judge' also generates: candidates is not set" in message
    named = [{"name": n, "model": n} for n in ("a", "b")]
    assert select_traps(SelectConfig.model_validate({**base, "candidates": named})) == []


def test_select_verifiable_on_bare_prompts_is_warned(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "1", "prompt": "hi"}\n', encoding="utf-8")
    config = SelectConfig.model_validate({"models": MODELS, "prompts": str(prompts)})
    (message,) = select_traps(config)
    assert message.startswith("feedback.reward: 'verifiable'")


# --- a judge's template, checked before the engines start ------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "judge.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_good_template_is_read(tmp_path: Path) -> None:
    text = "Q: {question}\n{reference_block}A: {answer}\nRef: {reference}\nRate 0-9 {{0..9}}:"
    assert read_template(write(tmp_path, text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Q: {question}\nA: {answer}\nStyle: {style}", "unknown field(s) {style}"),
        ("A: {answer} {}", "unknown field(s) {}"),
        ("Q: {question}", "never shows the judge the {answer}"),
        ("A: {answer} and a { brace", "not a template"),
    ],
)
def test_a_bad_template_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RewardError) as info:
        read_template(write(tmp_path, text))
    assert message in str(info.value)


def test_check_judge_templates_names_the_field(tmp_path: Path) -> None:
    template = write(tmp_path, "{question} {answr}")
    reward = {
        "kind": "weighted",
        "components": [{"weight": 1.0, "reward": {**JUDGE, "template": template}}],
    }
    with pytest.raises(ConfigError, match=r"^reward\.components\[0\]\.reward\.template: "):
        check_judge_templates(synthesize(reward=reward).reward, "reward")
    missing = synthesize(reward={**JUDGE, "template": str(tmp_path / "nope.txt")})
    with pytest.raises(ConfigError, match=r"^reward\.template: cannot read"):
        check_judge_templates(missing.reward, "reward")
