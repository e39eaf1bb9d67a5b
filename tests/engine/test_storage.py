"""engine/storage.py: the run directory, atomic writes and resume after a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from multisample.engine.storage import (
    CONFIG,
    PROGRESS,
    SUMMARY,
    RunDirectory,
    RunDirectoryError,
    check_run_directory,
    read_jsonl,
    write_atomic,
)


class Settings(BaseModel):
    """A run's config, as the commands' pydantic configs are."""

    model_config = ConfigDict(extra="forbid")
    strategy: str = "best_of_n"
    seed: int = 0
    sampling: dict[str, float] = {"temperature": 0.8}
    rounds: int | None = None


class Run(RunDirectory):
    """A run whose record files are those these tests write (a resume repairs them)."""

    RECORDS = ("samples.jsonl", "pairs.jsonl")


SETTINGS = Settings()
CONFIG_TEXT = "strategy: best_of_n\nseed: 0\nsampling:\n  temperature: 0.8\nrounds: null\n"


def sample(prompt_id: str, i: int, text: str = "") -> dict[str, Any]:
    return {"prompt_id": prompt_id, "id": i, "text": text or f"{prompt_id}-{i}"}


def commit(run: RunDirectory, prompt_id: str, n: int = 2) -> None:
    run.commit_prompt(
        prompt_id,
        {
            "samples.jsonl": [sample(prompt_id, i) for i in range(n)],
            "pairs.jsonl": [{"prompt_id": prompt_id, "chosen": "c", "rejected": "r"}],
        },
        {f"trees/{prompt_id}.json": {"nodes": [prompt_id], "edges": []}},
    )


def parse_lines(path: Path) -> list[dict[str, Any]]:
    """Every line must end with a newline and be valid JSON."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# --- open ------------------------------------------------------------------------------------


