"""The command line's habits: --version, -v / --log-level through rich on the progress
bar's console, --resume RUN_DIR, --set overrides, `config check` guessing the kind, run
names that are names, and the silent traps warned about before any engine starts."""

from __future__ import annotations

import io
import logging
import tomllib
from pathlib import Path

import pytest
from rich.console import Console
from rich.logging import RichHandler
from typer.testing import CliRunner

import multisample.version
from multisample.cli.app import app
from multisample.cli.common import bare_resume_as_empty
from multisample.engine.backends.base import BackendError
from multisample.engine.progress import progress_bar
from multisample.engine.terminal import STDERR, configure_logging, log_level
from multisample.version import package_version

ROOT = Path(__file__).resolve().parent.parent
MODELS = """\
models:
  - name: smollm2
    model: embedded:smollm2-135m-instruct
"""


class EngineStarted(BackendError):
    """Raised instead of starting an engine: reaching it means every check passed."""


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    return CliRunner()


@pytest.fixture
def no_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: object) -> None:
        raise EngineStarted("engines would start here")

    monkeypatch.setattr("multisample.engine.pool.ModelPool.start", refuse)


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    """The commands configure logging process-wide; leave it as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_error_line(output: str, *fragments: str) -> None:
    assert output.startswith("error: "), output
    assert output.count("\n") == 1, output
    for fragment in fragments:
        assert fragment in output, output


# --- --version ----------------------------------------------------------------------------------


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]


def test_version(cli: CliRunner) -> None:
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"multisample {pyproject_version()}\n"


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import PackageNotFoundError

    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(multisample.version, "version", not_installed)
    assert package_version() == pyproject_version()


# --- logging ------------------------------------------------------------------------------------


def test_log_levels() -> None:
    assert log_level(0, None) == logging.WARNING
    assert log_level(1, None) == logging.INFO
    assert log_level(3, None) == logging.DEBUG
    assert log_level(2, "error") == logging.ERROR


def rich_handlers() -> list[RichHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RichHandler)]


@pytest.mark.parametrize(
    ("options", "level"),
    [
        ([], logging.WARNING),
        (["-v"], logging.INFO),
        (["-vv"], logging.DEBUG),
        (["--log-level", "ERROR"], logging.ERROR),
        (["-v", "--log-level", "error"], logging.ERROR),
    ],
)
def test_logging_goes_through_rich_on_the_progress_console(
    cli: CliRunner, tmp_path: Path, options: list[str], level: int
) -> None:
    result = cli.invoke(app, [*options, "config", "check", str(write(tmp_path, MODELS))])
    assert result.exit_code == 0, result.output
    (handler,) = rich_handlers()
    assert handler.console is STDERR and handler.level == level
    assert logging.getLogger().getEffectiveLevel() <= level
    ray = logging.getLogger("ray")
    assert ray.handlers == [] and ray.propagate  # ray's own stderr handler is gone
    assert ray.isEnabledFor(logging.INFO) == (level <= logging.INFO)  # quiet unless -v


def test_a_bad_log_level_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["--log-level", "LOUD", "config", "check", str(tmp_path / "x")])
    assert result.exit_code == 2
    one_error_line(result.output, "--log-level LOUD: not a level")


def test_a_log_record_prints_above_the_live_bar() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    configure_logging(logging.WARNING, console)
    with progress_bar(console) as bar:
        bar.add_task("synth", total=4, line="")
        bar.refresh()
        logging.getLogger("multisample.engine.test").warning("endpoint slow, retrying")
        logging.getLogger("ray").info("Started a local Ray instance.")  # hidden without -v
        bar.refresh()
    text = out.getvalue()
    assert "endpoint slow, retrying" in text and "Started a local" not in text
    # The record was printed by the live display (above the bar), not into its line.
    for line in text.splitlines():
        assert not ("retrying" in line and "synth" in line), line


# --- --resume RUN_DIR ---------------------------------------------------------------------------


def test_a_bare_resume_is_kept_as_the_old_flag() -> None:
    assert bare_resume_as_empty(["s", "c", "--resume"]) == ["s", "c", "--resume="]
    assert bare_resume_as_empty(["s", "--resume", "--name", "r"]) == [
        "s",
        "--resume=",
        "--name",
        "r",
    ]
    assert bare_resume_as_empty(["s", "--resume", "runs/x"]) == ["s", "--resume", "runs/x"]
    assert bare_resume_as_empty(["s", "--", "--resume"]) == ["s", "--", "--resume"]


UNSTARTABLE = MODELS + "prompts: embedded:tasks\nlimit: 2\n"
OWN_FIELDS = {
    "synthesize": "",
    "sweep": "methods:\n  - name: bon\n    strategy: {kind: best_of_n}\n",
    "select": "candidates:\n  - {name: x, model: smollm2}\n  - {name: y, model: smollm2}\n",
}
ANOTHER = "sampling: {temperature: 0.3}\n"
"""Makes a config differ from the run's (every kind has `sampling`)."""


