"""`synthesize` end to end on the real embedded engines, and its failure modes."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from multisample.engine.pool import ModelPool
from multisample.engine.prompts import PromptsError
from multisample.engine.storage import PROGRESS, SUMMARY
from multisample.search.registry import STRATEGIES
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import PAIRS, SAMPLES
from multisample.search.synthesize.run import synthesize
from tests.conftest import embedded_pool_config

pytestmark = pytest.mark.engine

FAIL_ON: set[str] = set()
"""Prompt texts on which `flaky_reward` raises, to interrupt a run mid-way."""


def flaky_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    if prompt in FAIL_ON:
        raise RuntimeError("injected reward failure")
    return [len(set(r.split())) / 100 for r in responses]


def text_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """A reward in [0, 1) that ties only on equal texts (a hash), so that every prompt's
    samples make pairs; the embedded tasks' constraints often score all of them alike."""
    return [zlib.crc32(r.encode("utf-8")) / 2**32 for r in responses]


def config(**overrides: Any) -> SynthesizeConfig:
    base = embedded_pool_config().model_dump()
    base.update(
        {
            "limit": 4,
            "budget": {"generations": 4},
            "sampling": {"temperature": 0.8, "max_tokens": 48},
            "concurrency": 4,
        }
    )
    base.update(overrides)
    return SynthesizeConfig.model_validate(base)


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_ensemble_run_directory(pool: ModelPool, tmp_path: Path) -> None:
    import datasets

    run = tmp_path / "run"
    reward = {"kind": "callable", "path": "tests.search.test_synthesize:text_reward"}
    summary = await synthesize(config(strategy={"kind": "ensemble"}, reward=reward), run, pool=pool)
    samples = load(run / SAMPLES)
    pairs = load(run / PAIRS)
    assert len(samples) == 16 and summary["samples"] == 16 and summary["prompts"] == 4
    assert {s["model"] for s in samples} == {"smollm2", "gemma3"}
    for s in samples:
        assert s["action"] == "generate" and s["parents"] == [] and 0 <= s["reward"] <= 1
        assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0
    assert {p["prompt_id"] for p in pairs} == {s["prompt_id"] for s in samples}
    for p in pairs:
        assert p["chosen_reward"] > p["rejected_reward"]
        assert set(p) >= {"prompt", "chosen", "rejected", "prompt_id", "method"}
    assert summary["mean_reward_best"] >= summary["mean_reward_first_sample"]
    spend = summary["spend_per_model"]
    assert set(spend) == {"smollm2", "gemma3"}
    for model, params in (("smollm2", 134_515_008), ("gemma3", 268_098_176)):
        tokens = spend[model]["prompt_tokens"] + spend[model]["completion_tokens"]
        assert spend[model]["flops"] == pytest.approx(2 * params * tokens)
    assert (run / SUMMARY).exists() and len(list((run / "trees").glob("*.json"))) == 4
    # Loadable as datasets, TRL's DPO columns included.
    loaded = datasets.load_dataset("json", data_files=str(run / PAIRS), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    assert len(datasets.load_dataset("json", data_files=str(run / SAMPLES), split="train")) == 16


async def test_interrupted_run_resumes_to_the_uninterrupted_result(
    pool: ModelPool, tmp_path: Path
) -> None:
    from multisample.engine.prompts import load_prompts

    settings = config(
        limit=6,
        strategy={"kind": "best_of_n"},
        reward={"kind": "callable", "path": "tests.search.test_synthesize:flaky_reward"},
        concurrency=2,
    )
    clean = tmp_path / "clean"
    await synthesize(settings, clean, pool=pool)

    broken = tmp_path / "broken"
    FAIL_ON.add(load_prompts("embedded:tasks").prompts[4].prompt)
    try:
        with pytest.raises(RuntimeError, match="injected reward failure"):
            await synthesize(settings, broken, pool=pool)
    finally:
        FAIL_ON.clear()
    assert not (broken / SUMMARY).exists(), "an interrupted run must not look complete"
    done_before = {r["prompt_id"] for r in load(broken / PROGRESS)}
    assert 0 < len(done_before) < 6

    with pytest.raises(Exception, match="already exists"):
        await synthesize(settings, broken, pool=pool)  # no silent overwrite
    await synthesize(settings, broken, resume=True, pool=pool)

    # Same prompts, candidates and seeds. (Texts are not compared: requests batched
    # differently may differ in the last bits of the numerics, and so in a sampled token.)
    def key(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
        return sorted((r["prompt_id"], r["id"], r["seed"]) for r in rows)

    assert key(load(broken / SAMPLES)) == key(load(clean / SAMPLES))
    assert len(load(broken / PROGRESS)) == 6


async def test_beam_search_continues_partial_solutions_on_the_real_engine(
    pool: ModelPool, tmp_path: Path
) -> None:
    """Generated arithmetic, the step checker, beam search: each step is a real engine's
    continuation of its parent's text, stopped at the line's end."""
    settings = config(
        prompts={"generate": "arithmetic", "count": 2, "operations": "+-"},
        limit=None,
        strategy={"kind": "beam_search", "model": "smollm2", "beam_width": 2, "max_steps": 3},
        reward={"kind": "arithmetic_steps"},
        budget={"generations": 4},
    )
    summary = await synthesize(settings, tmp_path / "beam", pool=pool)
    samples = load(tmp_path / "beam" / SAMPLES)
    by_id = {(s["prompt_id"], s["id"]): s for s in samples}
    assert summary["prompts"] == 2
    assert len([s for s in samples if not s["partial"]]) == 8  # N = 4 solutions a prompt
    for s in samples:
        if s["partial"]:
            assert s["text"].endswith("\n") and s["text"].strip()
        for parent in s["parents"]:
            above = by_id[(s["prompt_id"], parent)]
            assert above["partial"] and s["text"].startswith(above["text"])
            assert len(s["text"]) > len(above["text"]) or not s["partial"]
        assert s["reward"] in (0.0, 1.0)  # the step checker's last step: right or wrong
        assert "answer" in s  # the prompts have reference answers
    assert any(s["parents"] for s in samples), "no solution was continued"


async def test_a_prompt_longer_than_the_context_fails_before_any_output(
    pool: ModelPool, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "ok", "prompt": "Hi."}, {"id": "huge", "prompt": "word " * 3000}]
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    with pytest.raises(PromptsError, match=r"prompts.jsonl:2: prompt 'huge' is \d+ tokens"):
        await synthesize(config(prompts=str(prompts), limit=None), run, pool=pool)
    assert not run.exists()


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_every_strategy_on_the_real_engines(
    pool: ModelPool, tmp_path: Path, kind: str
) -> None:
    strategy: dict[str, Any] = {"kind": kind}
    if kind in {"best_of_n", "prs", "majority", "weighted_best_of_n"}:
        strategy["model"] = "smollm2"
    if kind in {"beam_search", "dvts"}:
        strategy.update(model="smollm2", max_steps=3)
    settings = config(limit=2, strategy=strategy, budget={"generations": 5})
    summary = await synthesize(settings, tmp_path / kind, pool=pool)
    samples = load(tmp_path / kind / SAMPLES)
    assert summary["prompts"] == 2
    # The whole budget, feedback included, for each prompt; a step-level search's partial
    # solutions are not generations.
    assert len([s for s in samples if not s["partial"]]) == 10
    chosen = sum(s["selected"] for s in samples)
    # One answer a prompt; a vote has none to give when no sample has a final answer.
    assert chosen == 2 or (kind in {"majority", "weighted_best_of_n"} and chosen <= 2)
    for s in samples:
        assert s["strategy"] == kind and s["completion_tokens"] > 0
        assert (s["reward"] is None) == (s["action"] == "feedback")
    ids = {(s["prompt_id"], s["id"]) for s in samples}
    assert all((s["prompt_id"], p) in ids for s in samples for p in s["parents"])
