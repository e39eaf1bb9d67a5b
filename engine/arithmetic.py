"""Generated arithmetic: multi-step problems with one exact answer, made from a seed.

A problem starts from a number and applies `steps` operations to it, each with an operand
from 1 to `max_number`: "Start with 7. Add 5, then multiply by 3, then subtract 4." Every
intermediate result is a whole number from 0 up (a subtraction never goes below zero, a
division is always exact), so the worked solution is one line per operation and a last
line with the answer:

    7 + 5 = 12
    12 * 3 = 36
    36 - 4 = 32
    The answer is 32.

The prompt shows one fixed worked example in that form, so that a small model answers one
step per line (the step separator of step-level search over these problems is "\\n").
The same (count, steps, max_number, operations, seed) always gives the same problems, on
any machine: `random.Random(seed)` draws them, one after another. Each prompt carries its
problem in `metadata["arithmetic"]` ({start, operations}), from which the step checker
(engine.rewards.process, `arithmetic_steps`) recomputes every intermediate result, and its
answer as `reference`.

Difficulty grows with `steps` and `max_number`; SmolLM2-135M-Instruct solves some
2-step problems with operands up to 10 and few with 4 steps (docs/METHODS.md has the
measured figures).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from multisample.engine.config import ArithmeticTasks
from multisample.engine.types import Message, Prompt

WORDS: dict[str, str] = {"+": "add", "-": "subtract", "*": "multiply by", "/": "divide by"}
METADATA = "arithmetic"
"""The metadata key of a generated problem: {start, operations}."""

INSTRUCTION = (
    'Solve the problem one calculation per line, then give the answer as "The answer is N."'
)


def apply(value: int, operation: str, operand: int) -> int:
    """`value operation operand`, exactly (the generator keeps divisions exact)."""
    if operation == "+":
        return value + operand
    if operation == "-":
        return value - operand
    if operation == "*":
        return value * operand
    return value // operand


@dataclass(frozen=True)
class Problem:
    start: int
    operations: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        """The start and every intermediate result; the last is the answer."""
        values = [self.start]
        for operation, operand in self.operations:
            values.append(apply(values[-1], operation, operand))
        return values

    def question(self) -> str:
        words = [f"{WORDS[op]} {operand}" for op, operand in self.operations]
        said = words[0] if len(words) == 1 else ", then ".join(words)
        return f"Start with {self.start}. {said[0].upper()}{said[1:]}."

    def solution(self) -> str:
        """The worked solution: one line per operation, then the answer."""
        values = self.values()
        lines = [
            f"{value} {op} {operand} = {result}"
            for value, (op, operand), result in zip(
                values[:-1], self.operations, values[1:], strict=True
            )
        ]
        return "\n".join([*lines, f"The answer is {values[-1]}."])

    def prompt(self, id: str) -> Prompt:
        """The problem as a prompt: the worked example as an earlier exchange (a small
        model follows a shown answer better than a described one), then the problem."""
        return Prompt(
            id=id,
            prompt=self.question(),
            history=(
                Message("user", f"{INSTRUCTION}\n\n{EXAMPLE.question()}"),
                Message("assistant", EXAMPLE.solution()),
            ),
            reference=str(self.values()[-1]),
            metadata={METADATA: self.document()},
        )

    def document(self) -> dict[str, Any]:
        return {"start": self.start, "operations": [list(o) for o in self.operations]}


EXAMPLE = Problem(3, (("+", 4), ("*", 2)))
"""The worked example every prompt shows."""


def problem_of(prompt: Prompt) -> Problem | None:
    """The generated problem a prompt carries, None when it carries none (or a broken one)."""
    document = prompt.metadata.get(METADATA)
    try:
        problem = Problem(
            int(document["start"]),
            tuple((str(op), int(operand)) for op, operand in document["operations"]),
        )
    except (TypeError, KeyError, ValueError):
        return None
    valid = all(op in WORDS and operand > 0 for op, operand in problem.operations)
    return problem if valid and problem.operations else None


def generate(tasks: ArithmeticTasks) -> list[Prompt]:
    """The problems `tasks` describes, as prompts with their answers, in a fixed order."""
    rng = random.Random(tasks.seed)
    operations = sorted(set(tasks.operations))
    return [
        _draw(rng, tasks, operations).prompt(f"arithmetic-{tasks.seed}-{i}")
        for i in range(tasks.count)
    ]


def _draw(rng: random.Random, tasks: ArithmeticTasks, operations: list[str]) -> Problem:
    value = start = rng.randint(1, tasks.max_number)
    drawn = []
    for _ in range(tasks.steps):
        operation = rng.choice(operations)
        if (operation == "-" and value < 1) or (operation == "/" and value < 2):
            operation = "+"  # nothing to take away or to divide: add instead
        if operation == "-":
            operand = rng.randint(1, min(value, tasks.max_number))
        elif operation == "/":
            divisors = [d for d in range(2, min(value, tasks.max_number) + 1) if value % d == 0]
            operand = rng.choice(divisors) if divisors else 1
        else:
            operand = rng.randint(1, tasks.max_number)
        drawn.append((operation, operand))
        value = apply(value, operation, operand)
    return Problem(start, tuple(drawn))
