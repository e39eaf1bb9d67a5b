"""Generated arithmetic, the exact step checker, step aggregation, and (marked engine) the
PRM path on a real vLLM engine."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from multisample.engine.arithmetic import Problem, generate, problem_of
from multisample.engine.config import ArithmeticTasks
from multisample.engine.prompts import load_prompts
from multisample.engine.rewards.combine import WeightedReward
from multisample.engine.rewards.correct import CorrectReward
from multisample.engine.rewards.process import (
    ArithmeticStepsReward,
    aggregate,
    check_steps,
    split_steps,
    step_result,
)
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.types import Prompt
from tests.conftest import lone_engine_cores

TASKS = ArithmeticTasks(generate="arithmetic", count=200, steps=3, operations="+-*/", seed=7)


def test_the_same_settings_and_seed_give_the_same_problems() -> None:
    assert generate(TASKS) == generate(TASKS)
    other = generate(TASKS.model_copy(update={"seed": 8}))
    assert [p.prompt for p in other] != [p.prompt for p in generate(TASKS)]
    # Problems do not depend on how many are drawn after them.
    assert generate(TASKS.model_copy(update={"count": 5})) == generate(TASKS)[:5]


def test_every_generated_problem_has_whole_results_and_its_answer_as_reference() -> None:
    for prompt in generate(TASKS):
        problem = problem_of(prompt)
        assert problem is not None and len(problem.operations) == 3
        values = problem.values()
        assert all(v >= 0 for v in values)  # subtraction stays at zero or above
        assert prompt.reference == str(values[-1])
        assert problem.question() in prompt.prompt
        # The worked solution scores every step right, and its answer is the reference.
        steps = split_steps(problem.solution(), "\n")
        assert check_steps(steps, values) == [1.0] * 4


def test_generated_tasks_are_a_prompts_source() -> None:
    prompts = load_prompts(TASKS.model_copy(update={"count": 3}), limit=2)
    assert [p.id for p in prompts.prompts] == ["arithmetic-7-0", "arithmetic-7-1"]
    assert prompts.where("arithmetic-7-1") == "arithmetic(count=3, steps=3, seed=7) row 2"


def test_bad_generator_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="expected some of"):
        ArithmeticTasks(generate="arithmetic", operations="+^")
    with pytest.raises(ValidationError, match="steps"):
        ArithmeticTasks(generate="arithmetic", steps=0)


PROBLEM = Problem(7, (("+", 5), ("*", 3), ("-", 4)))  # 7 -> 12 -> 36 -> 32


@pytest.mark.parametrize(
    ("solution", "scores"),
    [
        ("7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nThe answer is 32.", [1, 1, 1, 1]),
        ("7 + 5 = 12\n12 x 3 = 36\n36 - 4 = 32\nThe answer is 32.", [1, 1, 1, 1]),
        # Consistent with its own wrong start, but every result is wrong: all 0.
        ("7 + 5 = 13\n13 * 3 = 39\n39 - 4 = 35\nThe answer is 35.", [0, 0, 0, 0]),
        ("7 + 5 = 12\n12 * 3 = 35\n36 - 4 = 32\nThe answer is 32.", [1, 0, 1, 1]),
        ("7 + 5 = 12\n\n12 * 3 = 36\nThe answer is 36.", [1, 1, 0]),  # a step left out
        ("First, 7 plus 5 makes 12.\nThen 36.\nSo 32", [1, 1, 1]),  # results, no equations
        ("Let me think.\n7 + 5 = 12", [0, 0]),
        ("", []),
    ],
)
def test_the_step_checker_recomputes_every_intermediate_result(
    solution: str, scores: list[int]
) -> None:
    assert check_steps(split_steps(solution, "\n"), PROBLEM.values()) == scores


def test_a_finished_solution_must_reach_the_answer_an_unfinished_one_need_not() -> None:
    early = split_steps("7 + 5 = 12\n12 * 3 = 36", "\n")  # every step right, one left
    assert check_steps(early, PROBLEM.values(), finished=False) == [1, 1]
    assert check_steps(early, PROBLEM.values()) == [1, 0]
    # A finished solution whose last step restates the answer, or computes it, is right.
    for done in ("7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32", PROBLEM.solution()):
        assert check_steps(split_steps(done, "\n"), PROBLEM.values())[-1] == 1


def test_a_step_with_a_false_equation_has_no_result() -> None:
    assert step_result("The answer is 1,032.") == 1032  # a thousands separator
    assert step_result("3 + 4 = 8") is None
    assert step_result("3 + 4 = 7, 7 * 2 = 14") == 14
    assert step_result("7 / 2 = 3") is None  # not exact
    assert step_result("nothing") is None
    # A boxed answer is the step's answer, wherever the step's last number is.
    assert step_result("So \\boxed{32} apples are left after 3 days.") == 32


@pytest.mark.parametrize(("how", "expected"), [("last", 0.5), ("min", 0.25), ("prod", 0.125)])
def test_step_scores_aggregate_as_search_and_learn_does(how: str, expected: float) -> None:
    assert aggregate([1.0, 0.25, 0.5], how) == pytest.approx(expected)  # type: ignore[arg-type]
    assert aggregate([], how) == 0.0  # type: ignore[arg-type]


async def test_the_arithmetic_steps_reward_scores_steps_and_their_aggregate() -> None:
    prompt = PROBLEM.prompt("p")
    right = PROBLEM.solution()
    wrong_start = "7 + 5 = 13\n13 * 3 = 39\n39 - 4 = 35\nThe answer is 35."
    last = ArithmeticStepsReward("\n", "last")
    slip = "7 + 5 = 13\n12 * 3 = 36"  # a wrong step, then a right one; unfinished
    assert await last.unfinished.score_steps(prompt, [right, wrong_start, slip]) == [
        [1, 1, 1, 1],
        [0, 0, 0, 0],
        [0, 1],
    ]
    # `last` sees only the last step; `prod` every one.
    assert await last.unfinished.score(prompt, [right, wrong_start, slip]) == [1.0, 0.0, 1.0]
    prod = ArithmeticStepsReward("\n", "prod")
    assert await prod.unfinished.score(prompt, [right, wrong_start, slip]) == [1.0, 0.0, 0.0]
    # As a whole answer the slip is finished without reaching 32: wrong.
    assert await last.score(prompt, [right, slip]) == [1.0, 0.0]
    # The two judge differently, so neither's cached or journaled score stands for the other's.
    assert last.unfinished.identity() != last.identity()
    assert last.unfinished is last.unfinished


async def test_a_weighted_reward_scores_unfinished_solutions_with_its_parts_unfinished() -> None:
    steps = ArithmeticStepsReward("\n", "last")
    mixed = WeightedReward([(0.5, steps), (0.5, ArithmeticStepsReward("\n", "min"))])
    early = "7 + 5 = 12\n12 * 3 = 36"
    assert await mixed.unfinished.score(PROBLEM.prompt("p"), [early]) == [1.0]
    assert await mixed.score(PROBLEM.prompt("p"), [early]) == [0.0]
    plain = WeightedReward([(1.0, CorrectReward())])
    assert plain.unfinished is plain  # nothing in it judges a finished answer otherwise


def test_process_reward_specs_have_their_defaults() -> None:
    spec = TypeAdapter(RewardSpec).validate_python({"kind": "arithmetic_steps"})
    assert (spec.separator, spec.aggregate) == ("\n", "last")  # type: ignore[union-attr]
    judge = TypeAdapter(RewardSpec).validate_python({"kind": "step_judge", "model": "m"})
    assert judge.separator == "\n\n"  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="separator"):
        TypeAdapter(RewardSpec).validate_python({"kind": "arithmetic_steps", "separator": ""})


# --- a PRM through vLLM (marked engine) ---------------------------------------------------


def rlhflow_reference(folder: str, question: str, steps: list[str]) -> list[float]:
    """What transformers computes for the rlhflow convention: at each step's "+" answer,
    P(+) / (P(+) + P(-)) of the full distribution there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    turns: list[dict[str, str]] = []
    positions = []
    for k, step in enumerate(steps):
        turns.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        positions.append(len(tokenizer.encode(text, add_special_tokens=False)))
        turns.append({"role": "assistant", "content": "+"})
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    ids = tokenizer.encode(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        probabilities = torch.softmax(model(ids).logits[0].float(), dim=-1)
    plus, minus = (tokenizer.encode(t, add_special_tokens=False)[-1] for t in "+-")
    shares = []
    for position in positions:
        row = probabilities[position - 1]  # the distribution that predicts token `position`
        shares.append(float(row[plus] / (row[plus] + row[minus])))
    return shares


@pytest.mark.engine
async def test_a_prm_of_the_rlhflow_convention_scores_as_transformers_does(
    embedded_models: dict[str, Any],
) -> None:
    """SmolLM2 stands in for RLHFlow's PRM (the same layout on a chat model): the reward's
    step scores, read from vLLM, equal what transformers computes."""
    from multisample.engine.rewards.classifier import HostedEngine
    from multisample.engine.rewards.prm import PRMActor, PRMReward, PRMRewardSpec

    folder = str(embedded_models["smollm2-135m-instruct"])
    spec = PRMRewardSpec(
        kind="prm", model=folder, convention="rlhflow", separator="\n", dtype="float32", num_cpus=0
    )
    reward = PRMReward(spec, HostedEngine(PRMActor, spec, cpu_cores=lone_engine_cores()))
    question = "Start with 7. Add 5, then subtract 4."
    solution = "7 + 5 = 12\n12 - 4 = 8\nThe answer is 8."
    prompt = Prompt(id="p", prompt=question)
    try:
        (scores,) = await reward.score_steps(prompt, [solution])
        (last,) = await reward.score(prompt, [solution])
    finally:
        await reward.close()
    expected = rlhflow_reference(folder, question, solution.split("\n"))
    assert scores == pytest.approx(expected, abs=2e-3)
    assert last == pytest.approx(expected[-1], abs=2e-3)
    assert len(scores) == 3