def existing_run(tmp_path: Path, config_text: str) -> Path:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_text, encoding="utf-8")
    return run


@pytest.mark.parametrize("command", ["synthesize", "sweep", "select"])
def test_resume_takes_the_printed_run_directory(
    cli: CliRunner, tmp_path: Path, no_engines: None, command: str
) -> None:
    text = UNSTARTABLE + OWN_FIELDS[command]
    config = write(tmp_path, text)
    run = existing_run(tmp_path, text + ANOTHER)
    for resume in (["--resume", str(run)], [f"--resume={run}"], ["--resume", "--name", "r1"]):
        args = [command, str(config), *resume]
        if "--name" in resume:
            args += ["--output-dir", str(run.parent)]
        result = cli.invoke(app, args)
        assert result.exit_code == 2, result.output
        # The run was found: its saved config is compared with this one.
        assert "different config" in result.output and str(run) in result.output, result.output


def test_resume_by_name_under_the_output_directory(
    cli: CliRunner, tmp_path: Path, no_engines: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, UNSTARTABLE + f"output_dir: {tmp_path / 'runs'}\n")
    existing_run(tmp_path, UNSTARTABLE + ANOTHER)
    result = cli.invoke(app, ["synthesize", str(config), "--resume", "r1"])
    assert "different config" in result.output, result.output


@pytest.mark.parametrize(
    ("resume", "extra", "message"),
    [
        ("nowhere/r9", [], "--resume nowhere/r9: not a run directory"),
        ("{tmp}/runs", [], "not a run directory (no"),
        ("{run}", ["--name", "r2"], "names another run than --name r2"),
        ("{run}", ["--output-dir", "{tmp}"], "is not under --output-dir"),
        ("", [], "--resume needs --name of the run to continue, or its directory"),
    ],
)
def test_resume_refusals_are_one_line(
    cli: CliRunner, tmp_path: Path, no_engines: None, resume: str, extra: list[str], message: str
) -> None:
    config = write(tmp_path, UNSTARTABLE)
    run = existing_run(tmp_path, UNSTARTABLE)
    fill = {"tmp": str(tmp_path), "run": str(run)}
    args = ["synthesize", str(config), "--resume", *([resume.format(**fill)] if resume else [])]
    result = cli.invoke(app, args + [e.format(**fill) for e in extra])
    assert result.exit_code == 2
    one_error_line(result.output, message.format(**fill))


# --- run names are names ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "a\\b", "/abs"])
@pytest.mark.parametrize("command", ["synthesize", "sweep", "select"])
def test_a_run_name_with_a_path_is_refused(
    cli: CliRunner, tmp_path: Path, no_engines: None, name: str, command: str
) -> None:
    text = UNSTARTABLE + OWN_FIELDS[command]
    config = write(tmp_path, text)
    runs = tmp_path / "deep" / "runs"
    result = cli.invoke(app, [command, str(config), "--output-dir", str(runs), "--name", name])
    assert result.exit_code == 2
    one_error_line(result.output, f"--name {name!r}: a run name is a folder name", "--output-dir")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.yaml"]


# --- --set --------------------------------------------------------------------------------------


def test_set_reaches_the_run(cli: CliRunner, tmp_path: Path, no_engines: None) -> None:
    config = write(tmp_path, UNSTARTABLE)
    run = existing_run(tmp_path, UNSTARTABLE + ANOTHER)
    args = ["synthesize", str(config), "--resume", str(run), "--set", "sampling.temperature=0.3"]
    result = cli.invoke(app, args)
    # The same config as the run's once the temperature is set: engines were about to start.
    assert "engines would start here" in result.output, result.output


