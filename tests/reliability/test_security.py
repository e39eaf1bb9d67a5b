"""Fault 6: security defaults.

- No code path evaluates or unpickles data: no eval/exec/compile, pickle, marshal, shelve,
  unsafe YAML loaders, shell commands or torch.load without weights_only in the packages.
- trust_remote_code is off unless a config asks for it, and the engine gets the config's
  value.
- API keys come only from the environment; the key is sent, but appears in no log record,
  no output and no file of the run directory, even when the server echoes it back; and a
  key pasted into a config is not echoed by the error that rejects it.
- Nothing in the engine, the strategies or the bandits listens on a socket (only the
  gateway does, `multisample serve`: tests/test_api.py); the local Ray cluster multisample
  starts has no dashboard and is its own (it never joins a stray cluster left on the
  machine).
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multisample.cli.app import app
from multisample.engine.config import ConfigError, OpenAIModelSpec, PoolConfig, VLLMModelSpec
from multisample.engine.config_files import load_config
from multisample.engine.rewards.classifier import ClassifierRewardSpec
from tests.engine.fake_openai import FakeOpenAIServer, Fault, server
from tests.reliability.helpers import write_config
from tests.reliability.test_kill_resume import endpoint_settings

__all__ = ["server"]

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "search", "bandits")
SECRET = "sk-reliability-test-5ecret-0123456789abcdef"

UNSAFE_CALLS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "pickle.load",
    "pickle.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "yaml.load",
    "yaml.load_all",
    "yaml.unsafe_load",
    "yaml.full_load",
    "os.system",
    "os.popen",
}
UNSAFE_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
LISTENERS = {"bind", "listen", "serve", "serve_forever", "run_server", "start_server"}


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{dotted(node.func)}()"
    return ""


def findings(path: Path, root: Path = REPO) -> list[str]:
    """Unsafe calls and imports in one file, as 'file:line: what'."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where}:{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in UNSAFE_CALLS:
            found.append(f"{where}:{node.lineno}: calls {name}")
        if name.split(".")[-1] in LISTENERS and not name.startswith(("re.", "functools.")):
            found.append(f"{where}:{node.lineno}: calls {name} (listens?)")
        shell = keywords.get("shell")
        if isinstance(shell, ast.Constant) and shell.value is True:
            found.append(f"{where}:{node.lineno}: runs a shell command ({name})")
        if name.endswith("torch.load"):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        if name in {"uvicorn.run", "HTTPServer", "ThreadingHTTPServer", "TCPServer"}:
            found.append(f"{where}:{node.lineno}: starts a server ({name})")
    return found


def test_no_eval_pickle_unsafe_yaml_shell_or_listener_in_the_packages(ledger: Any) -> None:
    files = python_files()
    found = [finding for path in files for finding in findings(path)]
    ledger(scenario="security_static", checks={"python files scanned": len(files)})
    assert len(files) > 40
    assert found == []


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import pickle\nimport yaml, subprocess, torch, socket\n"
        "eval('1')\nyaml.load('a')\nsubprocess.run('ls', shell=True)\ntorch.load('x')\n"
        "socket.socket().bind(('0.0.0.0', 1))\n",
        encoding="utf-8",
    )
    kinds = [f.split(": ", 1)[1] for f in findings(bad, tmp_path)]
    assert kinds == [
        "imports pickle",
        "calls eval",
        "calls yaml.load",
        "runs a shell command (subprocess.run)",
        "torch.load without weights_only=True",
        "calls socket.socket().bind (listens?)",
    ]


# --- trust_remote_code -------------------------------------------------------------------------


class _Captured(Exception):
    pass


