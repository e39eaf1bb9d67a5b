"""What `synthesize` and `sweep` check before any engine starts, beyond the schema: a
judge's template, and configs that run but do not do what was meant (engine.traps)."""

from __future__ import annotations

from collections.abc import Sequence

from multisample.engine.prompts import load_prompts
from multisample.engine.traps import check_judge_templates, judges_generating, unconstrained_prompts
from multisample.engine.types import Prompt
from multisample.search.base import ManyModels, OneModel
from multisample.search.registry import StrategySettings
from multisample.search.sweep.config import SweepConfig
from multisample.search.synthesize.config import SearchRunConfig, SynthesizeConfig


def search_traps(
    config: SearchRunConfig,
    strategies: Sequence[tuple[str, StrategySettings]],
    prompts: Sequence[Prompt],
) -> list[str]:
    """Warnings about `config` run with `strategies` ((config path, settings) pairs) over
    `prompts`; raises ConfigError for a judge template that cannot work."""
    check_judge_templates(config.reward, "reward")
    messages = unconstrained_prompts(config.reward, prompts, "reward")
    names = config.model_names()
    for where, strategy in strategies:
        if isinstance(strategy, ManyModels) and strategy.models is None:
            unset = f"{where}.models"
        elif isinstance(strategy, OneModel) and strategy.model is None:
            unset = f"{where}.model"
        else:
            continue
        used = strategy.models_used(names)
        messages += judges_generating(config.reward, "reward", used, unset)
    return messages


def synthesize_traps(config: SynthesizeConfig) -> list[str]:
    """`search_traps` of a synthesize config, over the prompts it uses."""
    prompts = load_prompts(config.prompts, config.limit).prompts
    return search_traps(config, [("strategy", config.strategy)], prompts)


def sweep_traps(config: SweepConfig) -> list[str]:
    """`search_traps` of a sweep config: every method's strategy, over its prompts."""
    prompts = load_prompts(config.prompts, config.limit).prompts
    strategies = [(f"methods[{i}].strategy", m.strategy) for i, m in enumerate(config.methods)]
    return search_traps(config, strategies, prompts)
