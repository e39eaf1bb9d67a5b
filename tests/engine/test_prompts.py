"""engine/prompts.py: reading prompts files, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multisample.engine.config import ConfigError
from multisample.engine.prompts import (
    EMBEDDED_TASKS,
    PromptFile,
    PromptsError,
    load_prompts,
    resolve_prompts_path,
    tasks_path,
)


def write(tmp_path: Path, content: str | bytes, name: str = "prompts.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def line(**fields: Any) -> str:
    return json.dumps(fields) + "\n"


def error(path: Path, limit: int | None = None) -> str:
    with pytest.raises(PromptsError) as info:
        load_prompts(path, limit)
    return str(info.value)


GOOD = line(id="a", prompt="first") + line(id="b", prompt="second")


# --- valid files -----------------------------------------------------------------------------


def test_valid_file_with_blank_lines(tmp_path: Path) -> None:
    text = (
        "\n"
        + line(id="a", prompt="Say hi.", reference="hi")
        + "   \n"
        + "\n"
        + line(
            id="b",
            prompt="Be brief.",
            constraints=[{"kind": "max_words", "n": 5}],
            preference="terse",
        )
        + "\n"
    )
    path = write(tmp_path, text)
    loaded = load_prompts(path)
    assert isinstance(loaded, PromptFile)
    assert loaded.path == path
    assert [p.id for p in loaded.prompts] == ["a", "b"]
    assert loaded.lines == {"a": 2, "b": 5}
    first, second = loaded.prompts
    assert first.prompt == "Say hi."
    assert first.reference == "hi"
    assert first.constraints == ()
    assert second.constraints == ({"kind": "max_words", "n": 5},)
    assert second.preference == "terse"
    assert loaded.where("b") == f"{path}:5"


def test_file_without_trailing_newline_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": "a", "prompt": "x"}\r\n{"id": "b", "prompt": "y"}')
    loaded = load_prompts(path)
    assert [p.id for p in loaded.prompts] == ["a", "b"]
    assert loaded.lines == {"a": 1, "b": 2}


def test_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert len(load_prompts(str(path)).prompts) == 2


def test_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(line(id=f"p{i}", prompt="x") for i in range(5)))
    loaded = load_prompts(path, limit=2)
    assert [p.id for p in loaded.prompts] == ["p0", "p1"]
    assert loaded.lines == {"p0": 1, "p1": 2}
    assert len(load_prompts(path, limit=10).prompts) == 5
    assert len(load_prompts(path).prompts) == 5


def test_limit_stops_before_later_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "not json\n")
    assert [p.id for p in load_prompts(path, limit=2).prompts] == ["a", "b"]
    assert error(path).startswith(f"{path}:3: ")


def test_where_unknown_id(tmp_path: Path) -> None:
    loaded = load_prompts(write(tmp_path, GOOD))
    with pytest.raises(KeyError):
        loaded.where("zzz")


# --- errors name path:line -------------------------------------------------------------------


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '{"id": "c",\n')
    message = error(path)
    assert message.startswith(f"{path}:3: not valid JSON: ")
    assert "(column " in message


def test_json_array_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "[1, 2]\n")
    assert error(path) == f"{path}:3: expected a JSON object, got list"


@pytest.mark.parametrize(
    ("value", "kind"), [("42", "int"), ('"text"', "str"), ("null", "NoneType")]
)
def test_json_non_object_lines(tmp_path: Path, value: str, kind: str) -> None:
    path = write(tmp_path, value + "\n")
    assert error(path) == f"{path}:1: expected a JSON object, got {kind}"


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.encode() + b'{"id": "c", "prompt": "\xff"}\n')
    # The byte is a 0-based offset within the line (JSON errors give a 1-based column).
    assert error(path) == f"{path}:3: not valid UTF-8 (byte 23)"


def test_missing_prompt_field(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="a"))
    assert error(path) == f"{path}:1: prompt: Field required"


def test_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + line(id="c", prompt="x", answer="y"))
    assert error(path) == f"{path}:3: answer: Extra inputs are not permitted (got 'y')"


def test_empty_id(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="", prompt="x"))
    assert error(path) == f"{path}:1: id: String should have at least 1 character (got '')"


def test_empty_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="a", prompt=""))
    assert error(path).startswith(f"{path}:1: prompt: String should have at least 1 character")


def test_wrong_type_of_id(tmp_path: Path) -> None:
    path = write(tmp_path, line(id=7, prompt="x"))
    assert error(path) == f"{path}:1: id: Input should be a valid string (got 7)"


def test_only_first_problem_reported(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="", prompt="", extra=1))
    message = error(path)
    assert "\n" not in message
    assert message.startswith(f"{path}:1: ")


def test_unknown_constraint_kind(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + line(id="c", prompt="x", constraints=[{"kind": "max_wrds"}]))
    message = error(path)
    assert message.startswith(f"{path}:3: constraints[0].kind: unknown constraint kind 'max_wrds'")
    assert "max_words" in message  # the known kinds are listed


def test_bad_constraint_parameter(tmp_path: Path) -> None:
    constraints = [{"kind": "max_words", "n": 5}, {"kind": "max_words", "n": -3}]
    path = write(tmp_path, line(id="a", prompt="x", constraints=constraints))
    assert error(path) == f"{path}:1: constraints[1].n: Input should be greater than 0 (got -3)"


def test_constraint_unknown_parameter(tmp_path: Path) -> None:
    path = write(
        tmp_path, line(id="a", prompt="x", constraints=[{"kind": "max_words", "n": 3, "m": 1}])
    )
    assert error(path).startswith(f"{path}:1: constraints[0].m: Extra inputs are not permitted")


def test_constraint_without_kind(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="a", prompt="x", constraints=[{"n": 3}]))
    assert error(path) == f"{path}:1: constraints[0].kind: Field required"


def test_constraints_not_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="a", prompt="x", constraints="max_words"))
    assert error(path).startswith(f"{path}:1: constraints: ")


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n" + line(id="a", prompt="again"))
    assert error(path) == f"{path}:4: duplicate id 'a' (first on line 1)"


def test_first_bad_line_wins(tmp_path: Path) -> None:
    path = write(tmp_path, line(id="a", prompt="x") + "[]\n" + "nope\n")
    assert error(path).startswith(f"{path}:2: ")


@pytest.mark.parametrize("content", ["", "\n", "  \n\n\t\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    assert error(path) == f"{path}: no prompts in file"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    assert error(path) == f"{path}: no such prompts file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert error(tmp_path).startswith(f"{tmp_path}: cannot read: ")


def test_prompts_error_is_config_error() -> None:
    assert issubclass(PromptsError, ConfigError)
    assert issubclass(PromptsError, ValueError)


def test_deeply_nested_json_is_a_prompts_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[" * 100_000 + "]" * 100_000 + "\n")
    assert error(path).startswith(f"{path}:1: ")


# --- the shipped task set --------------------------------------------------------------------


def test_embedded_tasks() -> None:
    loaded = load_prompts(EMBEDDED_TASKS)
    assert loaded.path == tasks_path()
    assert len(loaded.prompts) >= 100
    first = loaded.prompts[0]
    assert loaded.where(first.id) == f"{tasks_path()}:1"
    last = loaded.prompts[-1]
    assert loaded.where(last.id) == f"{tasks_path()}:{len(loaded.prompts)}"
    assert all(p.constraints for p in loaded.prompts)


def test_embedded_tasks_limit() -> None:
    assert len(load_prompts(EMBEDDED_TASKS, limit=3).prompts) == 3


def test_resolve_prompts_path(tmp_path: Path) -> None:
    assert resolve_prompts_path(EMBEDDED_TASKS) == tasks_path()
    assert resolve_prompts_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"
    assert resolve_prompts_path("rel/x.jsonl") == Path("rel/x.jsonl")


# --- properties ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check_load(path: Path) -> None:
    try:
        loaded = load_prompts(path)
    except PromptsError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert loaded.prompts
        assert len({p.id for p in loaded.prompts}) == len(loaded.prompts)


@FUZZ
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_load_or_raise_prompts_error(tmp_path: Path, content: bytes) -> None:
    check_load(write(tmp_path, content))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
record = st.fixed_dictionaries(
    {"id": st.text(max_size=3), "prompt": st.text(max_size=5)},
    optional={
        "constraints": st.lists(
            st.fixed_dictionaries(
                {"kind": st.sampled_from(["max_words", "min_words", "no_commas", "x"])},
                optional={"n": json_values},
            ),
            max_size=2,
        ),
        "reference": json_values,
        "extra": json_values,
    },
)


@FUZZ
@given(lines=st.lists(record | json_values, max_size=4), tail=st.binary(max_size=20))
def test_json_lines_load_or_raise_prompts_error(
    tmp_path: Path, lines: list[Any], tail: bytes
) -> None:
    content = b"".join(json.dumps(x).encode() + b"\n" for x in lines) + tail
    check_load(write(tmp_path, content))
