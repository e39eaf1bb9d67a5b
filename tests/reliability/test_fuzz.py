"""Fuzzing what reads a user's or a crash's bytes: the prompts loader, the config loader
with `--set` overrides, the generation journal's reader and the run directory's repair.
Whatever the bytes, each either works or refuses in one line (its own error type), and a
file the user owns is never changed.

`make test` runs a few hundred examples of each (Hypothesis's default profile);
`make fuzz` runs the `fuzz` profile (tests/conftest.py), thousands of examples each."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multisample.engine.config import ConfigError, PoolConfig
from multisample.engine.config_files import load_config
from multisample.engine.journal import JOURNAL, Journal, file_name
from multisample.engine.prompts import PromptsError, load_prompts
from multisample.engine.storage import PROGRESS, RunDirectoryError, _release, dumps_line
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import PAIRS, SAMPLES, SynthesizeRun

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow])

JSON_BITS = st.sampled_from(
    [b'{"id": "a", "prompt": "x"}', b'{"prompt_id": "a"}', b"{", b"}", b'"', b"[", b"]",
     b"\\ud800", b"\n", b"\r\n", b"\xff", b"\xef\xbb\xbf", b'"prompt"', b":", b",", b"null",
     b'{"id": 1}', b'{"messages": []}', b'{"constraints": [{"kind": "x"}]}']
)  # fmt: skip
"""Pieces that make files near valid JSONL: they reach further into the parsers than
random bytes alone."""

FILE_BYTES = st.one_of(st.binary(max_size=400), st.lists(JSON_BITS, max_size=30).map(b"".join))


@FUZZ
@given(data=FILE_BYTES)
def test_any_prompts_file_loads_or_is_one_prompts_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.jsonl"
        path.write_bytes(data)
        try:
            load_prompts(str(path))
        except PromptsError as exc:
            assert "\n" not in str(exc)
        assert path.read_bytes() == data  # read, never written


YAML_BITS = st.sampled_from(
    ["models:", "\n  - ", "name: m", "model: x", "{", "}", "[", "]", ": ", "- ", "&a ", "*a",
     "!!python/object ", "seed: ", "1", "'", '"', "\t", "budget:", "  generations: 0",
     "prompts: ", "embedded:tasks", "<<: *a", "~", "null", "\n"]
)  # fmt: skip
OVERRIDE = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}={}".format,
        st.lists(st.sampled_from(["models", "0", "m", "seed", "budget", "x", "[1]", ""])).map(
            ".".join
        ),
        st.sampled_from(["1", "[", "{a: 1}", "null", "'x", "[[[[[[]]]]]]", "-1"]),
    ),
)


@FUZZ
@given(text=st.lists(YAML_BITS, max_size=40).map("".join), overrides=st.lists(OVERRIDE, max_size=3))
def test_any_config_with_any_overrides_loads_or_is_one_config_error(
    text: str, overrides: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, SynthesizeConfig, overrides)
        except ConfigError as exc:
            assert str(exc).strip()
        assert path.read_text(encoding="utf-8") == text


RECORD = st.fixed_dictionaries(
    {"prompt_id": st.sampled_from(["a", "b", "c"]), "id": st.integers(0, 3)},
    optional={"text": st.text(max_size=10), "round": st.integers(0, 3)},
)
RECORDS_FILE = st.one_of(
    st.lists(RECORD, max_size=6).map(lambda rs: "".join(dumps_line(r) for r in rs).encode()),
    FILE_BYTES,
)


@FUZZ
@given(journal=FILE_BYTES, samples=RECORDS_FILE, pairs=RECORDS_FILE, progress=RECORDS_FILE)
def test_any_run_directory_resumes_or_is_one_error_and_only_its_files_change(
    journal: bytes, samples: bytes, pairs: bytes, progress: bytes
) -> None:
    mine = b'{"text": "a file of the user\'s"}\n\xff\xfe not even text'
    with tempfile.TemporaryDirectory() as folder:
        config = PoolConfig.model_validate({"models": [{"name": "m", "model": "x"}]})
        run = SynthesizeRun.open(Path(folder) / "run", config, resume=False)
        _release(run.path)
        for name, data in ((SAMPLES, samples), (PAIRS, pairs), (PROGRESS, progress)):
            (run.path / name).write_bytes(data)
        (run.path / JOURNAL).mkdir()
        (run.path / JOURNAL / file_name("a")).write_bytes(journal)
        (run.path / "notes.jsonl").write_bytes(mine)
        try:
            reopened = SynthesizeRun.open(run.path, config, resume=True)
            done = reopened.completed()
            Journal.open(run.path, done).prompt("a").generation(0, "key")
            for name in (SAMPLES, PAIRS):
                kept = reopened.records(name)
                assert {r["prompt_id"] for r in kept} <= done
            _release(run.path)
        except RunDirectoryError as exc:
            assert "\n" not in str(exc)
            _release(run.path)
        assert (run.path / "notes.jsonl").read_bytes() == mine


def test_the_journal_reader_survives_a_known_bad_file(tmp_path: Path) -> None:
    """One fixed case of the above, always run: a header, then damage."""
    header = json.dumps({"kind": "journal", "version": 1, "prompt_id": "a"}).encode()
    (tmp_path / JOURNAL).mkdir()
    (tmp_path / JOURNAL / file_name("a")).write_bytes(header + b'\n{"kind": "gen\xff')
    assert Journal.open(tmp_path, set()).prompt("a").generation(0, "key") is None
