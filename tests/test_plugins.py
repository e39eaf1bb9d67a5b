"""Components from another package: a tiny plugin distribution registers a strategy, a reward
and a bandit policy through the `multisample.strategies`, `multisample.rewards` and
`multisample.policies` entry points, is installed with pip (into a folder of its own, put on
PYTHONPATH), and the `multisample` command runs each of them against an OpenAI-compatible
endpoint on loopback; a broken entry point is named in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from multisample.engine.registry import PluginError, with_plugins
from tests.engine.fake_openai import FakeOpenAIServer, server

__all__ = ["server"]  # the module-scoped loopback server fixture

PLUGIN = '''
"""A strategy, a reward and a policy from outside multisample."""

from typing import Literal

import numpy as np

from multisample.bandits.policies.base import Policy
from multisample.engine.config import Settings
from multisample.engine.rewards.base import BaseRewardSpec, Reward
from multisample.engine.types import Message
from multisample.search.base import OneModel, Search


class TwiceSettings(OneModel):
    kind: Literal["twice"] = "twice"

    def sequential_rounds(self, budget, pool_models):
        return 2


async def run(prompt, ctx, settings):
    """Two samples, one after the other, whatever the budget."""
    search = Search(prompt, ctx, "twice")
    (model,) = settings.models_used(ctx.pool.names)
    for _ in range(2):
        await search.sample(model, (Message("user", prompt.prompt),))
    return search.result()


STRATEGY = (TwiceSettings, run)


class LengthRewardSpec(BaseRewardSpec):
    kind: Literal["length"]

    def build(self, pool):
        return LengthReward()


class LengthReward(Reward):
    name = "length"

    async def _score(self, prompt, responses, reference):
        return [float(len(r)) for r in responses]


class LastSettings(Settings):
    kind: Literal["last"] = "last"


class Last(Policy):
    """Always the last two candidates."""

    settings_type = LastSettings

    def select_runs(self):
        return np.full(self.runs, self.arms - 2), np.full(self.runs, self.arms - 1)

    def _learn(self, outcomes):
        pass

    def best_runs(self):
        return np.full(self.runs, self.arms - 1)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "multisample-toy-plugin"
version = "0.1"

[project.entry-points."multisample.strategies"]
twice = "toy_plugin:STRATEGY"

[project.entry-points."multisample.rewards"]
length = "toy_plugin:LengthRewardSpec"

[project.entry-points."multisample.policies"]
last = "toy_plugin:Last"

[tool.setuptools]
py-modules = ["toy_plugin"]
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin, installed by pip into a folder of its own (what PYTHONPATH gets)."""
    source = tmp_path_factory.mktemp("plugin-source")
    (source / "toy_plugin.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    (source / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    target = tmp_path_factory.mktemp("plugin-installed")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    pip += ["--no-build-isolation", "--target", str(target), str(source)]
    subprocess.run(pip, check=True, capture_output=True, text=True)
    return target


def multisample(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NO_COLOR": "1"}
    command = [sys.executable, "-c", "from multisample.cli import main; main()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def models(server: FakeOpenAIServer) -> list[dict[str, object]]:
    return [
        {
            "name": name,
            "backend": "openai",
            "model": f"served-plugin-{name}",
            "base_url": server.base_url,
            "backoff_s": 0.01,
        }
        for name in ("a", "b", "c")
    ]


def test_a_plugins_strategy_and_reward_run_in_synthesize(
    installed: Path, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    settings = {
        "models": models(server)[:1],
        "limit": 2,
        "strategy": {"kind": "twice"},
        "reward": {"kind": "length"},
        "output_dir": str(tmp_path / "runs"),
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    result = multisample(installed, "synthesize", str(config), "--name", "r")
    assert result.returncode == 0, result.stderr
    samples = [json.loads(x) for x in (tmp_path / "runs/r/samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4  # two prompts, two samples each
    assert all(s["reward"] == float(len(s["text"])) for s in samples)
    schema = multisample(installed, "config", "schema", "synthesize")
    assert '"twice"' in schema.stdout and '"length"' in schema.stdout


def test_a_plugins_policy_plays_in_select(
    installed: Path, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    settings = {
        "models": models(server),
        "limit": 4,
        "batch": 2,
        "policy": {"kind": "last"},
        "feedback": {"kind": "reward", "reward": {"kind": "length"}},
        "output_dir": str(tmp_path / "runs"),
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    result = multisample(installed, "select", str(config), "--name", "s")
    assert result.returncode == 0, result.stderr
    rounds = [json.loads(x) for x in (tmp_path / "runs/s/rounds.jsonl").read_text().splitlines()]
    assert [(r["first"], r["second"]) for r in rounds] == [("b", "c"), ("b", "c")]


def test_a_broken_entry_point_is_one_line(installed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    for path in installed.iterdir():
        if path.name.endswith(".dist-info"):
            copy = broken / path.name
            copy.mkdir(parents=True)
            for file in path.iterdir():
                text = file.read_text(encoding="utf-8")
                (copy / file.name).write_text(text.replace("toy_plugin:", "no_such_module:"))
    result = multisample(broken, "--help")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_module" in lines[0] and "does not load" in lines[0]


def test_a_plugin_may_not_take_a_builtin_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    class Entry:
        name, value, dist = "mine", "pkg:best_of_n", None

        def load(self) -> str:
            return "best_of_n"

    monkeypatch.setattr("multisample.engine.registry.entry_points", lambda group: [Entry()])
    with pytest.raises(PluginError, match="kind 'best_of_n' is taken"):
        with_plugins("multisample.strategies", ["best_of_n"], lambda kind: kind)
