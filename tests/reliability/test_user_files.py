"""Nothing a user produced is lost or rewritten, and what a run commits is on the disk: a
failed start removes only what it made; a new run never starts among files that are not a
run's, and a resume repairs only the run's own records; a select run with any text in it
resumes; a prompt id of any length commits; files follow the umask and every commit is
flushed with its directory; the run lock works through a writable descriptor (as NFS
needs) and a sweep holds one."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import multisample
from multisample.bandits.select.state import ANSWERS, ROUNDS, STATE, SelectRun
from multisample.engine import locks, storage
from multisample.engine.backends.base import BackendError
from multisample.engine.config import RunConfig
from multisample.engine.pool import ModelPool
from multisample.engine.storage import (
    RunDirectory,
    RunDirectoryError,
    dumps_line,
    install_folder,
    read_jsonl,
    write_atomic,
)
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import SAMPLES, SynthesizeRun, tree_path
from multisample.search.synthesize.run import synthesize
from tests.search.test_sweep import toy_config
from tests.search.toy import ToyPool

ENDPOINT = {"name": "r", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


def config(**settings: Any) -> RunConfig:
    return RunConfig.model_validate({"models": [ENDPOINT], **settings})


# --- a failed start removes only what it made ---------------------------------------------


def test_a_failed_start_removes_only_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's output folder did not exist; while its engines start, another run begins
    in that folder; the start fails: the other run stays, with the folder."""
    out = tmp_path / "out"

    async def another_run_starts_meanwhile_then_ours_fails(self: ModelPool) -> None:
        (out / "theirs").mkdir()
        (out / "theirs" / "config.yaml").write_text("theirs\n")
        raise BackendError("the engine did not start")

    monkeypatch.setattr(ModelPool, "start", another_run_starts_meanwhile_then_ours_fails)
    with pytest.raises(BackendError):
        multisample.synthesize_sync(
            {"models": [ENDPOINT]}, prompts=["hi"], output_dir=str(out), name="ours"
        )
    assert (out / "theirs" / "config.yaml").read_text() == "theirs\n"
    assert sorted(p.name for p in out.iterdir()) == ["theirs"]  # ours, and only ours, is gone


# --- a new run never starts among other files, a resume repairs only its own -----------


def test_a_new_run_is_refused_in_a_folder_of_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "mine"}\n{"text": "also mine"}\n')
    with pytest.raises(RunDirectoryError, match=r"not a run directory .* and not empty"):
        SynthesizeRun.open(folder, config(), resume=False)
    assert (folder / "train.jsonl").read_text().count("mine") == 2
    assert sorted(p.name for p in folder.iterdir()) == ["train.jsonl"]  # nothing added
    SynthesizeRun.open(tmp_path / "new", config(), resume=False)  # a new folder is fine
    (tmp_path / "empty").mkdir()
    SynthesizeRun.open(tmp_path / "empty", config(), resume=False)  # an empty one too


def test_a_resume_repairs_only_the_runs_own_files(tmp_path: Path) -> None:
    run = SynthesizeRun.open(tmp_path / "run", config(), resume=False)
    run.commit_prompt("p1", {SAMPLES: [{"prompt_id": "p1", "id": 0}]})
    run.append(SAMPLES, [{"prompt_id": "p2", "id": 0}])  # not committed: dropped on resume
    mine = '{"text": "no prompt id"}\n{"text": "none here either"}\n'
    (run.path / "train.jsonl").write_text(mine)
    storage._release(run.path)  # as a process that ended
    SynthesizeRun.open(run.path, config(), resume=True)
    assert [r["prompt_id"] for r in read_jsonl(run.path / SAMPLES)] == ["p1"]
    assert (run.path / "train.jsonl").read_text() == mine


# --- a select run with any text resumes --------------------------------------------------------


