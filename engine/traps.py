"""Configs that run but do not do what was meant, found before any engine starts.

Each check returns its warnings as one-line messages (`warn` logs them, so the command
line shows them above the progress bar); a file that would only fail once the engines are
up (a judge's template) raises ConfigError instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from multisample.engine.config import ConfigError
from multisample.engine.rewards.base import RewardError
from multisample.engine.rewards.judge import JudgeRewardSpec, read_template
from multisample.engine.rewards.verifiable import VerifiableRewardSpec
from multisample.engine.types import Prompt

logger = logging.getLogger(__name__)


def warn(messages: Iterable[str]) -> None:
    """Log each message as one warning."""
    for message in messages:
        logger.warning(message)


def judges(spec: BaseModel, field: str) -> list[tuple[str, JudgeRewardSpec]]:
    """Every judge in a reward spec (a weighted reward's components included), with the
    config path it sits at."""
    found: list[tuple[str, JudgeRewardSpec]] = []

    def visit(value: Any, path: str) -> None:
        if isinstance(value, JudgeRewardSpec):
            found.append((path, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name), f"{path}.{name}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                visit(item, f"{path}[{index}]")

    visit(spec, field)
    return found


def check_judge_templates(spec: BaseModel, field: str) -> None:
    """Every judge's template file is read and its fields checked now, not once the
    engines are up; ConfigError names the field."""
    for path, judge in judges(spec, field):
        if judge.template is not None:
            try:
                read_template(judge.template)
            except RewardError as exc:
                raise ConfigError(f"{path}.template: {exc}") from None


def unconstrained_prompts(spec: BaseModel, prompts: Sequence[Prompt], field: str) -> list[str]:
    """The verifiable reward scores the share of a prompt's constraints met: on a prompt
    with none, every sample scores 1.0, so nothing is preferred and no pair is made."""
    if not isinstance(spec, VerifiableRewardSpec) or not prompts:
        return []
    bare = sum(1 for prompt in prompts if not prompt.constraints)
    if bare == 0:
        return []
    which = (
        f"none of the {len(prompts)} prompts has constraints"
        if bare == len(prompts)
        else f"{bare} of the {len(prompts)} prompts have no constraints"
    )
    return [
        f"{field}: 'verifiable' scores constraints, and {which}: their samples all score "
        "1.0, so none is preferred and no pair is made; add constraints or choose another "
        "reward (judge, embedding, classifier)"
    ]


def judges_generating(
    spec: BaseModel, field: str, generators: Sequence[str], unset: str
) -> list[str]:
    """A judge that also generates because `unset`, the field naming the generators, was
    left out, and its default (every pool model, or the first) includes the judge."""
    return [
        f"{path}.model {judge.model!r} also generates: {unset} is not set, which takes "
        f"{', '.join(generators)}; set {unset} to keep {judge.model!r} a judge only"
        for path, judge in judges(spec, field)
        if judge.model in generators
    ]
