"""The public Python API (`import multisample`), used as a user would: the README's
example run as a script, a pool shared by runs, prompts from memory, configs from code,
results returned, and the synchronous calls inside a running event loop (a notebook).

The model is the loopback OpenAI-compatible server (tests/engine/fake_openai.py): a real
backend over HTTP, so the whole path runs without starting vLLM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import multisample
from multisample.api.loop import library_loop
from multisample.engine.storage import CONFIG, SUMMARY
from multisample.jobs.inputs import PROMPTS_FILE, prompts_path
from tests.engine.fake_openai import FakeOpenAIServer, server

__all__ = ["server"]  # the module-scoped loopback server fixture

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MODELS_IN_README = re.compile(r"^models = \[\n(?:    .*\n)+?\]\n", re.MULTILINE)


def readme_example() -> str:
    """The first python block of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def endpoint_models(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    """The README's two models (same names and prompt formats), served by the fake."""
    common = {"backend": "openai", "base_url": server.base_url, "backoff_s": 0.01}
    return [
        {"name": "smollm2", "model": "api-smollm2", **common},
        {"name": "gemma3", "model": "api-gemma3", "prompt_format": "base", **common},
    ]


def on_endpoint(code: str, server: FakeOpenAIServer) -> str:
    """`code` with its `models = [...]` assignment replaced by the endpoint's models."""
    found = MODELS_IN_README.findall(code)
    assert len(found) == 1, "the README example must define `models = [...]` exactly once"
    return code.replace(found[0], f"models = {endpoint_models(server)!r}\n")


def run_script(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter, as a user's script, importing this checkout."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


PROMPTS = [
    {"id": "sky", "prompt": "Explain the sky.", "constraints": [{"kind": "max_words", "n": 4}]},
    {"id": "low", "prompt": "say hi", "constraints": [{"kind": "all_lowercase"}]},
]


def pool_settings(server: FakeOpenAIServer) -> dict[str, Any]:
    return {"models": endpoint_models(server)}


# --- the README example -------------------------------------------------------------


def test_the_readme_example_runs_as_a_script(server: FakeOpenAIServer, tmp_path: Path) -> None:
    result = run_script(on_endpoint(readme_example(), server), tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    runs = sorted((tmp_path / "runs").iterdir())
    # synthesize (named after its strategy), the sweep and select: each complete
    assert [p.name.split("-")[0] for p in runs] == ["select", "sweep", "toa"]
    assert all((p / SUMMARY).exists() for p in runs)
    toa = runs[2]
    samples = (toa / "samples.jsonl").read_text().splitlines()
    assert f"{toa.relative_to(tmp_path)} {len(samples)} samples," in out
    assert len(samples) == 2 * 4  # two prompts, four generations each
    assert "best candidate: " in out and "best_reward" in out
    # the in-memory prompts became the run's prompts file, named by its config
    config = yaml.safe_load((toa / CONFIG).read_text())
    assert Path(config["prompts"]) == (toa / "inputs" / PROMPTS_FILE).resolve()
    assert [json.loads(x)["id"] for x in Path(config["prompts"]).read_text().splitlines()] == [
        "sky",
        "sleep",
    ]
    # one pool for all three runs: every request reached the one endpoint
    assert server.requests["api-smollm2"] and server.requests["api-gemma3"]


@pytest.mark.engine
def test_the_readme_example_runs_on_the_embedded_models(
    embedded_models: dict[str, Path], tmp_path: Path
) -> None:
    """The example unchanged, on the real engines (started by the script itself)."""
    result = run_script(readme_example(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "best candidate: " in result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 3


# --- a notebook: synchronous calls inside a running event loop ----------------------


async def test_sync_calls_work_inside_a_running_event_loop(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    asyncio.get_running_loop()  # as in a Jupyter cell, where asyncio.run fails:
    waiting = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        asyncio.run(waiting)
    waiting.close()
    pool = multisample.Pool(pool_settings(server)).start_sync()
    try:
        engine_pool = pool.model_pool
        first = multisample.synthesize_sync(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "one", budget={"generations": 2}
        )
        # The same started pool, awaited from this (another) loop, runs on its own loop.
        second = await multisample.synthesize(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "two", budget={"generations": 2}
        )
        assert pool.model_pool is engine_pool  # started once, never restarted
        assert first.summary["samples"] == second.summary["samples"] == 4
        # The same samples (prompts finish in either order: their records follow it).
        assert sorted((s["prompt_id"], s["id"], s["text"]) for s in first.samples) == sorted(
            (s["prompt_id"], s["id"], s["text"]) for s in second.samples
        )
        assert multisample.run_sync(asyncio.sleep(0, "done")) == "done"
    finally:
        pool.close_sync()
    assert not pool.started


async def test_an_awaited_pool_serves_sync_runs(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A pool started with `await` lives on the library's loop too, so a synchronous call
    from this loop's thread (which then blocks) still reaches it: no deadlock."""
    async with multisample.Pool(pool_settings(server)) as pool:
        result = multisample.synthesize_sync(
            prompts=["hi"], pool=pool, run_dir=tmp_path / "run", budget={"generations": 1}
        )
    assert result.summary["samples"] == 1 and not pool.started


NOTEBOOK = """
import atexit
atexit.register(lambda: print("closed at exit:", not pool.started))  # runs after multisample's
import asyncio, multisample

async def notebook():  # each statement a cell of a notebook, whose loop is running
    pool = multisample.Pool({"models": MODELS}).start_sync()
    run = multisample.synthesize_sync(prompts=["hi", "ho"], pool=pool, budget={"generations": 2})
    again = await multisample.synthesize(prompts=["hi", "ho"], pool=pool, budget={"generations": 2})
    print(len(run.samples), len(again.samples), run.path != again.path)
    return pool

pool = asyncio.run(notebook())
print("open at exit:", pool.started)
"""


def test_a_notebook_session_in_a_fresh_interpreter_exits_with_its_pool_closed(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """Cells in a running loop, then the kernel exits without closing the pool: exit
    closes it (the endpoint's HTTP client here; Ray's engines on vLLM) and returns."""
    code = NOTEBOOK.replace("MODELS", repr(endpoint_models(server)))
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["4 4 True", "open at exit: True", "closed at exit: True"]
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_run_sync_refuses_the_library_loop_itself() -> None:
    async def nested() -> None:
        multisample.run_sync(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="own event loop"):
        multisample.run_sync(nested())


@pytest.mark.parametrize("to", ["main thread", "another thread"])
def test_ctrl_c_cancels_the_coroutine_and_waits_for_it_to_unwind(
    to: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may hand a terminal's Ctrl-C to any thread; Python runs the handler in
    the main thread only when that thread's wait wakes up. Sent to another thread, the
    old wait (one `future.result()`) hung until the run ended, here never."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    unwound: list[bool] = []
    running = threading.Event()  # the coroutine has started on the library's loop
    waiting = threading.Event()  # run_sync waits for its result, where Ctrl-C is handled

    async def forever() -> None:
        try:
            running.set()
            await asyncio.Event().wait()  # only a cancellation ends it
        finally:
            await asyncio.sleep(0.05)  # cleanup that takes a moment (a run's)
            unwound.append(True)

    wait = concurrent.futures.wait

    def wait_and_tell(*args: Any, **kwargs: Any) -> Any:
        waiting.set()
        return wait(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "wait", wait_and_tell)

    def interrupt() -> None:  # Ctrl-C once the coroutine runs and run_sync waits for it
        running.wait()
        waiting.wait()
        target = threading.main_thread() if to == "main thread" else threading.current_thread()
        assert target.ident is not None
        signal.pthread_kill(target.ident, signal.SIGINT)

    # Python's own Ctrl-C handler, also where the shell that started the tests ignores
    # SIGINT (a background job): the signal would otherwise never arrive.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            multisample.run_sync(forever())
    finally:
        signal.signal(signal.SIGINT, before)
    sender.join()
    assert unwound == [True]


# --- a pool shared by runs -----------------------------------------------------------


def test_one_pool_serves_synthesize_sweep_and_select(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    with multisample.Pool(pool_settings(server)) as pool:
        engine_pool = pool.model_pool
        run = multisample.synthesize_sync(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "s", budget={"generations": 2}
        )
        swept = multisample.sweep_sync(
            prompts=PROMPTS,
            pool=pool,
            run_dir=tmp_path / "w",
            methods=[{"name": "bon", "strategy": {"kind": "best_of_n"}}],
            budgets=[1, 2],
        )
        chosen = multisample.select_sync(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "c", rounds=2, batch=2
        )
        assert pool.model_pool is engine_pool
    # The runs' configs took the pool's models.
    for path in ("s", "w", "c"):
        saved = yaml.safe_load((tmp_path / path / CONFIG).read_text())
        assert saved["models"] == pool.config.model_dump(mode="json")["models"]
    assert run.summary["samples"] == len(run.samples) == 4
    assert swept.summary["cells"] == len(swept.table) == 2
    assert swept.cells == ["bon-b1-s0", "bon-b2-s0"]
    assert len(swept.cell("bon-b2-s0").samples) == 4
    assert swept.report.startswith("# Sweep w")
    assert chosen.summary["rounds"] == len(chosen.rounds) == 2
    assert len(chosen.answers) == 4
    assert chosen.summary["best"] in {"smollm2", "gemma3"}


def test_a_pool_that_is_not_started_is_refused_before_anything_is_written(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    pool = multisample.Pool(pool_settings(server))
    with pytest.raises(multisample.PoolNotStartedError, match="not started"):
        multisample.synthesize_sync(prompts=["hi"], pool=pool, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_config_must_run_on_the_pools_models(server: FakeOpenAIServer, tmp_path: Path) -> None:
    other = endpoint_models(server)[:1]
    with (
        multisample.Pool(pool_settings(server)) as pool,
        pytest.raises(multisample.ConfigError, match="not the pool's models"),
    ):
        multisample.synthesize_sync(
            {"models": other}, prompts=["hi"], pool=pool, run_dir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


def test_a_pool_reads_the_models_of_a_run_config_file() -> None:
    pool = multisample.Pool(ROOT / "configs" / "demo.yaml")
    assert pool.names == ["smollm2", "gemma3"] and not pool.started
    assert repr(pool) == "Pool(smollm2, gemma3; not started)"
    with pytest.raises(multisample.ConfigError, match=r"config: models\[0\]\.name"):
        multisample.Pool({"models": [{"name": "bad name", "model": "x"}]})


def test_without_a_pool_a_run_starts_and_stops_its_own(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    result = multisample.synthesize_sync(
        pool_settings(server), prompts=["hi"], run_dir=tmp_path / "run", budget={"generations": 3}
    )
    assert result.summary["samples"] == 3


# --- prompts from memory -------------------------------------------------------------


def test_prompts_from_texts_dicts_prompts_and_tables_become_the_runs_file(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    given = [
        "plain text",
        {"prompt": "a dict without id", "reference": "ref"},
        multisample.Prompt(id="p", prompt="a Prompt", constraints=({"kind": "no_commas"},)),
    ]
    expected = [
        {"prompt": "plain text", "id": "0"},
        {"prompt": "a dict without id", "reference": "ref", "id": "1"},
        {"id": "p", "prompt": "a Prompt", "constraints": [{"kind": "no_commas"}]},
    ]
    table = [
        {"id": "a", "prompt": "one", "constraints": [{"kind": "max_words", "n": 3}]},
        {"id": "b", "prompt": "two", "constraints": [{"kind": "no_commas"}]},
    ]
    # Arrow gives every constraint every key (b's gets n: None); a missing value is absent.
    tables = {
        "list": (given, expected),
        "dataset": (datasets.Dataset.from_list(table), table),
        "frame": (pd.DataFrame([{"id": "x", "prompt": "y", "reference": float("nan")}]), None),
    }
    with multisample.Pool(pool_settings(server)) as pool:
        for label, (source, records) in tables.items():
            run = multisample.synthesize_sync(
                prompts=source, pool=pool, run_dir=tmp_path / label, budget={"generations": 1}
            )
            written = [json.loads(x) for x in prompts_path(run.path).read_text().splitlines()]
            assert written == (records or [{"id": "x", "prompt": "y"}]), label
            assert {s["prompt_id"] for s in run.samples} == {r["id"] for r in written}


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "prompts: no prompts given"),
        (["ok", "   "], r"prompts\[1\]: prompt: is blank"),
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], r"prompts\[1\]: duplicate id"),
        ([{"prompt": ["x"]}], r"prompts\[0\]: prompt: Input should be a valid string"),
        ([{"prompt": "x", "constraints": [{"kind": "nope"}]}], r"prompts\[0\]: "),
        ([42], r"prompts\[0\]: expected a text, a dict or a Prompt, got int"),
        ({"id": "a", "prompt": "x"}, "got one mapping"),
    ],
)
def test_bad_prompts_name_their_index_and_nothing_is_written(
    prompts: Any, message: str, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    with pytest.raises(multisample.PromptsError, match=message):
        multisample.synthesize_sync(
            pool_settings(server), prompts=prompts, run_dir=tmp_path / "runs" / "run"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_resume_takes_the_same_prompts_and_refuses_others(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    with multisample.Pool(pool_settings(server)) as pool:
        first = multisample.synthesize_sync(
            prompts=PROMPTS, pool=pool, name="r", output_dir=tmp_path
        )
        again = multisample.synthesize_sync(
            prompts=PROMPTS, pool=pool, name="r", output_dir=tmp_path, resume=True
        )
        assert again.samples == first.samples
        with pytest.raises(multisample.PromptsError, match="other prompts than the run"):
            multisample.synthesize_sync(
                prompts=PROMPTS[:1], pool=pool, name="r", output_dir=tmp_path, resume=True
            )
        with pytest.raises(Exception, match="a run already exists here"):
            multisample.synthesize_sync(prompts=PROMPTS, pool=pool, name="r", output_dir=tmp_path)
    assert prompts_path(first.path).read_text().count("\n") == 2


def test_a_run_refused_after_its_prompts_were_written_leaves_nothing(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """check_models runs inside the internal synthesize, after the prompts file is
    written: the file goes again."""
    with (
        multisample.Pool(pool_settings(server)) as pool,
        pytest.raises(multisample.ConfigError, match="no model named 'ghost'"),
    ):
        multisample.synthesize_sync(
            prompts=["hi"],
            pool=pool,
            run_dir=tmp_path / "out" / "run",
            strategy={"kind": "best_of_n", "model": "ghost"},
        )
    assert list(tmp_path.iterdir()) == []


# --- configs from code ---------------------------------------------------------------


def test_configs_from_a_file_a_dict_or_a_model_with_keyword_settings_and_overrides(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    settings = {**pool_settings(server), "strategy": {"kind": "ensemble"}, "seed": 3}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    model = multisample.SynthesizeConfig.model_validate(settings)
    runs = []
    for number, source in enumerate([path, settings, model]):
        runs.append(
            multisample.synthesize_sync(
                source,
                prompts=["hi"],
                run_dir=tmp_path / f"run{number}",
                strategy={"kind": "best_of_n"},
                overrides=["budget.generations=2"],
            )
        )
    for run in runs:
        saved = yaml.safe_load((run.path / CONFIG).read_text())
        assert saved["strategy"]["kind"] == "best_of_n" and saved["seed"] == 3
        assert saved["budget"]["generations"] == 2
    made = [[(s["seed"], s["text"]) for s in run.samples] for run in runs]
    assert made[0] == made[1] == made[2] and len(made[0]) == 2
    assert settings["strategy"] == {"kind": "ensemble"}  # the caller's dict is left alone


def test_a_bad_setting_names_its_field_and_nothing_is_written(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(pool_settings(server)))
    cases = [
        (pool_settings(server), {"budget": {"generations": 0}}, r"config: budget\.generations"),
        (path, {"strategy": {"kind": "nope"}}, rf"{re.escape(str(path))}(:\d+)?: strategy"),
    ]
    for source, settings, message in cases:
        with pytest.raises(multisample.ConfigError, match=message):
            multisample.synthesize_sync(
                source, prompts=["hi"], run_dir=tmp_path / "run", **settings
            )
    with pytest.raises(multisample.ConfigError, match="a folder name, not a path"):
        multisample.synthesize_sync(pool_settings(server), prompts=["hi"], name="../x")
    with pytest.raises(multisample.ConfigError, match="needs name of the run to continue"):
        multisample.synthesize_sync(pool_settings(server), prompts=["hi"], resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_new_runs_get_distinct_names_under_the_output_dir(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    with multisample.Pool(pool_settings(server)) as pool:
        paths = [
            multisample.synthesize_sync(
                prompts=["hi"], pool=pool, output_dir=str(tmp_path), budget={"generations": 1}
            ).path
            for _ in range(2)
        ]
    assert paths[0] != paths[1] and all(p.parent == tmp_path for p in paths)
    assert all(p.name.startswith("best_of_n-") for p in paths)


# --- results -------------------------------------------------------------------------


def test_results_as_datasets(server: FakeOpenAIServer, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with multisample.Pool(pool_settings(server)) as pool:
        run = multisample.synthesize_sync(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "s", budget={"generations": 4}
        )
        chosen = multisample.select_sync(
            prompts=PROMPTS, pool=pool, run_dir=tmp_path / "c", rounds=1, batch=2
        )
    samples = run.to_dataset()
    assert samples.num_rows == len(run.samples) == 8
    assert samples["text"] == [s["text"] for s in run.samples]
    best = run.to_dataset("best")
    assert best.num_rows == 2 and sorted(best["prompt_id"]) == ["low", "sky"]  # commit order
    assert run.to_dataset("pairs").num_rows == len(run.pairs)
    assert chosen.to_dataset("rounds").num_rows == 1
    assert chosen.to_dataset().num_rows == 2
    with pytest.raises(ValueError, match="no table 'nope'"):
        run.to_dataset("nope")
    assert multisample.RunResult.load(run.path) == run


def test_best_takes_each_prompts_highest_reward(tmp_path: Path) -> None:
    samples = [
        {"prompt_id": "a", "reward": 0.5, "id": 0},
        {"prompt_id": "a", "reward": 0.9, "id": 1},
        {"prompt_id": "a", "reward": 0.9, "id": 2},
        {"prompt_id": "b", "reward": None, "id": 0},
        {"prompt_id": "b", "reward": 0.1, "id": 1},
    ]
    result = multisample.RunResult(tmp_path, {}, samples, [])
    assert [(s["prompt_id"], s["id"]) for s in result.best()] == [("a", 1), ("b", 1)]


# --- the package ---------------------------------------------------------------------


def test_a_users_own_modules_named_like_the_parts_change_nothing(tmp_path: Path) -> None:
    """The parts install as multisample.engine, .search and .bandits: a user's own
    `search.py`, `engine/` or `bandits/` beside their script is theirs, and ours load."""
    (tmp_path / "search.py").write_text("raise ImportError('the user module was imported')\n")
    for name in ("engine", "bandits"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user package')\n")
    code = (
        "import multisample, multisample.engine.pool, multisample.bandits.select.loop\n"
        "from multisample.search.registry import STRATEGIES\n"
        "print(multisample.synthesize_sync.__name__, sorted(STRATEGIES)[0])"
    )
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["synthesize_sync", "beam_search"]


def test_the_public_names(tmp_path: Path) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", multisample.__version__)
    for name in multisample.__all__:
        assert getattr(multisample, name) is not None, name
    assert multisample.synthesize_sync.__name__ == "synthesize_sync"
    assert "synchronous" in (multisample.synthesize_sync.__doc__ or "")
    assert library_loop() is library_loop()


def test_the_api_package_passes_the_security_scan_of_the_internal_ones() -> None:
    """tests/reliability/test_security.py scans engine, search and bandits; the same
    scan over multisample/ (no eval, pickle, unsafe YAML or shell). One module listens:
    the gateway's (`multisample serve`), on loopback unless its config names a host."""
    from multisample.serve.config import ServeConfig
    from tests.reliability.test_security import findings

    files = sorted((ROOT / "multisample").rglob("*.py"))
    assert len(files) >= 6
    found = [finding for path in files for finding in findings(path)]
    listening = [f for f in found if f.startswith("multisample/serve/run.py:")]
    assert listening and all(f.endswith("(listens?)") for f in listening), listening
    assert [f for f in found if f not in listening] == []
    assert ServeConfig.model_fields["host"].default == "127.0.0.1"
