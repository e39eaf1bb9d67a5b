"""Resume mid-search: a search replayed from any prefix of its journal equals the
uninterrupted search, and only what the journal lacks goes to the engines."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from multisample.engine.config import BudgetConfig
from multisample.engine.journal import JOURNAL, Journal, file_name
from multisample.engine.storage import PROGRESS, SUMMARY, read_jsonl
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.search.base import SearchContext, SearchResult
from multisample.search.registry import STRATEGIES, run_strategy
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import PAIRS, SAMPLES
from multisample.search.synthesize.run import synthesize
from multisample.search.templates import load_templates
from tests.search.toy import ToyPool, ToyReward

PROMPT = Prompt(id="q/1 ✓", prompt="Say something.", reference="x")
MODELS = ("a", "b", "c")
GENERATIONS = BudgetConfig(generations=6)
TOKENS = BudgetConfig(generations=None, tokens=80)  # 15 tokens a generation: 6 of them

# Every strategy, and the variants whose calls run concurrently (ensemble's models, MoA's
# layers, TOA's plays in flight) or one by one under a token budget.
CASES: list[tuple[str, dict[str, Any], BudgetConfig]] = [
    *((kind, {}, GENERATIONS) for kind in sorted(STRATEGIES)),
    ("moa", {"layers_per_block": 2}, GENERATIONS),
    ("prs", {"feedback": False}, GENERATIONS),
    ("toa", {"plays_in_flight": 3}, GENERATIONS),
    ("ensemble", {}, TOKENS),
    ("moa", {}, TOKENS),
    ("prs", {}, TOKENS),
    ("toa", {"plays_in_flight": 2}, TOKENS),
    # Per-prompt normalization: decisions read the statistics of the rewards so far.
    ("toa", {"normalize": "zscore", "plays_in_flight": 2}, GENERATIONS),
    ("toa", {"normalize": "minmax"}, TOKENS),
]


def case_id(case: tuple[str, dict[str, Any], BudgetConfig]) -> str:
    kind, settings, budget = case
    extra = ",".join(f"{k}={v}" for k, v in settings.items())
    return f"{kind}[{extra}]-{'tokens' if budget.tokens else 'generations'}"


class Run:
    """One search of PROMPT with a journal in `run_path`, on a fresh toy pool and reward."""

    def __init__(self, run_path: Path, templates: dict[str, str] | None = None) -> None:
        self.pool = ToyPool(MODELS)
        self.reward = ToyReward()
        self.journal = Journal.open(run_path, ())
        self.templates = templates or load_templates()

    async def search(
        self, kind: str, settings: dict[str, Any], budget: BudgetConfig
    ) -> SearchResult:
        ctx = SearchContext(
            self.pool,  # type: ignore[arg-type]
            self.reward,
            SamplingSettings(),
            budget,
            seed=3,
            templates=self.templates,
            journal=self.journal,
        )
        settings_cls, _ = STRATEGIES[kind]
        return await run_strategy(PROMPT, ctx, settings_cls(**settings))

    @property
    def generations(self) -> int:
        return sum(size for _, size in self.pool.calls)


def journal_file(run_path: Path) -> Path:
    return run_path / JOURNAL / file_name(PROMPT.id)


def journal_lines(run_path: Path) -> list[bytes]:
    return journal_file(run_path).read_bytes().splitlines(keepends=True)


def kinds(lines: Sequence[bytes]) -> Counter[str]:
    return Counter(json.loads(line)["kind"] for line in lines)


def with_journal(run_path: Path, data: bytes) -> Path:
    journal_file(run_path).parent.mkdir(parents=True)
    journal_file(run_path).write_bytes(data)
    return run_path


def assert_same_search(resumed: SearchResult, full: SearchResult) -> None:
    assert resumed.sample_records() == full.sample_records()  # ids, parents, seeds, texts...
    assert resumed.tree_document() == full.tree_document()
    assert resumed.spend == full.spend


@pytest.mark.parametrize("case", CASES, ids=case_id)
async def test_resume_from_every_cut_point_equals_the_uninterrupted_search(
    case: tuple[str, dict[str, Any], BudgetConfig], tmp_path: Path
) -> None:
    full_run = Run(tmp_path / "full")
    full = await full_run.search(*case)
    header, *body = journal_lines(tmp_path / "full")
    assert kinds(body) == {"generation": full_run.generations, "reward": len(full.scored())}
    assert full_run.generations == len(full.candidates) == full.spend["generations"]

    for cut in range(len(body) + 1):
        # Killed after `cut` journal lines, then resumed.
        run_path = with_journal(tmp_path / f"cut{cut}", b"".join([header, *body[:cut]]))
        resumed_run = Run(run_path)
        resumed = await resumed_run.search(*case)
        kept = kinds(body[:cut])
        assert_same_search(resumed, full)
        # A recorded generation (or reward) is never made again; the rest are made once.
        assert resumed_run.generations == full_run.generations - kept["generation"], cut
        assert resumed_run.reward.calls == full_run.reward.calls - kept["reward"], cut
        assert resumed_run.journal.counts.replayed == kept["generation"]
        assert sorted(journal_lines(run_path)) == sorted([header, *body])  # none twice


@pytest.mark.parametrize("case", CASES, ids=case_id)
async def test_a_torn_last_journal_line_is_dropped_and_made_again(
    case: tuple[str, dict[str, Any], BudgetConfig], tmp_path: Path
) -> None:
    full_run = Run(tmp_path / "full")
    full = await full_run.search(*case)
    header, *body = journal_lines(tmp_path / "full")
    for cut, line in enumerate(body):
        for torn in (line[:1], line[: len(line) // 2], line[:-1]):  # killed mid-write
            run_path = with_journal(
                tmp_path / f"cut{cut}-{len(torn)}", header + b"".join(body[:cut]) + torn
            )
            resumed_run = Run(run_path)
            resumed = await resumed_run.search(*case)
            assert_same_search(resumed, full)
            assert resumed_run.generations == full_run.generations - kinds(body[:cut])["generation"]
            assert sorted(journal_lines(run_path)) == sorted([header, *body])


async def test_a_torn_header_or_an_empty_journal_starts_afresh(tmp_path: Path) -> None:
    case = ("refine", {}, GENERATIONS)
    full = await Run(tmp_path / "full").search(*case)
    header = journal_lines(tmp_path / "full")[0]
    for data in (b"", header[:10], header):
        run_path = with_journal(tmp_path / f"h{len(data)}", data)
        resumed_run = Run(run_path)
        assert_same_search(await resumed_run.search(*case), full)
        assert resumed_run.generations == 6


async def test_a_damaged_line_drops_it_and_the_lines_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    case = ("toa", {}, GENERATIONS)
    full = await Run(tmp_path / "full").search(*case)
    header, *body = journal_lines(tmp_path / "full")
    damaged = [*body[:4], b'{"kind": "generation", "id": \n', *body[4:]]
    run_path = with_journal(tmp_path / "damaged", b"".join([header, *damaged]))
    resumed_run = Run(run_path)
    assert_same_search(await resumed_run.search(*case), full)
    assert resumed_run.generations == 6 - kinds(body[:4])["generation"]
    assert "damaged journal line" in caplog.text
    assert sorted(journal_lines(run_path)) == sorted([header, *body])


async def test_a_line_made_for_another_request_is_never_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    case = ("refine", {}, GENERATIONS)
    full = await Run(tmp_path / "full").search(*case)
    header, *body = journal_lines(tmp_path / "full")
    records = [json.loads(line) for line in body]
    # The third generation's line claims another text for another request.
    third = next(r for r in records if r["kind"] == "generation" and r["id"] == 2)
    third.update(request="0" * 32, text="not what this request made")
    data = header + b"".join(json.dumps(r).encode() + b"\n" for r in records)
    resumed_run = Run(with_journal(tmp_path / "changed", data))
    assert_same_search(await resumed_run.search(*case), full)
    assert resumed_run.generations == 6 - 2  # ids 0 and 1 replayed; 2 onwards made again
    assert "made for another request" in caplog.text


async def test_a_changed_template_replays_only_the_requests_it_did_not_change(
    tmp_path: Path,
) -> None:
    # The journal of a run with the built-in refine template; resumed with another one,
    # the search equals an uninterrupted run with the new template: only the first
    # round's head (generated from the prompt alone) is replayed.
    case = ("refine", {}, GENERATIONS)
    await Run(tmp_path / "old").search(*case)
    other = {**load_templates(), "refine": "Improve this. {question} -> {answer}"}
    expected = await Run(tmp_path / "new", other).search(*case)
    run_path = with_journal(tmp_path / "resumed", journal_file(tmp_path / "old").read_bytes())
    resumed_run = Run(run_path, other)
    assert_same_search(await resumed_run.search(*case), expected)
    heads = [c.id for c in expected.candidates if c.action == "generate"]
    assert heads[:1] == [0] and resumed_run.journal.counts.replayed == 1
    assert resumed_run.generations == 5


async def test_a_changed_reward_rescores_but_keeps_the_generations(tmp_path: Path) -> None:
    case = ("best_of_n", {}, GENERATIONS)
    await Run(tmp_path / "old").search(*case)

    class OtherReward(ToyReward):
        name = "other"

    resumed_run = Run(
        with_journal(tmp_path / "resumed", journal_file(tmp_path / "old").read_bytes())
    )
    resumed_run.reward = OtherReward()
    result = await resumed_run.search(*case)
    assert resumed_run.generations == 0 and resumed_run.reward.calls == 6
    assert result.spend["reward_calls"] == 6


def test_journal_open_drops_committed_and_unreadable_files(tmp_path: Path) -> None:
    folder = tmp_path / JOURNAL
    folder.mkdir()
    header = {"kind": "journal", "version": 1}
    (folder / file_name("done")).write_text(json.dumps({**header, "prompt_id": "done"}) + "\n")
    (folder / file_name("open")).write_text(json.dumps({**header, "prompt_id": "open"}) + "\n")
    (folder / "future.jsonl").write_text(
        json.dumps({**header, "version": 99, "prompt_id": "x"}) + "\n"
    )
    (folder / "torn.jsonl").write_text('{"kind": "jour')
    Journal.open(tmp_path, {"done"})
    assert sorted(p.name for p in folder.iterdir()) == [file_name("open")]


# --- A whole run: killed (here: an engine failure) and resumed ----------------------------


async def toy_reward(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """The toy pool's texts are 'model|seed|...': reward = (seed mod 100) / 100."""
    return [int(r.split("|")[1]) % 100 / 100 for r in responses]


