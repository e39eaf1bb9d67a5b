"""What `synthesize` and `sweep` check before any engine starts, beyond the schema: a
judge's template, and configs that run but do not do what was meant (engine.traps)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.traps import check_judge_templates, judges_generating, unconstrained_prompts
from engine.types import Prompt
from search.base import ManyModels, OneModel
from search.registry import StrategySettings
from search.synthesize import SearchRunConfig


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
