"""engine/prompts.py: prompts from files `datasets` reads, through a column mapping;
unknown columns kept as metadata, multi-turn `messages`, ids made where missing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest
from pydantic import ValidationError

from multisample.engine.config import PromptsSpec, RunConfig
from multisample.engine.prompts import PromptsError, conversation_id, load_prompts
from multisample.engine.types import Message, Prompt

ROWS = [
    {"qid": 7, "question": "What is 6 x 7?", "answer": 42, "source": "gsm", "level": 1},
    {"qid": 8, "question": "Name a colour.", "answer": None, "source": "web", "level": 2},
]
MAPPING = {"id": "qid", "prompt": "question", "reference": "answer"}


def error(source: Any) -> str:
    with pytest.raises(PromptsError) as info:
        load_prompts(source)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_mapped(prompts: list[Prompt]) -> None:
    first, second = prompts
    assert (first.id, first.prompt, first.reference) == ("7", "What is 6 x 7?", "42")
    assert first.metadata == {"source": "gsm", "level": 1}
    assert (second.id, second.reference) == ("8", None)  # a null is the field's default
    assert second.metadata == {"source": "web", "level": 2}


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json", ".jsonl", ".arrow", "saved"])
def test_every_format_through_a_column_mapping(tmp_path: Path, suffix: str) -> None:
    dataset = datasets.Dataset.from_list(ROWS)
    path = tmp_path / (suffix if suffix == "saved" else f"data{suffix}")
    if suffix == ".parquet":
        dataset.to_parquet(path)
    elif suffix == ".csv":
        dataset.to_csv(path, index=False)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")  # one JSON array
    elif suffix == ".jsonl":
        write_jsonl(path, ROWS)
    else:
        dataset.save_to_disk(str(tmp_path / "saved"))
        if suffix == ".arrow":
            (arrow,) = (tmp_path / "saved").glob("*.arrow")
            path = arrow
    loaded = load_prompts(PromptsSpec(path=str(path), columns=MAPPING))
    check_mapped(loaded.prompts)
    rows = suffix != ".jsonl"  # JSONL is read line by line: errors name the line
    assert loaded.rows is rows
    assert loaded.where("8") == (f"{path} row 2" if rows else f"{path}:2")


def test_a_plain_path_of_another_format_takes_the_field_names(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame(
        {
            "id": ["a", "b"],
            "prompt": ["One?", "Two?"],
            "constraints": [json.dumps([{"kind": "max_words", "n": 5}]), None],
            "topic": ["x", "y"],
        }
    ).to_parquet(path)
    first, second = load_prompts(str(path)).prompts
    assert first.constraints == ({"kind": "max_words", "n": 5},)
    assert second.constraints == ()
    assert first.metadata == {"topic": "x"}


def test_constraints_as_arrow_structs_lose_the_nulls_arrow_fills_in(tmp_path: Path) -> None:
    # Arrow gives every struct of a column every key; the absent ones come back null.
    rows = [
        {"prompt": "a", "constraints": [{"kind": "max_words", "n": 5}, {"kind": "no_commas"}]},
    ]
    path = tmp_path / "c.parquet"
    datasets.Dataset.from_list(rows).to_parquet(path)
    (prompt,) = load_prompts(str(path)).prompts
    assert prompt.constraints == ({"kind": "max_words", "n": 5}, {"kind": "no_commas"})


def test_plain_jsonl_still_refuses_unknown_fields_but_the_mapping_keeps_them(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x", "answer": "y"}])
    assert error(path) == f"{path}:1: answer: Extra inputs are not permitted (got 'y')"
    (prompt,) = load_prompts(PromptsSpec(path=str(path))).prompts
    assert prompt.metadata == {"answer": "y"}


def test_missing_ids_are_digests_of_the_conversation(tmp_path: Path) -> None:
    rows = [{"q": "Same?"}, {"q": "Other?"}, {"q": "Same?"}, {"q": "Same?"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    ids = [p.id for p in load_prompts(PromptsSpec(path=str(path), columns={"prompt": "q"})).prompts]
    digest = hashlib.sha256(json.dumps([["user", "Same?"]]).encode()).hexdigest()[:12]
    assert ids[0] == digest
    assert ids[2:] == [f"{digest}-2", f"{digest}-3"]  # repeats in file order
    assert len(set(ids)) == 4
    # The same prompt in another file and format gets the same id.
    parquet = tmp_path / "p.parquet"
    datasets.Dataset.from_list([{"prompt": "Other?"}]).to_parquet(parquet)
    assert load_prompts(str(parquet)).prompts[0].id == ids[1]


def test_messages_make_a_multi_turn_prompt(tmp_path: Path) -> None:
    turns = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    rows = [
        {"id": "a", "conv": turns, "tag": 1, "answer": None},
        {"id": "b", "conv": turns[:4], "tag": None, "answer": None},
        {"id": "c", "conv": turns, "tag": None, "answer": "four"},
    ]
    path = tmp_path / "m.parquet"
    datasets.Dataset.from_list(rows).to_parquet(path)
    spec = PromptsSpec(path=str(path), columns={"messages": "conv", "reference": "answer"})
    a, b, c = load_prompts(spec).prompts
    history = (
        Message("system", "Be terse."),
        Message("user", "Hi."),
        Message("assistant", "Hello."),
    )
    assert (a.prompt, a.history, a.reference) == ("2 + 2?", history, "4")
    assert a.conversation() == (*history, Message("user", "2 + 2?"))
    assert a.metadata == {"tag": 1}
    assert (b.history, b.reference, b.metadata) == (history, None, {"tag": None})
    # With a reference of its own, the turns after the prompt are kept, not used.
    assert c.reference == "four"
    assert c.metadata["messages_after_prompt"] == [{"role": "assistant", "content": "4"}]


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        ([{"role": "assistant", "content": "hi"}], "conv: no user turn"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
            "conv[1]: a system turn comes first or not at all",
        ),
        ([{"role": "bot", "content": "a"}], "conv[0].role: Input should be"),
        ([{"role": "user"}], "conv[0].content: "),
        ("not json", "conv: not a list nor JSON text of one"),
    ],
)
def test_bad_messages_name_the_line_and_the_column(
    tmp_path: Path, conv: Any, expected: str
) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"conv": [{"role": "user", "content": "ok"}]}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"conv": conv}) + "\n")
    message = error(PromptsSpec(path=str(path), columns={"messages": "conv"}))
    assert message.startswith(f"{path}:2: {expected}"), message


def test_errors_name_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list([*ROWS, {**ROWS[0], "question": "  "}]).to_parquet(path)
    assert error(PromptsSpec(path=str(path), columns=MAPPING)) == (
        f"{path} row 3: question (prompt): is blank (only whitespace)"
    )
    # id 7 again is found after the blank one is fixed: a repeated id names both rows.
    datasets.Dataset.from_list([*ROWS, ROWS[0]]).to_parquet(path)
    assert error(PromptsSpec(path=str(path), columns=MAPPING)) == (
        f"{path} row 3: duplicate id '7' (first on row 1)"
    )
    assert error(PromptsSpec(path=str(path), columns={"prompt": "nope"})) == (
        f"{path}: columns.prompt: no column 'nope' (the file has: qid, question, answer, "
        "source, level)"
    )
    assert error(str(path)).startswith(f"{path} row 1: no prompt: name a column in")


def test_a_wrong_type_names_the_column_and_the_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": "x", "pref": ["a"]}])
    spec = PromptsSpec(path=str(path), columns={"prompt": "q", "preference": "pref"})
    assert error(spec).startswith(f"{path}:1: pref (preference): Input should be a valid string")


def test_bad_constraints_in_a_csv_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('prompt,rules\nhi,"[{""kind"": ""max_wrds""}]"\n', encoding="utf-8")
    message = error(PromptsSpec(path=str(path), columns={"constraints": "rules"}))
    assert message.startswith(f"{path} row 1: rules (constraints)[0].kind: unknown constraint")


def test_a_row_with_both_prompt_and_messages_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}]
    )
    assert error(PromptsSpec(path=str(path))) == (
        f"{path}:1: both prompt and messages columns; map one of them in columns"
    )
    # Mapping one of them makes the other an ordinary column, kept as metadata.
    (prompt,) = load_prompts(PromptsSpec(path=str(path), columns={"prompt": "prompt"})).prompts
    assert prompt.prompt == "a" and "messages" in prompt.metadata


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"not parquet", "cannot read as .parquet: "), (None, "no such prompts file")],
)
def test_unreadable_files_are_one_line(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "d.parquet"
    if content is not None:
        path.write_bytes(content)
    assert error(str(path)).startswith(f"{path}: {expected}")


def test_limit_counts_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list([{"prompt": f"p{i}"} for i in range(5)]).to_parquet(path)
    assert len(load_prompts(str(path), limit=2).prompts) == 2


def test_metadata_values_become_json(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    frame = pd.DataFrame({"prompt": ["a"], "when": [pd.Timestamp("2024-01-02")]})
    frame.to_parquet(path)
    (prompt,) = load_prompts(str(path)).prompts
    assert prompt.metadata == {"when": "2024-01-02T00:00:00"}


def test_the_config_takes_a_string_or_a_mapping() -> None:
    models = [{"name": "m", "model": "/no/such/model"}]
    assert RunConfig.model_validate({"models": models, "prompts": "p.jsonl"}).prompts == "p.jsonl"
    config = RunConfig.model_validate(
        {"models": models, "prompts": {"path": "d.parquet", "columns": {"prompt": "question"}}}
    )
    assert config.prompts == PromptsSpec(path="d.parquet", columns={"prompt": "question"})
    assert str(config.prompts) == "d.parquet"
    for bad in (
        {"path": "d", "columns": {"questoin": "q"}},
        {"path": "d", "columns": {"prompt": "q", "messages": "m"}},
        {"path": "d", "columns": {"prompt": "q", "reference": "q"}},
        {"path": "d", "colums": {}},
        {"columns": {"prompt": "q"}},
    ):
        with pytest.raises(ValidationError):
            RunConfig.model_validate({"models": models, "prompts": bad})


def test_prompt_dumps_as_before_without_history_or_metadata() -> None:
    # Journal keys hash the dump: a plain prompt's must not change.
    plain = Prompt(id="a", prompt="x")
    assert set(plain.model_dump(mode="json")) == {
        "id",
        "prompt",
        "reference",
        "constraints",
        "preference",
    }
    full = Prompt(id="a", prompt="x", history=(Message("user", "y"),), metadata={"k": 1})
    assert Prompt.model_validate(full.model_dump(mode="json")) == full
    assert conversation_id(full) != conversation_id(plain)


# --- on the command line: one line, exit 2, nothing written --------------------------------


def multisample(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("multisample")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True)


def test_a_mapping_typo_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - name: m\n    model: /no/such/model\n"
        "prompts:\n  path: d.parquet\n  columns:\n    questoin: q\n",
        encoding="utf-8",
    )
    done = multisample("config", "check", config)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {config}:7: prompts.columns.questoin: Input should be 'id'")


def test_a_missing_column_fails_synthesize_with_nothing_written(tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(data)
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - name: m\n    model: /no/such/model\n"
        f"prompts:\n  path: {data}\n  columns:\n    prompt: nope\n",
        encoding="utf-8",
    )
    done = multisample("synthesize", config, "--output-dir", tmp_path / "runs")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == f"error: {data}: columns.prompt: no column 'nope' (the file has: " + (
        "qid, question, answer, source, level)"
    )
    assert not (tmp_path / "runs").exists()