def select_run(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "select"
    path.mkdir()
    (path / "config.yaml").write_text("x: 1\n")
    (path / STATE).write_text(json.dumps({"round": 1, "candidates": ["a", "b"]}))
    with (path / ANSWERS).open("w", encoding="utf-8") as handle:
        handle.writelines(dumps_line(r) for r in records)
    return path


def test_a_select_run_whose_answers_hold_a_lone_surrogate_resumes(tmp_path: Path) -> None:
    lone = "half of a pair: \ud800"
    path = select_run(tmp_path, [{"round": 1, "first_answer": lone}, {"round": 2}])
    SelectRun(path)._repair()
    assert list(read_jsonl(path / ANSWERS)) == [{"round": 1, "first_answer": lone}]


def test_a_select_record_without_its_round_is_one_line(tmp_path: Path) -> None:
    path = select_run(tmp_path, [{"round": 1}, {"query": "q"}])
    with pytest.raises(RunDirectoryError, match=r"answers\.jsonl:2: round: not a round number"):
        SelectRun(path)._repair()


def test_a_select_resume_removes_only_uncommitted_versions(tmp_path: Path) -> None:
    path = select_run(tmp_path, [{"round": 1}])
    state = json.loads((path / STATE).read_text())
    state["adapters"] = {"a": {"version": 1, "through": 1}}
    (path / STATE).write_text(json.dumps(state))
    candidate = path / "adapters" / "a"
    for folder in ("v1", "v2", "v2.partial", "merged", "notes"):
        (candidate / folder).mkdir(parents=True)
    (candidate / "README.txt").write_text("my notes")
    (path / ROUNDS).write_text(dumps_line({"round": 1}))
    SelectRun(path)._repair()
    assert sorted(p.name for p in candidate.iterdir()) == ["README.txt", "merged", "notes", "v1"]


# --- a prompt id of any length ----------------------------------------------------------------


async def test_a_prompt_id_too_long_for_a_file_name_commits(tmp_path: Path) -> None:
    long_id = "q" * 300 + "/é"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": long_id, "prompt": "Say hi."}) + "\n")
    config = SynthesizeConfig.model_validate(
        {
            "models": [{"name": "a", "model": "/no/such/model"}],
            "prompts": str(prompts),
            "budget": {"generations": 2},
            "reward": {"kind": "callable", "path": "tests.search.test_sweep:toy_reward"},
        }
    )
    summary = await synthesize(config, tmp_path / "run", pool=ToyPool())  # type: ignore[arg-type]
    assert summary["prompts"] == 1
    tree = tmp_path / "run" / tree_path(long_id)
    assert tree.exists() and len(tree.name.encode()) < 255
    assert tree_path("short id") == "trees/short%20id.json"  # short ids keep their names


# --- durability and permissions ---------------------------------------------------------------


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_files_follow_the_umask_and_their_directory_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_027: None
) -> None:
    synced: list[Path] = []
    real = storage.sync_directory
    monkeypatch.setattr(storage, "sync_directory", lambda p: (synced.append(p), real(p)))
    write_atomic(tmp_path / "summary.json", "{}\n")
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o640
    assert synced == [tmp_path]
    synced.clear()
    storage.append_records(tmp_path / "new.jsonl", [{"a": 1}])  # a new file: its name too
    storage.append_records(tmp_path / "new.jsonl", [{"a": 2}])  # appended: the file alone
    assert synced == [tmp_path]


def test_an_installed_folder_is_flushed_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = tmp_path / ".v1.partial"
    (partial / "sub").mkdir(parents=True)
    (partial / "adapter_model.safetensors").write_bytes(b"weights")
    (partial / "sub" / "x").write_bytes(b"x")
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))
    )
    install_folder(partial, tmp_path / "v1")
    assert (tmp_path / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"
    flushed = [Path(p).name for p in synced]
    assert {"adapter_model.safetensors", "x", "sub", ".v1.partial"} <= set(flushed)
    assert flushed[-1] == tmp_path.name  # the rename itself, last


# --- the lock --------------------------------------------------------------------------------


def test_the_lock_probe_works_where_a_read_only_descriptor_cannot_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS refuses an exclusive lock through a read-only descriptor (EBADF)."""
    real = fcntl.flock

    def nfs_flock(fd: int, operation: int) -> None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    path = tmp_path / ".lock"
    path.touch()
    assert locks.locked_elsewhere(path) is False


async def test_a_sweep_holds_one_lock_whatever_its_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multisample.search.sweep.run import sweep
    from multisample.search.synthesize.job import RunJob

    held: list[int] = []
    before = len(storage._HELD)  # what other tests of this process left held
    real = RunJob.search

    async def counting(self: RunJob, *args: Any) -> Any:
        held.append(len(storage._HELD))
        return await real(self, *args)

    monkeypatch.setattr(RunJob, "search", counting)
    await sweep(toy_config(), tmp_path / "s", pool=ToyPool())  # type: ignore[arg-type]
    assert held and set(held) == {before + 1}  # 12 cells, one lock: the sweep's


def test_a_run_directory_of_another_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    run = RunDirectory.open(tmp_path / "run", config(), resume=False)
    with pytest.raises(RunDirectoryError, match="already exists"):
        RunDirectory.open(run.path, config(), resume=False)
