"""Fault 4: bad input, generated with hypothesis.

Prompts files get one bad line of a known kind among good ones (broken JSON, wrong types,
missing and unknown fields, empty or blank ids and prompts, invalid UTF-8, unpaired
surrogates, duplicate ids, bad constraints, deep nesting); the error must be a
PromptsError naming exactly that file and line. Valid but unusual files (huge prompts,
blank lines, a byte-order mark, CRLF, odd characters) must load, skipping only what
load_prompts documents it skips. Configs get a wrong-typed value or an unknown key at a
random place, or are arbitrary text; the error must be a ConfigError naming the file,
the line and the field. Through the command line, bad input exits with status 2 and one
clear error before any engine starts, and leaves no run directory.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from multisample.cli.app import app
from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config
from multisample.engine.prompts import PromptsError, load_prompts
from multisample.search.synthesize.config import SynthesizeConfig

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Tally:
    """Bad inputs tried, by kind, and how each was handled (for the report)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, kind: str, outcome: str) -> None:
        self.counts[kind][outcome] += 1

    def entry(self) -> dict[str, dict[str, int]]:
        return {kind: dict(outcomes) for kind, outcomes in sorted(self.counts.items())}


@pytest.fixture
def tally(ledger: Any, request: pytest.FixtureRequest) -> Iterator[Tally]:
    counts = Tally()
    yield counts
    ledger(scenario=f"bad_input:{request.node.originalname}", inputs=counts.entry())


# --- prompts files -----------------------------------------------------------------------------


