"""Fault 5: the disk fills up (or the output cannot be written) mid-run.

The run directory's writes go through two functions of engine/storage.py (`_append_bytes`
for JSONL records, `write_atomic` for whole files); `FullDisk` replaces them with ones
that behave as a disk with N bytes free: a write that does not fit writes what fits (a
torn line, as a real full disk leaves) and fails with ENOSPC. Space freed (a prompt's
journal deleted once it is committed) is not given back: the points where the disk
fills are fractions of what an uninterrupted run writes, journal included. The command
must stop with one clear line and exit status 2, leave the directory resumable, and once
space returns, `--resume` must end with exactly the records of an uninterrupted run."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from multisample.cli.app import app
from multisample.engine import storage
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.run import synthesize
from tests.engine.fake_openai import FakeOpenAIServer, server
from tests.reliability.helpers import (
    PAIRS,
    PROGRESS,
    SAMPLES,
    SUMMARY,
    all_but_latency,
    compare_records,
    pair_key,
    read_strict,
    sample_key,
    torn_files,
    write_config,
)
from tests.reliability.test_kill_resume import endpoint_settings

__all__ = ["server"]

PROMPTS = 12


class FullDisk:
    """The run directory's disk, with `free` bytes left (None: unlimited)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOSPC) -> None:
        self.free: int | None = None
        self.code = code
        self.failures = 0
        self.written = 0
        append, atomic = storage._append_bytes, storage.write_atomic

        def _append_bytes(path: Path, data: bytes, **options: bool) -> None:
            if self.free is not None and len(data) > self.free:
                append(path, data[: self.free], **options)  # what fits: a torn line
                self._fail(path)
            append(path, data, **options)
            self._spend(len(data))

        def write_atomic(path: Path, text: str) -> None:
            size = len(text.encode("utf-8"))
            if self.free is not None and size > self.free:
                self._fail(path)  # a temporary file that does not fit is removed
            atomic(path, text)
            self._spend(size)

        monkeypatch.setattr(storage, "_append_bytes", _append_bytes)
        monkeypatch.setattr(storage, "write_atomic", write_atomic)

    def _spend(self, size: int) -> None:
        self.written += size
        if self.free is not None:
            self.free -= size

    def _fail(self, path: Path) -> None:
        self.failures += 1
        self.free = 0
        raise OSError(self.code, os.strerror(self.code), str(path))


@pytest.fixture(scope="module")
def cli() -> Iterator[CliRunner]:
    yield CliRunner()


def run_size(run: Path) -> int:
    return sum(p.stat().st_size for p in run.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("at the start", errno.ENOSPC),
        ("a third of the way", errno.ENOSPC),
        ("two thirds of the way", errno.ENOSPC),
        ("at the summary", errno.ENOSPC),
        ("half way", errno.EROFS),
        ("half way", errno.EIO),
    ],
)
def test_full_disk_stops_clearly_and_resume_completes(
    server: FakeOpenAIServer,
    cli: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ledger: Any,
    where: str,
    code: int,
) -> None:
    settings = endpoint_settings(server, "served-disk", limit=PROMPTS, output_dir=str(tmp_path))
    config = write_config(tmp_path / "config.yaml", settings)
    reference = tmp_path / "reference"
    disk = FullDisk(monkeypatch, code)
    asyncio.run(synthesize(SynthesizeConfig.model_validate(settings), reference))
    whole = disk.written  # what the run wrote: its files, and journal lines since deleted
    assert whole > run_size(reference)
    summary_size = (reference / SUMMARY).stat().st_size

    disk.free = {
        "at the start": 0,
        "a third of the way": whole // 3,
        "two thirds of the way": 2 * whole // 3,
        "at the summary": whole - summary_size // 2,
    }.get(where, whole // 2)
    args = ["synthesize", str(config), "--name", "full"]
    failed = cli.invoke(app, args)

    run = tmp_path / "full"
    message = failed.output.strip().splitlines()[-1]  # after the progress bar
    assert failed.exit_code == 2, failed.output
    assert isinstance(failed.exception, SystemExit), failed.exception  # no traceback
    assert failed.output.count("error:") == 1 and message.startswith("error: "), failed.output
    assert os.strerror(code) in message and str(run) in message, message
    if where != "at the start":
        assert message.endswith("rerun with --resume"), message
    assert not (run / SUMMARY).exists()
    torn = torn_files(run)

    disk.free = None  # space returns
    resumed = cli.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    samples = compare_records(
        read_strict(run / SAMPLES), read_strict(reference / SAMPLES), sample_key, all_but_latency
    )
    pairs = compare_records(
        read_strict(run / PAIRS), read_strict(reference / PAIRS), pair_key, dict
    )
    ledger(
        scenario="disk_full",
        faults={f"{errno.errorcode[code]} {where}": disk.failures},
        runs_failed_clearly=1,
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected + pairs.expected,
        records_lost=samples.lost + pairs.lost,
        records_duplicated=samples.duplicated + pairs.duplicated,
        records_differing=samples.differing + pairs.differing,
        torn_files_repaired=torn,
    )
    # Searches in flight journal their generations on their own: several may meet the full
    # disk in the moment before the run stops (each fails alike; resume repairs them all).
    assert 1 <= disk.failures <= PROMPTS
    assert samples.equal, samples
    assert pairs.equal, pairs
    assert len(read_strict(run / PROGRESS)) == PROMPTS
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.parametrize("shape", ["run path is a file", "output dir is under a file"])
def test_unwritable_output_is_a_clear_error(
    server: FakeOpenAIServer, cli: CliRunner, tmp_path: Path, ledger: Any, shape: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory\n", encoding="utf-8")
    if shape == "run path is a file":
        output_dir, name = tmp_path, "blocker"
    else:
        output_dir, name = blocker / "runs", "run"
    settings = endpoint_settings(server, "served-unwritable", limit=2)
    config = write_config(tmp_path / "config.yaml", settings)
    result = cli.invoke(
        app, ["synthesize", str(config), "--name", name, "--output-dir", str(output_dir)]
    )
    message = result.output.strip().splitlines()[-1]
    ledger(scenario="unwritable_output", faults={shape: 1}, runs_failed_clearly=1)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert message == (
        f"error: {output_dir / name}: cannot write the run directory: "
        f"{blocker} is a file, not a directory"
    )
    assert result.output.count("error:") == 1
    assert blocker.read_text(encoding="utf-8") == "not a directory\n"  # untouched