@pytest.mark.parametrize("asked", [None, True])
async def test_trust_remote_code_is_off_unless_asked(
    monkeypatch: pytest.MonkeyPatch, asked: bool | None
) -> None:
    from multisample.engine.backends.vllm_actor import VLLMEngineActor

    fields = {"name": "m", "model": "embedded:smollm2-135m-instruct"}
    if asked is not None:
        fields["trust_remote_code"] = asked
    spec = VLLMModelSpec.model_validate(fields)
    seen: dict[str, Any] = {}

    def build_engine(model: str, num_gpus: float, enforce_eager: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr("multisample.engine.actors.build_engine", build_engine)
    with pytest.raises(_Captured):
        await VLLMEngineActor(spec).start()  # the actor's code, run in this process
    assert seen["trust_remote_code"] is bool(asked)
    assert ClassifierRewardSpec.model_fields["trust_remote_code"].default is False


# --- API keys ----------------------------------------------------------------------------------


def test_a_config_has_no_field_for_a_key_and_does_not_echo_one(tmp_path: Path) -> None:
    assert not {f for f in OpenAIModelSpec.model_fields if "key" in f} - {"api_key_env"}
    path = write_config(
        tmp_path / "config.yaml",
        {"models": [{"name": "r", "backend": "openai", "model": "m", "base_url": "http://x"}]},
    )
    for field in ("api_key", "token", "openai-api-key"):
        text = path.read_text(encoding="utf-8").replace(
            "backend: openai", f"backend: openai\n  {field}: {SECRET}"
        )
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, PoolConfig)
        assert f"models[0].{field}: Extra inputs are not permitted" in str(info.value)
        assert SECRET not in str(info.value)
        path.write_text(text.replace(f"\n  {field}: {SECRET}", ""), encoding="utf-8")


def test_api_key_never_reaches_logs_output_or_the_run_directory(
    server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ledger: Any,
) -> None:
    monkeypatch.setenv("MULTISAMPLE_RELIABILITY_KEY", SECRET)
    model = "served-keyed"
    settings = endpoint_settings(server, model, limit=3, output_dir=str(tmp_path))
    settings["models"][0].update(api_key_env="MULTISAMPLE_RELIABILITY_KEY", max_retries=2)
    config = write_config(tmp_path / "config.yaml", settings)
    # A retried failure whose body echoes the key (logged as a warning), then a 401 that
    # echoes it too and fails the run (its message is the command's error line).
    server.script(
        model,
        Fault(500, body=f"upstream said: bad key {SECRET}"),
        Fault(401, body=json.dumps({"error": {"message": f"Incorrect API key: {SECRET}"}})),
    )
    runner = CliRunner()
    with caplog.at_level(logging.DEBUG):
        failed = runner.invoke(app, ["synthesize", str(config), "--name", "keyed"])
        resumed = runner.invoke(app, ["synthesize", str(config), "--name", "keyed", "--resume"])
    assert failed.exit_code == 2 and "Incorrect API key: ***" in failed.output, failed.output
    assert resumed.exit_code == 0, resumed.output
    sent = {r.headers.get("authorization") for r in server.requests[model]}
    assert sent == {f"Bearer {SECRET}"}  # the key was really used

    run = tmp_path / "keyed"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in files)
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    leaks += [f"log: {r.getMessage()}" for r in caplog.records if SECRET in r.getMessage()]
    leaks += ["output"] if SECRET in failed.output + resumed.output else []
    ledger(
        scenario="security_api_key",
        checks={"run files searched": len(files), "log records searched": len(caplog.records)},
        key_leaks=len(leaks),
    )
    assert leaks == []
    assert "MULTISAMPLE_RELIABILITY_KEY" in (run / "config.yaml").read_text(encoding="utf-8")


# --- listening ---------------------------------------------------------------------------------


def test_local_ray_cluster_is_private_and_dashboardless(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from multisample.engine.actors import connect

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    connect(PoolConfig.model_validate({"models": [{"name": "m", "model": "x"}]}))
    [kwargs] = calls
    assert kwargs["include_dashboard"] is False
    assert kwargs["address"] == "local"  # never silently joins a cluster left running
    assert "dashboard_host" not in kwargs