def good_record(i: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": f"g{i}", "prompt": f"Name {i + 2} colors."}
    if i % 2:
        record["constraints"] = [{"kind": "max_words", "n": 40 + i}]
    if i % 3 == 0:
        record["reference"] = "red, green"
    return record


def dumps(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


wrong_for_text = st.sampled_from([3, 2.5, True, ["a"], {"a": "b"}])
not_json_object = st.sampled_from([b"[]", b"1", b'"text"', b"null", b"true", b"[{}]", b"-0.5e3"])
blank = st.text(alphabet=" \t\u3000\u00a0\u2003", max_size=4)
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80\x80"])
bad_constraints = st.sampled_from(
    [
        [{"kind": "nope"}],
        [{"kind": "max_words"}],
        [{"kind": "max_words", "n": -1}],
        [{"kind": "max_words", "n": "ten"}],
        [{"kind": "max_words", "n": 5, "extra": 1}],
        [{"n": 5}],
        ["max_words"],
        "max_words",
        {"kind": "max_words", "n": 5},
    ]
)


BAD_LINES = [
    "broken JSON",
    "not a JSON object",
    "wrong type",
    "missing field",
    "unknown field",
    "empty or blank",
    "invalid UTF-8",
    "unpaired surrogate",
    "bad constraint",
    "deep nesting",
    "garbage text",
    "duplicate id",
]


@st.composite
def bad_line(draw: st.DrawFn, kind: str, earlier_ids: list[str]) -> bytes:
    """The bytes of one bad line of that kind."""
    base = good_record(99)
    if kind == "broken JSON":
        text = dumps(base)
        return text[: draw(st.integers(1, len(text) - 1))]
    if kind == "not a JSON object":
        return draw(not_json_object)
    if kind == "wrong type":
        field = draw(st.sampled_from(["id", "prompt", "reference", "preference", "constraints"]))
        value = draw(wrong_for_text if field in ("id", "prompt") else st.sampled_from([3, ["a"]]))
        if field == "constraints":
            value = draw(st.sampled_from(["max_words", 3, [3], [["a"]]]))
        return dumps({**base, field: value})
    if kind == "missing field":
        missing = draw(st.sampled_from(["id", "prompt"]))
        return dumps({k: v for k, v in base.items() if k != missing})
    if kind == "unknown field":
        name = draw(
            st.text(min_size=1, max_size=8).filter(
                lambda n: n not in base and n not in {"reference", "constraints", "preference"}
            )
        )
        return dumps({**base, name: draw(st.sampled_from([1, "x", None, [1]]))})
    if kind == "empty or blank":
        return dumps({**base, draw(st.sampled_from(["id", "prompt"])): draw(blank)})
    if kind == "invalid UTF-8":
        text = dumps(base)
        at = text.index(b"colors")
        return text[:at] + draw(invalid_utf8) + text[at:]
    if kind == "unpaired surrogate":
        field = draw(st.sampled_from(["id", "prompt", "reference", "preference"]))
        surrogate = draw(st.sampled_from(["\\ud800", "\\udfff", "x\\ud83d", "\\udc00y"]))
        line = dumps({**base, field: "@@"})  # JSON may escape half of a surrogate pair
        return line.replace(b'"@@"', f'"{surrogate}"'.encode())
    if kind == "bad constraint":
        return dumps({**base, "constraints": draw(bad_constraints)})
    if kind == "deep nesting":
        depth = draw(st.integers(2_000, 20_000))
        return b'{"id": "d", "prompt": "x", "reference": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "garbage text":
        text = draw(
            st.text(min_size=1, max_size=30).filter(
                lambda t: "\n" not in t and t.strip() and not _is_json_object(t)
            )
        )
        return text.encode("utf-8")
    assert kind == "duplicate id"
    return dumps({**base, "id": draw(st.sampled_from(earlier_ids))})


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


@st.composite
def prompts_file(draw: st.DrawFn, kind: str) -> tuple[bytes, int]:
    """(file content, 1-based line number of its one bad line, of that kind)."""
    before = draw(st.integers(1 if kind == "duplicate id" else 0, 3))
    lines = [dumps(good_record(i)) for i in range(before)]
    bad = draw(bad_line(kind, [f"g{i}" for i in range(before)]))
    # Blank lines anywhere (documented: skipped) shift the line numbers the error names.
    spaced: list[bytes] = []
    for line in lines:
        spaced.extend([b""] * draw(st.integers(0, 1)) + [line])
    spaced.extend([b"  "] * draw(st.integers(0, 1)))
    number = len(spaced) + 1
    after = [dumps(good_record(i)) for i in range(before, before + draw(st.integers(0, 2)))]
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return ending.join([*spaced, bad, *after]) + draw(st.sampled_from([b"", ending])), number


@pytest.mark.parametrize("kind", BAD_LINES)
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_bad_prompts_line_is_named_exactly(
    tmp_path: Path, tally: Tally, kind: str, data: st.DataObject
) -> None:
    content, number = data.draw(prompts_file(kind))
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content)
    with pytest.raises(PromptsError) as info:
        load_prompts(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{number}: "), (kind, content[:200], message)
    assert "\n" not in message
    tally.add(kind, "error naming file:line")


@st.composite
def unusual_but_valid(draw: st.DrawFn) -> tuple[str, bytes, int]:
    """(kind, file content, number of prompts it holds)."""
    kind = draw(
        st.sampled_from(
            ["huge prompt", "blank lines", "byte-order mark", "CRLF", "odd characters", "odd ids"]
        )
    )
    records = [good_record(i) for i in range(draw(st.integers(1, 4)))]
    if kind == "huge prompt":
        records[0]["prompt"] = "word " * draw(st.integers(20_000, 200_000))
    if kind == "odd characters":
        records[0]["prompt"] = draw(st.text(min_size=1, max_size=50).filter(str.strip))
    if kind == "odd ids":
        ids = draw(
            st.lists(
                st.text(min_size=1, max_size=12).filter(str.strip),
                min_size=len(records),
                max_size=len(records),
                unique=True,
            )
        )
        for record, new_id in zip(records, ids, strict=True):
            record["id"] = new_id
    lines = [dumps(r) for r in records]
    if kind == "blank lines":
        lines = [x for line in lines for x in (b"", b" \t", line)] + [b""]
    content = (b"\r\n" if kind == "CRLF" else b"\n").join(lines)
    if kind == "byte-order mark":
        content = b"\xef\xbb\xbf" + content
    return kind, content, len(records)


@settings(FUZZ, max_examples=40)
@given(case=unusual_but_valid())
def test_unusual_but_valid_prompts_files_load(
    tmp_path: Path, tally: Tally, case: tuple[str, bytes, int]
) -> None:
    kind, content, count = case
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content)
    loaded = load_prompts(path)
    assert len(loaded.prompts) == count
    tally.add(
        kind, "loaded" + (" (blank lines skipped, as documented)" if kind == "blank lines" else "")
    )


# --- configs -----------------------------------------------------------------------------------

BASE_CONFIG: dict[str, Any] = {
    "models": [
        {"name": "smollm2", "model": "embedded:smollm2-135m-instruct", "max_model_len": 2048},
        {
            "name": "remote",
            "backend": "openai",
            "model": "served",
            "base_url": "http://127.0.0.1:9/v1",
            "max_retries": 2,
        },
    ],
    "prompts": "embedded:tasks",
    "strategy": {"kind": "best_of_n", "model": "smollm2"},
    "budget": {"generations": 4},
    "sampling": {"temperature": 0.8, "max_tokens": 64},
    "reward": {"kind": "verifiable"},
    "pairs": {"min_margin": 0.0},
    "concurrency": 4,
    "seed": 0,
}


def places(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a nested config, containers included."""
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from places(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from places(value, (*path, index))


def user_path(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def set_at(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


SCALARS = [p for p, v in places(BASE_CONFIG) if p and not isinstance(v, dict | list)]
MAPPINGS = [p for p, v in places(BASE_CONFIG) if isinstance(v, dict)]


def key_line(text: str, path: tuple[Any, ...]) -> int:
    """1-based line of the key at `path` in a YAML text."""
    node = yaml.compose(text)
    line = 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            key, node = next((k, v) for k, v in node.value if k.value == part)
            line = key.start_mark.line + 1
        else:
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


@FUZZ
@given(
    where=st.sampled_from(MAPPINGS),
    key=st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
    value=st.sampled_from([1, "x", None, [1], {"a": 1}]),
)
def test_unknown_key_names_file_line_and_field(
    tmp_path: Path, tally: Tally, where: tuple[Any, ...], key: str, value: Any
) -> None:
    data = copy.deepcopy(BASE_CONFIG)
    mapping = data
    for part in where:
        mapping = mapping[part]
    if key in mapping or key in _known_fields(where):
        return  # not unknown there
    mapping[key] = value
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, SynthesizeConfig)
    field = user_path((*where, key))
    expected = f"{path}:{key_line(text, (*where, key))}: {field}: Extra inputs are not permitted"
    assert expected in str(info.value), str(info.value)
    tally.add("unknown key", "error naming file:line and field")


def _known_fields(where: tuple[Any, ...]) -> set[str]:
    """Field names a mapping at `where` accepts (so that adding one is not a typo)."""
    from multisample.engine.config import BudgetConfig, OpenAIModelSpec, VLLMModelSpec
    from multisample.engine.rewards.verifiable import VerifiableRewardSpec
    from multisample.engine.types import SamplingSettings
    from multisample.search.best_of_n import BestOfNSettings
    from multisample.search.pairs import PairSettings

    models = {
        (): SynthesizeConfig,
        ("models", 0): VLLMModelSpec,
        ("models", 1): OpenAIModelSpec,
        ("strategy",): BestOfNSettings,
        ("budget",): BudgetConfig,
        ("sampling",): SamplingSettings,
        ("reward",): VerifiableRewardSpec,
        ("pairs",): PairSettings,
    }
    return set(models[where].model_fields)


@FUZZ
@given(where=st.sampled_from(SCALARS), value=st.sampled_from([[1, 2], {"k": "v"}, ["x"], [None]]))
def test_wrong_type_names_file_line_and_field(
    tmp_path: Path, tally: Tally, where: tuple[Any, ...], value: Any
) -> None:
    data = copy.deepcopy(BASE_CONFIG)
    set_at(data, where, value)
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, SynthesizeConfig)
    lines = str(info.value).splitlines()
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): (\S+): .+")
    assert all(pattern.match(line) for line in lines), lines
    # One of the problems is the value changed, at its own line (a discriminator such as
    # `kind` or `backend` is reported at the mapping it selects the type of).
    named = {(int(m[1]), m[2]) for m in map(pattern.match, lines) if m}
    candidates = {
        (key_line(text, where[:n]), user_path(where[:n])) for n in range(1, len(where) + 1)
    }
    assert named & candidates, (where, lines)
    tally.add("wrong type", "error naming file:line and field")


@settings(FUZZ, max_examples=100)
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_config_text_is_a_config_error_or_valid(
    tmp_path: Path, tally: Tally, text: str | bytes
) -> None:
    path = tmp_path / "config.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    try:
        load_config(path, SynthesizeConfig)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        tally.add("arbitrary text or bytes", "error naming the file")
    else:
        tally.add("arbitrary text or bytes", "valid config")


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (
            "deep nesting",
            "models: " + "[" * 5000 + "]" * 5000 + "\n",
            ": not valid YAML: nested too deeply",
        ),
        (
            "deep nesting",
            "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n",
            ": not valid YAML: nested too deeply",
        ),
        (
            "control character",
            "models:\n  - name: a\x00\n",
            ":2: not valid YAML: unacceptable character #x0000",
        ),
        (
            "python tag",
            "seed: !!python/object/apply:os.system [ls]\n",
            ":1: not valid YAML: could not determine a constructor",
        ),
        (
            "non-string key",
            "models: [{name: a, model: b}]\n1: 2\n",
            ":2: 1: Keys should be strings",
        ),
        (
            "two documents",
            "seed: 1\n---\nseed: 2\n",
            ":2: not valid YAML: expected a single document in the stream, but found another",
        ),
    ],
)
def test_hostile_yaml_is_one_clear_error(
    tmp_path: Path, tally: Tally, kind: str, text: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, SynthesizeConfig)
    assert str(info.value).startswith(f"{path}{expected}"), str(info.value)
    assert "\n" not in str(info.value)
    tally.add(kind, "error naming file:line")


# --- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    return CliRunner()


class EngineStarted(AssertionError):
    """Bad input reached the point where engines start."""


@pytest.fixture
def no_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: object) -> None:
        raise EngineStarted("an engine was started on bad input")

    monkeypatch.setattr("multisample.engine.pool.ModelPool.start", refuse)


@settings(FUZZ, max_examples=36)
@given(data=st.data())
def test_cli_synthesize_on_bad_prompts_exits_2_before_engines_start(
    tmp_path: Path, cli: CliRunner, no_engines: None, tally: Tally, data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(BAD_LINES))
    content, number = data.draw(prompts_file(kind))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({**BASE_CONFIG, "prompts": str(prompts)}, sort_keys=False), encoding="utf-8"
    )
    runs = tmp_path / "runs"
    result = cli.invoke(app, ["synthesize", str(config), "--output-dir", str(runs)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith(f"error: {prompts}:{number}: "), result.output
    assert result.output.count("\n") == 1
    assert not runs.exists()
    tally.add(kind, "exit 2, error naming file:line, no run directory")


@settings(FUZZ, max_examples=30)
@given(where=st.sampled_from(SCALARS), value=st.sampled_from([[1, 2], {"k": "v"}]))
def test_cli_config_check_on_bad_config_exits_2(
    tmp_path: Path, cli: CliRunner, tally: Tally, where: tuple[Any, ...], value: Any
) -> None:
    data = copy.deepcopy(BASE_CONFIG)
    set_at(data, where, value)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    result = cli.invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert re.match(rf"error: {re.escape(str(config))}:\d+: \S+: ", result.output), result.output
    tally.add("wrong type (config check)", "exit 2, error naming file:line and field")
