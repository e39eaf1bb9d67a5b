"""Fault 1: the process is killed (SIGKILL, whole process group) at random moments, several
times; `--resume` finishes the run, and the final records equal those of an uninterrupted
run: no prompt lost, none duplicated, no torn line.

The model here is an OpenAI-compatible endpoint on loopback whose answers depend only on
each request's seed, so that every field of every record (texts, rewards, pairs) must come
out equal, and a process starts in seconds, so the run can be killed many times. The same
fault against the real vLLM engines is in test_engine_faults.py.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

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
    kill_and_resume,
    pair_key,
    read_strict,
    sample_key,
    write_config,
)

__all__ = ["server"]  # the loopback OpenAI-compatible server fixture

KILLS = 5
PROMPTS = 40


def endpoint_settings(server: FakeOpenAIServer, model: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "models": [
            {
                "name": "remote",
                "backend": "openai",
                "model": model,
                "base_url": server.base_url,
                "backoff_s": 0.01,
            }
        ],
        "prompts": "embedded:tasks",
        "limit": PROMPTS,
        "strategy": {"kind": "best_of_n"},
        "budget": {"generations": 4},
        "sampling": {"max_tokens": 32},
        "reward": {"kind": "callable", "path": "tests.reliability.helpers:seed_reward"},
        "concurrency": 2,
        "seed": 7,
    }
    settings.update(overrides)
    return settings


async def test_sigkill_at_random_moments_then_resume_loses_nothing(
    server: FakeOpenAIServer, tmp_path: Path, ledger: Any
) -> None:
    model = "served-sigkill"
    # About 8 prompts committed per second, a kill at most 0.6 s after an attempt's first
    # commit: each attempt commits fewer than 6 prompts, and 5 kills fit in 40 prompts.
    server.delay_s[model] = 0.25
    settings = endpoint_settings(server, model, output_dir=str(tmp_path))
    config = write_config(tmp_path / "config.yaml", settings)

    reference = tmp_path / "reference"
    await synthesize(SynthesizeConfig.model_validate(settings), reference)

    report = kill_and_resume(
        config,
        "killed",
        tmp_path,
        kills=KILLS,
        rng=random.Random(20261125),
        max_delay_s=0.6,
    )
    run = tmp_path / "killed"
    samples = compare_records(
        read_strict(run / SAMPLES), read_strict(reference / SAMPLES), sample_key, all_but_latency
    )
    pairs = compare_records(
        read_strict(run / PAIRS), read_strict(reference / PAIRS), pair_key, dict
    )
    progress = read_strict(run / PROGRESS)
    ledger(
        scenario="sigkill_resume_endpoint",
        faults={"sigkill": report.kills},
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected + pairs.expected,
        records_lost=samples.lost + pairs.lost,
        records_duplicated=samples.duplicated + pairs.duplicated,
        records_differing=samples.differing + pairs.differing,
        torn_files_repaired=report.torn_files_seen,
        temp_files_removed=report.temp_files_seen,
    )
    assert report.kills == KILLS, "the run finished before every kill: make it longer"
    assert samples.equal, samples
    assert pairs.equal and pairs.expected > PROMPTS, pairs
    assert sorted(p["prompt_id"] for p in progress) == sorted({p["prompt_id"] for p in progress})
    assert len(progress) == PROMPTS
    assert (run / SUMMARY).exists() and not list(run.rglob(".*.tmp"))
    assert len(list((run / "trees").glob("*.json"))) == PROMPTS
