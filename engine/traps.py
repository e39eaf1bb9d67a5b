"""Configs that run but do not do what was meant, found before any engine starts.

Each check returns its warnings as one-line messages (`warn` logs them, so the command
line shows them above the progress bar); a file that would only fail once the engines are
up (a judge's template) raises ConfigError instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from multisample.engine.answers import readable_reference
from multisample.engine.arithmetic import problem_of
from multisample.engine.config import ConfigError, find_specs
from multisample.engine.prompts import PromptFile
from multisample.engine.rewards.base import RewardError
from multisample.engine.rewards.correct import CorrectRewardSpec
from multisample.engine.rewards.judge import JudgeRewardSpec, read_template
from multisample.engine.rewards.process import ArithmeticStepsSpec, ProcessRewardSpec
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
    return find_specs(spec, JudgeRewardSpec, (field,))


def check_judge_templates(spec: BaseModel, field: str) -> None:
    """Every judge's template file is read and its fields checked now, not once the
    engines are up; ConfigError names the field."""
    for path, judge in judges(spec, field):
        if judge.template is not None:
            try:
                read_template(judge.template)
            except RewardError as exc:
                raise ConfigError(f"{path}.template: {exc}") from None


def check_references(spec: BaseModel, prompts: PromptFile, field: str) -> None:
    """A `correct` reward (anywhere in `spec`) needs every prompt to carry a reference
    answer it can read; ConfigError names the prompt's line and the reward's field."""
    for path, _ in find_specs(spec, CorrectRewardSpec, (field,)):
        for prompt in prompts.prompts:
            if prompt.reference is None:
                problem = "has no reference answer"
            elif not readable_reference(prompt.reference):
                problem = (
                    f"has a reference that cannot be read as an answer ({prompt.reference!r:.80})"
                )
            else:
                continue
            raise ConfigError(
                f"{prompts.where(prompt.id)}: reference: prompt {prompt.id!r} {problem}, "
                f"which {path} ('correct') compares answers with"
            )


def check_reward_inputs(spec: BaseModel, prompts: PromptFile, field: str) -> None:
    """What the rewards in `spec` need of every prompt, checked before any engine starts:
    a `correct` reward a readable reference answer, the arithmetic step checker a
    generated problem, a process reward a separator its prompts' worked examples use."""
    check_references(spec, prompts, field)
    for path, _ in find_specs(spec, ArithmeticStepsSpec, (field,)):
        for prompt in prompts.prompts:
            if problem_of(prompt) is None:
                raise ConfigError(
                    f"{prompts.where(prompt.id)}: prompt {prompt.id!r} is no generated "
                    f"arithmetic problem, whose steps {path} ('arithmetic_steps') checks "
                    "(prompts: {generate: arithmetic, ...})"
                )
    for path, process in find_specs(spec, ProcessRewardSpec, (field,)):
        check_separator(process.separator, prompts, f"{path}.separator")


def check_separator(separator: str, prompts: PromptFile, field: str) -> None:
    """A step separator must occur in the worked examples the prompts show (their earlier
    assistant turns), where they show any: a model that imitates them would never end a
    step there, and no solution would be split into steps."""
    for prompt in prompts.prompts:
        shown = [m.content for m in prompt.history if m.role == "assistant"]
        if shown and not any(separator in text for text in shown):
            raise ConfigError(
                f"{prompts.where(prompt.id)}: {field} {separator!r} never occurs in the "
                f"worked example prompt {prompt.id!r} shows ({shown[-1]!r:.60}), so no "
                "step would end there"
            )


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