def test_open_creates_directory_and_config(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "first"
    run = Run.open(path, SETTINGS, resume=False)
    assert run.path == path
    assert path.is_dir()
    assert (path / CONFIG).read_text(encoding="utf-8") == CONFIG_TEXT
    assert run.completed() == set()
    assert not run.is_complete()
    assert temp_files(path) == []
    # Its record files exist from the start, so that a run without pairs has an empty
    # pairs.jsonl for a reader to load rather than none.
    assert [(path / name).read_bytes() for name in Run.RECORDS] == [b"", b""]


def test_a_resume_creates_the_record_files_a_run_does_not_have(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    (run.path / "pairs.jsonl").unlink()  # as a run from before they were created up front
    Run.open(run.path, SETTINGS, resume=True)
    assert (run.path / "pairs.jsonl").read_bytes() == b""
    assert [r["prompt_id"] for r in parse_lines(run.path / "samples.jsonl")] == ["p1", "p1"]


def test_open_existing_empty_directory(tmp_path: Path) -> None:
    Run.open(tmp_path, SETTINGS, resume=False)
    assert (tmp_path / CONFIG).read_text(encoding="utf-8") == CONFIG_TEXT


def test_open_again_without_resume_refuses(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    before = snapshot(run.path)
    with pytest.raises(RunDirectoryError, match="a run already exists here; pass --resume"):
        Run.open(run.path, SETTINGS, resume=False)
    with pytest.raises(RunDirectoryError):
        Run.open(run.path, Settings(seed=1), resume=False)
    assert snapshot(run.path) == before


def test_resume_with_different_config_refuses(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    run.append("samples.jsonl", [sample("p2", 0)])  # would be dropped by a repair
    before = snapshot(run.path)
    other = Settings(seed=1, sampling={"temperature": 0.7})
    with pytest.raises(RunDirectoryError, match="different config") as info:
        Run.open(run.path, other, resume=True)
    assert "(seed, sampling.temperature differ)" in str(info.value)
    assert str(run.path / CONFIG) in str(info.value)
    assert snapshot(run.path) == before


def test_a_resume_may_wait_longer_but_not_compute_otherwise(tmp_path: Path) -> None:
    """A sweep that timed out on a busy machine goes on with a longer request timeout."""
    from multisample.engine.config import PoolConfig

    models = [{"name": "m", "model": "/m"}]
    first = PoolConfig.model_validate({"models": models})
    run = Run.open(tmp_path / "r", first, resume=False)
    commit(run, "p1")
    patient = PoolConfig.model_validate({"models": models, "request_timeout_s": 3600})
    assert Run.open(run.path, patient, resume=True).completed() == {"p1"}
    other = PoolConfig.model_validate({"models": [{"name": "m", "model": "/other"}]})
    with pytest.raises(RunDirectoryError, match=r"models\[0\].model differ"):
        Run.open(run.path, other, resume=True)


def test_resume_of_a_run_from_before_a_field_was_added(tmp_path: Path) -> None:
    """Configs are compared parsed: a field a later version added, with its default, does
    not block resuming a run whose config.yaml predates it."""
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    (run.path / CONFIG).write_text("strategy: best_of_n\nseed: 0\n", encoding="utf-8")
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == {"p1"}
    assert (run.path / CONFIG).read_text(encoding="utf-8") == "strategy: best_of_n\nseed: 0\n"
    with pytest.raises(RunDirectoryError, match=r"\(seed differ\)"):
        Run.open(run.path, Settings(seed=2), resume=True)


@pytest.mark.parametrize(
    ("saved", "problem"),
    [
        ("strategy: [unclosed\n", "config.yaml:2: not valid YAML"),
        ("- a list\n", "expected a mapping"),
        ("strategy: best_of_n\nremoved_field: 1\n", "config.yaml:2: removed_field: Extra inputs"),
    ],
)
def test_resume_refuses_a_saved_config_that_does_not_load(
    tmp_path: Path, saved: str, problem: str
) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    (run.path / CONFIG).write_text(saved, encoding="utf-8")
    before = snapshot(run.path)
    with pytest.raises(RunDirectoryError, match="saved config does not load") as info:
        Run.open(run.path, SETTINGS, resume=True)
    assert problem in str(info.value)
    assert snapshot(run.path) == before


def test_resume_may_change_an_excluded_field(tmp_path: Path) -> None:
    """select leaves `rounds` out: a resumed run may raise it to play on."""
    run = Run.open(tmp_path / "r", Settings(rounds=3), resume=False, exclude={"rounds"})
    assert "rounds" not in (run.path / CONFIG).read_text(encoding="utf-8")
    Run.open(run.path, Settings(rounds=9), resume=True, exclude={"rounds"})
    with pytest.raises(RunDirectoryError, match="different config"):
        Run.open(run.path, Settings(rounds=9), resume=True)


def test_resume_of_new_directory_starts_it(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=True)
    assert (run.path / CONFIG).read_text(encoding="utf-8") == CONFIG_TEXT


def test_open_unwritable_path_raises_run_directory_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(RunDirectoryError, match="cannot write the run directory"):
        Run.open(blocker / "run", SETTINGS, resume=False)


# --- commit ----------------------------------------------------------------------------------


def test_commit_prompt_writes_records_trees_and_progress(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1", n=3)
    commit(run, "p2", n=1)
    samples = parse_lines(run.path / "samples.jsonl")
    assert samples == [sample("p1", 0), sample("p1", 1), sample("p1", 2), sample("p2", 0)]
    assert run.records("samples.jsonl") == samples
    assert [r["prompt_id"] for r in run.records("pairs.jsonl")] == ["p1", "p2"]
    assert parse_lines(run.path / PROGRESS) == [{"prompt_id": "p1"}, {"prompt_id": "p2"}]
    tree = json.loads((run.path / "trees" / "p1.json").read_text(encoding="utf-8"))
    assert tree == {"nodes": ["p1"], "edges": []}
    assert (run.path / "trees" / "p2.json").exists()
    assert run.completed() == {"p1", "p2"}
    assert temp_files(run.path) == []


def test_commit_with_no_records_still_marks_done(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    run.commit_prompt("empty", {"samples.jsonl": []})
    assert run.completed() == {"empty"}
    assert run.records("samples.jsonl") == []


def test_records_keep_unicode(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    run.commit_prompt("p", {"samples.jsonl": [sample("p", 0, "héllo ✓ 日本\nline")]})
    raw = (run.path / "samples.jsonl").read_text(encoding="utf-8")
    assert "héllo ✓ 日本" in raw  # ensure_ascii=False
    assert raw.count("\n") == 1  # the newline inside the text is escaped
    assert run.records("samples.jsonl")[0]["text"] == "héllo ✓ 日本\nline"


def test_records_of_missing_file(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    assert run.records("nothing.jsonl") == []


# --- resume and repair -----------------------------------------------------------------------


def test_resume_keeps_committed_prompts(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    commit(run, "p2")
    before = snapshot(run.path)
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == {"p1", "p2"}
    assert snapshot(run.path) == before  # nothing to repair: nothing rewritten


def test_resume_drops_records_of_uncommitted_prompt(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    # A crash after p2's samples were appended but before its progress line.
    run.append("samples.jsonl", [sample("p2", 0), sample("p2", 1)])
    run.append("pairs.jsonl", [{"prompt_id": "p2", "chosen": "c", "rejected": "r"}])
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == {"p1"}
    assert parse_lines(run.path / "samples.jsonl") == [sample("p1", 0), sample("p1", 1)]
    assert [r["prompt_id"] for r in parse_lines(run.path / "pairs.jsonl")] == ["p1"]
    assert parse_lines(run.path / PROGRESS) == [{"prompt_id": "p1"}]
    assert temp_files(run.path) == []
    # The prompt runs again and the run goes on cleanly.
    commit(resumed, "p2")
    assert resumed.completed() == {"p1", "p2"}
    assert [r["prompt_id"] for r in resumed.records("samples.jsonl")] == ["p1", "p1", "p2", "p2"]


def test_resume_drops_torn_last_line(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    run.append("samples.jsonl", [sample("p2", 0)])
    with (run.path / "samples.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"prompt_id": "p2", "id": 1, "te')  # killed mid-write
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == {"p1"}
    assert parse_lines(run.path / "samples.jsonl") == [sample("p1", 0), sample("p1", 1)]
    assert parse_lines(run.path / "pairs.jsonl") == [
        {"prompt_id": "p1", "chosen": "c", "rejected": "r"}
    ]


def test_resume_drops_torn_progress_line(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    commit(run, "p2")
    with (run.path / PROGRESS).open("a", encoding="utf-8") as handle:
        handle.write('{"prompt_id": "p')
    assert run.completed() == {"p1", "p2"}  # a torn line is skipped when read
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert parse_lines(run.path / PROGRESS) == [{"prompt_id": "p1"}, {"prompt_id": "p2"}]
    assert resumed.completed() == {"p1", "p2"}
    assert len(parse_lines(run.path / "samples.jsonl")) == 4


def test_resume_drops_torn_line_cut_inside_a_character(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    torn = json.dumps(sample("p2", 0, "é"), ensure_ascii=False).encode("utf-8")
    torn = torn[: torn.index("é".encode()) + 1]  # first byte of the two-byte 'é'
    with (run.path / "samples.jsonl").open("ab") as handle:
        handle.write(torn)
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == {"p1"}
    assert parse_lines(run.path / "samples.jsonl") == [sample("p1", 0), sample("p1", 1)]


def test_resume_drops_records_without_prompt_id(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    run.append("samples.jsonl", [{"stray": True}])
    Run.open(run.path, SETTINGS, resume=True)
    assert all(r["prompt_id"] == "p1" for r in parse_lines(run.path / "samples.jsonl"))


def test_resume_with_nothing_committed_empties_records(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    run.append("samples.jsonl", [sample("p1", 0)])
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert resumed.completed() == set()
    assert (run.path / "samples.jsonl").read_text(encoding="utf-8") == ""
    assert resumed.records("samples.jsonl") == []


def test_resume_deletes_old_summary(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    run.write_summary({"prompts": 1})
    assert run.is_complete()
    resumed = Run.open(run.path, SETTINGS, resume=True)
    assert not (run.path / SUMMARY).exists()
    assert not resumed.is_complete()
    assert resumed.completed() == {"p1"}


# --- summary and atomic writes ---------------------------------------------------------------


def test_write_summary_and_is_complete(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    assert not run.is_complete()
    summary = {"prompts": 2, "name": "día", "spend": {"flops": 1.5}}
    run.write_summary(summary)
    assert run.is_complete()
    text = (run.path / SUMMARY).read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert "día" in text
    assert json.loads(text) == summary
    run.write_summary({"prompts": 3})  # overwrite
    assert json.loads((run.path / SUMMARY).read_text(encoding="utf-8")) == {"prompts": 3}
    assert temp_files(run.path) == []


def test_write_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "doc.json"
    write_atomic(target, "first")
    assert target.read_text(encoding="utf-8") == "first"
    write_atomic(target, "second ✓")
    assert target.read_text(encoding="utf-8") == "second ✓"
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]


def test_write_atomic_failure_leaves_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "doc.txt"
    write_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "bad \ud800 surrogate")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt"]


def test_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert list(read_jsonl(path)) == []  # missing file
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n{"a": 3', encoding="utf-8")
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]


# --- one process at a time ------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from tests.engine.test_storage import SETTINGS, Run
Run.open(Path(sys.argv[1]), SETTINGS, resume=True)
print("holding", flush=True)
sys.stdin.read()  # hold it until killed (or until the test's process is gone)
"""


def test_a_run_another_process_is_using_is_refused_until_that_process_ends(
    tmp_path: Path,
) -> None:
    """The same --resume started twice would run the unfinished prompts twice."""
    import signal
    import subprocess
    import sys

    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    run.write_summary({})  # done with it: this process lets go
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        before = snapshot(run.path)
        for attempt in (check_run_directory, RunDirectory.open):
            with pytest.raises(RunDirectoryError, match="another multisample process"):
                attempt(run.path, SETTINGS, resume=True)
        assert snapshot(run.path) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    resumed = Run.open(run.path, SETTINGS, resume=True)  # the OS let go of it
    assert resumed.completed() == {"p1"}


def test_this_process_may_reopen_a_run_it_holds(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", SETTINGS, resume=False)
    commit(run, "p1")
    assert Run.open(run.path, SETTINGS, resume=True).completed() == {"p1"}


def test_a_place_where_no_directory_can_be_made_is_refused_up_front(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(RunDirectoryError, match="file is a file, not a directory"):
        check_run_directory(blocker / "runs" / "r", SETTINGS, resume=False)
