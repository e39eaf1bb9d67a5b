"""Where a run goes, one set of rules for every face: a run name is a folder name; a new
run without one is `<stem>-<UTC time>` (`-2`, `-3`... when that is taken); a resume names
the run by its name or its directory. `Target` is a run checked and ready to start; its
`launch` runs the job's traps and the job, and undoes what was written for a run that
never opened its directory.

Each face calls its options its own way (`--name` on the command line, `name=` in
Python): `Labels` says how, so that every message names what the user typed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from multisample.engine.config import ConfigError, PoolConfig
from multisample.engine.pool import ModelPool
from multisample.engine.storage import CONFIG
from multisample.engine.traps import warn
from multisample.jobs.registry import Job


@dataclass(frozen=True)
class Labels:
    """How a face calls the options that place a run, for its messages."""

    name: str
    output_dir: str
    run_dir: str
    """What names a run's directory, before the directory in messages."""
    resume: str
    resume_dir: str
    """How to resume a run by its directory."""


CLI = Labels("--name", "--output-dir", "--resume", "--resume", "--resume RUN_DIR")
API = Labels("name", "output_dir", "run_dir", "resume=True", "run_dir=RUN_DIR")


def check_run_name(name: str, labels: Labels) -> None:
    """A run name is a folder name: where it goes is the output directory's business."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if not name or name in {".", ".."} or any(s in name for s in separators):
        raise ConfigError(
            f"{labels.name} {name!r}: a run name is a folder name, not a path; give the "
            f"parent folder with {labels.output_dir}"
        )


def new_run_path(parent: Path, stem: str) -> Path:
    """A new run's directory under `parent`: `<stem>-<UTC time>`, numbered when two runs
    start within a second."""
    base = parent / f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    path, number = base, 1
    while path.exists():
        number += 1
        path = base.with_name(f"{base.name}-{number}")
    return path


def locate(
    parent: Path,
    stem: str,
    *,
    name: str | None,
    run_dir: Path | None,
    resume: bool,
    labels: Labels,
) -> Path:
    """The run directory: `run_dir`; or `name` under `parent`; or, for a new run, a new
    name there. A resume needs the run: its name or its directory."""
    if run_dir is not None:
        if name is not None and name != run_dir.name:
            raise ConfigError(
                f"{labels.run_dir} {run_dir} names another run than {labels.name} {name}; "
                "give one of them"
            )
        return run_dir
    if name is not None:
        check_run_name(name, labels)
        return parent / name
    if resume:
        raise ConfigError(
            f"{labels.resume} needs {labels.name} of the run to continue, or its directory: "
            f"{labels.resume_dir}"
        )
    return new_run_path(parent, stem)


@dataclass
class Target:
    """A run checked and ready to start: its job, config and directory, whether it
    resumes, and what was written for it before it started (undone if it never starts)."""

    job: Job
    config: PoolConfig
    path: Path
    resume: bool
    created: list[Path] = field(default_factory=list)
    """Folders made for it before it started, outermost first."""
    wrote: list[Path] = field(default_factory=list)
    """Files written for it before it started (its prompts from memory)."""

    def undo(self) -> None:
        """Remove what was written for a run that never opened its directory: the files
        this target wrote, then the folders it made, each only while it holds nothing
        (another run may have started in one meanwhile)."""
        if (self.path / CONFIG).exists():
            return  # the run began: its files are its records (and --resume's)
        for file in self.wrote:
            file.unlink(missing_ok=True)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty: what is in it is not this target's

    async def launch(
        self, *, console: Console | None = None, pool: ModelPool | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Warn about the config's traps, then run the job; return its summary. `extra`
        goes to the job's run coroutine (select's `ask`, `stdin`)."""
        try:
            warn(self.job.traps(self.config))
            return await self.job.run(
                self.config, self.path, resume=self.resume, console=console, pool=pool, **extra
            )
        except BaseException:
            self.undo()
            raise
