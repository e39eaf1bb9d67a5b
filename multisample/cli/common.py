"""What every command shares: one-line errors, the options that place a run (`--name`,
`--output-dir`, `--resume [RUN_DIR]`, `--set`), and the run of a job as every command runs
it (multisample.jobs: the config read, the run placed and checked, the job launched)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from multisample.engine.backends.base import BackendError
from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config
from multisample.engine.rewards.base import RewardError
from multisample.engine.storage import CONFIG, RunDirectoryError
from multisample.engine.terminal import STDERR, shown
from multisample.jobs.registry import Job
from multisample.jobs.targets import CLI, Target, locate

T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a user-facing error (no traceback) and exit non-zero."""
    STDERR.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: reported in one line, without a traceback."""
    from multisample.engine.embedded import EmbeddedModelError
    from multisample.engine.model_folders import ModelFolderError

    return (
        ConfigError,
        BackendError,
        RewardError,
        RunDirectoryError,
        EmbeddedModelError,
        ModelFolderError,
    )


def guarded(function: Callable[[], T]) -> T:
    """Run a command body; report user errors cleanly and keep Ctrl-C quiet."""
    try:
        return function()
    except user_errors() as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept (continue with --resume RUN_DIR)", code=130)
    except OSError as exc:
        fail(f"{getattr(exc, 'filename', None) or ''}: {exc.strerror or exc}".lstrip(": "))


# The options every run command shares (synthesize, sweep, select).
RunName = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Run name: a folder name under the output directory, not a path "
        "(default: config name + UTC time).",
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", help="Parent of the run directory (default: the config's)."),
]
Resume = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="RUN_DIR",
        help="Continue a stopped run where it stopped (nothing finished is redone): the "
        "run directory the command printed, or alone with --name.",
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="PATH=VALUE",
        help="Override a config value before it is checked, e.g. budget.generations=8 or "
        "models.smollm2.max_model_len=4096 (a list entry by index or name); VALUE is "
        "YAML. Repeatable.",
    ),
]


def bare_resume_as_empty(args: list[str]) -> list[str]:
    """`--resume` followed by nothing or by another option becomes `--resume=`: alone it
    means "the run --name" (run commands read the empty string that way)."""
    rewritten = []
    for index, arg in enumerate(args):
        if arg == "--":
            return rewritten + args[index:]
        follows = args[index + 1] if index + 1 < len(args) else None
        bare = arg == "--resume" and (follows is None or follows.startswith("-"))
        rewritten.append("--resume=" if bare else arg)
    return rewritten


def run_target(
    config: Path,
    output_dir: Path | None,
    default_output_dir: str | Path,
    name: str | None,
    resume: str | None,
) -> tuple[Path, bool]:
    """The run directory a command writes and whether it resumes it, from --output-dir,
    --name and --resume (None: not given; "": given alone; else the run directory, or a
    run's name under the output directory)."""
    parent = Path(output_dir if output_dir is not None else default_output_dir)
    run_dir = None
    if resume:
        given = Path(resume)
        run_dir = given if given.is_dir() or len(given.parts) != 1 else parent / given
        if not (run_dir / CONFIG).is_file():
            fail(f"--resume {resume}: not a run directory (no {run_dir / CONFIG})")
        if output_dir is not None and output_dir.resolve() != run_dir.resolve().parent:
            fail(f"--resume {resume} is not under --output-dir {output_dir}; give one of them")
    path = locate(
        parent, config.stem, name=name, run_dir=run_dir, resume=resume is not None, labels=CLI
    )
    return path, resume is not None


def run_job(
    job: Job,
    config: Path,
    name: str | None,
    output_dir: Path | None,
    resume: str | None,
    overrides: list[str] | None,
    updates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A run of `job` as every command runs it: the config file read with the `--set`
    overrides and the command's own options (`updates`), the run placed and checked,
    then launched; returns its summary, with `run_dir` added."""

    def body() -> dict[str, Any]:
        settings = load_config(config, job.config, overrides or ())
        if updates:
            settings = settings.model_copy(update=dict(updates))
        path, resuming = run_target(config, output_dir, settings.output_dir, name, resume)
        target = Target(job, settings, path, resuming)
        summary = asyncio.run(target.launch(console=STDERR))
        return {**summary, "run_dir": str(path)}

    return guarded(body)
