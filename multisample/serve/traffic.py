"""Live traffic as a run directory: what `serve` answered, committed as it completes.

<run>/config.yaml is the serve config; beneath it each route and each pool model that
answered has a synthesize-format run directory of its own (routes/<name>/,
models/<name>/: samples.jsonl with lineage, pairs.jsonl, prompts.jsonl, committed per
request), so `multisample export` and `multisample train` take live traffic as they take
a synthesize run; each selection route a select run directory (selections/<name>/:
rounds, answers, state, adapter versions); feedback.jsonl every feedback received.
A request's id is its prompt id. The directories are held (locked) while the server
runs, and a restart with --resume reopens them where they stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from multisample.engine.storage import RunDirectory, append_records, cut_torn_line
from multisample.engine.types import Prompt
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import (
    PAIRS,
    PROMPTS,
    SAMPLES,
    SynthesizeRun,
    prompt_record,
)
from multisample.serve.config import RESUMABLE, RouteSpec, ServeConfig

ROUTES = "routes"
MODELS = "models"
SELECTIONS = "selections"
FEEDBACK = "feedback.jsonl"


class ServeRun(RunDirectory):
    """The serve run directory itself: its config, its summary and feedback.jsonl (its
    records are appended whole and never repaired: a torn last line is cut on read)."""


class Traffic:
    """The run directory of one `serve`, and the synthesize-format directories beneath it."""

    def __init__(self, path: Path, config: ServeConfig, resume: bool) -> None:
        self.path = path
        self.config = config
        self.resume = resume
        self.run = ServeRun.open(path, config, resume, set(RESUMABLE))
        if resume:
            cut_torn_line(path / FEEDBACK)  # a kill's half line, once
        self._runs: dict[str, SynthesizeRun] = {}

    def route_config(self, route: RouteSpec) -> SynthesizeConfig:
        """The synthesize config a route's directory says it ran with (what `train`
        and `export` read of it)."""
        return SynthesizeConfig.model_validate(
            {
                "models": [m.model_dump() for m in self.config.models],
                "prompts": "-",
                "sampling": self.config.sampling.model_dump(),
                "strategy": route.strategy.model_dump(),
                "budget": route.budget.model_dump(),
                "reward": route.reward.model_dump(),
                "pairs": route.pairs.model_dump(),
                "seed": self.config.seed,
            }
        )

    def model_config(self, model: str) -> SynthesizeConfig:
        """A pool model's directory's config: best-of-N of that model (one sample a
        choice), no reward (its samples carry none)."""
        return SynthesizeConfig.model_validate(
            {
                "models": [m.model_dump() for m in self.config.models],
                "prompts": "-",
                "sampling": self.config.sampling.model_dump(),
                "strategy": {"kind": "best_of_n", "model": model},
                "seed": self.config.seed,
            }
        )

    def _directory(self, kind: str, name: str, config: SynthesizeConfig) -> SynthesizeRun:
        key = f"{kind}/{name}"
        if key not in self._runs:
            folder = self.path / kind / name
            resume = self.resume and folder.exists()
            self._runs[key] = SynthesizeRun.open(folder, config, resume)
        return self._runs[key]

    def commit_route(
        self,
        route: RouteSpec,
        prompt: Prompt,
        samples: list[dict[str, Any]],
        pairs: list[dict[str, Any]],
    ) -> None:
        run = self._directory(ROUTES, route.name, self.route_config(route))
        run.commit_prompt(
            prompt.id, {SAMPLES: samples, PAIRS: pairs, PROMPTS: [prompt_record(prompt)]}
        )

    def commit_model(self, model: str, prompt: Prompt, samples: list[dict[str, Any]]) -> None:
        run = self._directory(MODELS, model, self.model_config(model))
        run.commit_prompt(prompt.id, {SAMPLES: samples, PROMPTS: [prompt_record(prompt)]})

    def selection_path(self, name: str) -> Path:
        return self.path / SELECTIONS / name

    def add_feedback(self, record: dict[str, Any]) -> None:
        append_records(self.path / FEEDBACK, [record])

    def close(self, summary: dict[str, Any]) -> None:
        """Write every directory's summary (which lets go of its lock)."""
        for key, run in self._runs.items():
            run.write_summary({"status": "served", "directory": key})
        self.run.write_summary(summary)