@pytest.mark.parametrize("command", ["synthesize", "sweep", "select", "config check"])
def test_an_unknown_set_path_is_one_line(
    cli: CliRunner, tmp_path: Path, no_engines: None, command: str
) -> None:
    config = write(tmp_path, UNSTARTABLE + OWN_FIELDS.get(command, ""))
    runs = tmp_path / "runs"
    args = [*command.split(), str(config), "--set", "budgett.generations=4"]
    if command != "config check":
        args += ["--output-dir", str(runs)]
    result = cli.invoke(app, args)
    assert result.exit_code == 2
    one_error_line(result.output, "--set budgett.generations=4: budgett: no such setting")
    assert not runs.exists()


# --- config check guesses the kind --------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "kind", "evidence"),
    [
        ("strategy: {kind: best_of_n}\n", "synthesize", "strategy"),
        ("methods:\n  - name: bon\n    strategy: {kind: best_of_n}\n", "sweep", "methods"),
        (OWN_FIELDS["select"] + "batch: 4\npolicy: {kind: uniform}\n", "select", "candidates"),
        ("", "synthesize", "no field of another kind"),
    ],
)
def test_config_check_guesses_and_says_so(
    cli: CliRunner, tmp_path: Path, extra: str, kind: str, evidence: str
) -> None:
    config = write(tmp_path, MODELS + extra)
    result = cli.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{config}: ok (checked as a {kind} config"), result.output
    assert evidence in result.output


def test_config_check_with_a_kind_does_not_guess(cli: CliRunner, tmp_path: Path) -> None:
    config = write(tmp_path, MODELS)
    result = cli.invoke(app, ["config", "check", str(config), "--kind", "pool"])
    assert result.output == f"{config}: ok\n"


def test_a_wrong_guess_is_named_in_the_error(cli: CliRunner, tmp_path: Path) -> None:
    config = write(tmp_path, MODELS + "batch: 4\nbudget: {generations: 2}\nrounds: 2\n")
    result = cli.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2
    one_error_line(result.output, "budget", "(checked as a select config")


# --- silent traps -------------------------------------------------------------------------------


def test_traps_are_warned_before_the_engines_start(
    cli: CliRunner, tmp_path: Path, no_engines: None
) -> None:
    prompts = write(tmp_path, '{"id": "1", "prompt": "hi"}\n', "prompts.jsonl")
    config = write(
        tmp_path,
        MODELS
        + "  - name: other\n    model: embedded:smollm2-135m-instruct\n"
        + f"prompts: {prompts}\nstrategy: {{kind: ensemble}}\n",
    )
    result = cli.invoke(app, ["synthesize", str(config), "--output-dir", str(tmp_path / "r")])
    flat = " ".join(result.output.split())
    assert "'verifiable' scores constraints, and none of the 1 prompts" in flat
    assert flat.index("WARNING") < flat.index("engines would start here")
    judged = config.read_text(encoding="utf-8") + "reward: {kind: judge, model: other}\n"
    config.write_text(judged, encoding="utf-8")
    result = cli.invoke(app, ["synthesize", str(config), "--output-dir", str(tmp_path / "r")])
    flat = " ".join(result.output.split())
    assert "reward.model 'other' also generates: strategy.models is not set" in flat
    quiet = cli.invoke(
        app, ["--log-level", "error", "synthesize", str(config), "--output-dir", str(tmp_path)]
    )
    assert "WARNING" not in quiet.output


def test_a_bad_judge_template_is_refused_before_the_engines_start(
    cli: CliRunner, tmp_path: Path, no_engines: None
) -> None:
    template = write(tmp_path, "Rate {answer} for {user}", "judge.txt")
    config = write(
        tmp_path,
        UNSTARTABLE
        + "strategy: {kind: best_of_n, model: smollm2}\n"
        + f"reward: {{kind: judge, model: smollm2, template: {template}}}\n",
    )
    result = cli.invoke(app, ["synthesize", str(config), "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    one_error_line(result.output, "reward.template: ", "unknown field(s) {user}")
    assert "engines would start" not in result.output
