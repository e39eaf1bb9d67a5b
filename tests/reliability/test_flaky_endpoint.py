"""Fault 3: a flaky OpenAI-compatible endpoint (a real HTTP server on loopback) injects
timeouts, 429s with Retry-After, 500s and 503s, cut JSON, connections dropped mid-body and
slow streams. Within the configured retries the run completes with exactly the records of
a run against a healthy server; past them it stops with one clear line, exit status 2,
nothing of the failed prompt on disk, and `--resume` completes it once the server heals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.run import synthesize
from tests.engine.fake_openai import FakeOpenAIServer, Fault, server
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
    settle_session,
    start_cli,
    write_config,
)
from tests.reliability.test_kill_resume import endpoint_settings

__all__ = ["server"]

FLAKY = [
    Fault(429, {"Retry-After": "0.05"}, '{"error": {"message": "rate limited"}}'),
    Fault(500, body="internal error"),
    Fault(503, {"Retry-After": "0"}, '{"error": "overloaded"}'),
    Fault(hang_s=2.5),  # past the 1 s deadline: a timeout
    Fault(200, body='{"id": "x", "choices": [{"index": 0, "mess'),  # cut JSON
    Fault(truncate=True),  # connection dropped mid-body
    Fault(trickle_s=0.2),  # a slow stream, 1.6 s against the 1 s deadline
]
PROMPTS = 16
RETRIES = 4


def flaky_settings(server: FakeOpenAIServer, model: str, **overrides: Any) -> dict[str, Any]:
    settings = endpoint_settings(server, model, limit=PROMPTS, concurrency=4, **overrides)
    settings["models"][0].update(timeout_s=1.0, max_retries=RETRIES, backoff_s=0.02)
    return settings


async def test_faults_within_the_retry_limits_change_nothing(
    server: FakeOpenAIServer, tmp_path: Path, ledger: Any
) -> None:
    healthy = flaky_settings(server, "served-healthy")
    await synthesize(SynthesizeConfig.model_validate(healthy), tmp_path / "healthy")

    model = "served-flaky"
    # Up to RETRIES - 1 faults per request: many requests need retries, none runs out
    # (one spare retry, for a healthy answer that misses the deadline on a busy machine).
    server.make_chaos(model, rate=0.35, faults=FLAKY, max_per_request=RETRIES - 1, seed=3)
    flaky = flaky_settings(server, model)
    summary = await synthesize(SynthesizeConfig.model_validate(flaky), tmp_path / "flaky")

    injected = dict(server.injected[model])
    samples = compare_records(
        read_strict(tmp_path / "flaky" / SAMPLES),
        read_strict(tmp_path / "healthy" / SAMPLES),
        sample_key,
        all_but_latency,
    )
    pairs = compare_records(
        read_strict(tmp_path / "flaky" / PAIRS),
        read_strict(tmp_path / "healthy" / PAIRS),
        pair_key,
        dict,
    )
    events = summary["this_session"]["events"]["remote"]
    ledger(
        scenario="flaky_endpoint_within_retries",
        faults=injected,
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected + pairs.expected,
        records_lost=samples.lost + pairs.lost,
        records_duplicated=samples.duplicated + pairs.duplicated,
        records_differing=samples.differing + pairs.differing,
        retries_in_summary=events["retries"],
        failed_requests_in_summary=events["failed_requests"],
    )
    assert samples.equal, samples
    assert pairs.equal, pairs
    assert len(injected) == len(FLAKY), injected  # every kind of fault really happened
    # Every fault cost a retry, and the summary counts them.
    assert events["retries"] >= sum(injected.values()) and events["failed_requests"] == 0


async def test_retries_exhausted_fail_clearly_and_resume_completes(
    server: FakeOpenAIServer, tmp_path: Path, ledger: Any
) -> None:
    healthy = flaky_settings(server, "served-healthy-2", output_dir=str(tmp_path))
    await synthesize(SynthesizeConfig.model_validate(healthy), tmp_path / "healthy")

    model = "served-down"
    settings = flaky_settings(server, model, output_dir=str(tmp_path))
    config = write_config(tmp_path / "config.yaml", settings)
    prompts = read_strict(Path(__file__).parents[2] / "engine" / "data" / "tasks.jsonl")
    victim = prompts[5]  # every request of this prompt fails, past every retry
    server.poison(model, victim["prompt"][:40], Fault(503, body="maintenance"))

    log = tmp_path / "down.log"
    process = start_cli("synthesize", config, "--name", "down", "--output-dir", tmp_path, log=log)
    try:
        process.wait()
    finally:
        settle_session(process.pid)
    output = log.read_text(encoding="utf-8")
    run = tmp_path / "down"
    done = {r["prompt_id"] for r in read_strict(run / PROGRESS)}
    failed_output = output.strip().splitlines()
    assert process.returncode == 2, output
    assert "Traceback" not in output
    assert failed_output[-1].startswith("error: model 'remote': request to ")
    assert f"failed after {RETRIES + 1} attempts" in failed_output[-1]
    assert "HTTP 503: maintenance" in failed_output[-1]
    assert not (run / SUMMARY).exists()  # not complete, and it does not look complete
    assert victim["id"] not in done
    # Nothing of a prompt that was not committed is on disk as a finished record.
    assert {r["prompt_id"] for r in read_strict(run / SAMPLES)} <= done

    server.poisoned.pop(model)  # the server heals
    resumed = tmp_path / "resume.log"
    args = ("synthesize", config, "--name", "down", "--output-dir", tmp_path, "--resume")
    process = start_cli(*args, log=resumed)
    try:
        process.wait()
    finally:
        settle_session(process.pid)
    assert process.returncode == 0, resumed.read_text(encoding="utf-8")
    samples = compare_records(
        read_strict(run / SAMPLES),
        read_strict(tmp_path / "healthy" / SAMPLES),
        sample_key,
        all_but_latency,
    )
    summary = yaml.safe_load((run / SUMMARY).read_text(encoding="utf-8"))
    ledger(
        scenario="flaky_endpoint_retries_exhausted",
        faults={"http_503_every_attempt": server.injected[model]["http_503"]},
        runs_failed_clearly=1,
        runs_completed=1,
        prompts=PROMPTS,
        records_expected=samples.expected,
        records_lost=samples.lost,
        records_duplicated=samples.duplicated,
        records_differing=samples.differing,
    )
    assert samples.equal, samples
    assert summary["prompts"] == PROMPTS