class FailingPool(ToyPool):
    """The toy pool, failing on call number `fail_on` (counted from 0)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__(("a", "b"))
        self.fail_on = fail_on
        self.attempts = 0

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.attempts += 1
        if self.attempts - 1 == self.fail_on:
            raise RuntimeError("engine lost")
        return await super().generate(model, requests)


def run_config(strategy: dict[str, Any]) -> SynthesizeConfig:
    return SynthesizeConfig.model_validate(
        {
            "models": [{"name": "a", "model": "/no/such/a"}, {"name": "b", "model": "/no/b"}],
            "limit": 5,
            "concurrency": 2,
            "strategy": strategy,
            "budget": {"generations": 6},
            "reward": {"kind": "callable", "path": "tests.search.test_resume:toy_reward"},
        }
    )


def records(run_path: Path) -> dict[str, Any]:
    trees = {p.name: p.read_text(encoding="utf-8") for p in (run_path / "trees").iterdir()}
    return {
        name: sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(run_path / name))
        for name in (SAMPLES, PAIRS, PROGRESS)
    } | {"trees": trees}


@pytest.mark.parametrize("strategy", [{"kind": "toa", "plays_in_flight": 2}, {"kind": "moa"}])
@pytest.mark.parametrize("fail_on", [3, 9, 14])
@pytest.mark.parametrize("journal_kept", [True, False])
async def test_a_run_stopped_mid_search_resumes_without_making_a_generation_twice(
    tmp_path: Path, strategy: dict[str, Any], fail_on: int, journal_kept: bool
) -> None:
    config = run_config(strategy)
    clean_pool = ToyPool(("a", "b"))
    await synthesize(config, tmp_path / "clean", pool=clean_pool)  # type: ignore[arg-type]
    clean = sum(size for _, size in clean_pool.calls)

    run_path = tmp_path / "run"
    broken = FailingPool(fail_on)
    with pytest.raises(RuntimeError, match="engine lost"):
        await synthesize(config, run_path, pool=broken)  # type: ignore[arg-type]
    made = sum(size for _, size in broken.calls)
    committed = len(list(read_jsonl(run_path / PROGRESS)))
    assert not (run_path / SUMMARY).exists() and committed < 5
    assert list((run_path / JOURNAL).iterdir()), "the failure should land mid-search"
    if not journal_kept:  # a run directory of an older version: no journal
        shutil.rmtree(run_path / JOURNAL)

    pool = ToyPool(("a", "b"))
    summary = await synthesize(config, run_path, resume=True, pool=pool)  # type: ignore[arg-type]
    resumed = sum(size for _, size in pool.calls)
    assert records(run_path) == records(tmp_path / "clean")
    assert not (run_path / JOURNAL).exists()
    assert summary["this_session"]["generations"] == resumed
    if journal_kept:
        # Every generation made before the failure was kept: none was made twice.
        assert resumed == clean - made
        assert summary["this_session"]["generations_replayed"] == made - 6 * committed
    else:
        # As before the journal: the unfinished prompts ran again from their start.
        assert resumed == 6 * (5 - committed)
        assert summary["this_session"]["generations_replayed"] == 0
