"""What `select` checks before any engine starts beyond the schema: a judge's template, and
configs that run but do not do what was meant (engine.traps)."""

from __future__ import annotations

from multisample.bandits.select.config import STDIN, CandidateSpec, RewardPreference, SelectConfig
from multisample.engine.prompts import load_prompts
from multisample.engine.traps import check_judge_templates, judges_generating, unconstrained_prompts


def select_traps(config: SelectConfig) -> list[str]:
    """Warnings about a select config that runs but does not do what was meant (a judge
    template that cannot work is a ConfigError), made before any engine starts."""
    if not isinstance(config.feedback, RewardPreference):
        return []
    reward, field = config.feedback.reward, "feedback.reward"
    check_judge_templates(reward, field)
    messages = []
    if config.prompts != STDIN:
        prompts = load_prompts(config.prompts, config.limit).prompts
        messages += unconstrained_prompts(reward, prompts, field)
    implicit = [CandidateSpec(name=n, model=n) for n in config.model_names()]
    if config.candidates == implicit:  # left out: every pool model is a candidate
        models = [c.model for c in config.candidates]
        messages += judges_generating(reward, field, models, "candidates")
    return messages
