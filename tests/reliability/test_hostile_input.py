"""Hostile or malformed input, from a model, a file or a user: no escape sequence or markup
reaches the terminal as such; templates, engine arguments and endpoint settings that could
not work, or could do harm, are refused before any engine starts and never echo a secret;
malformed records and documents are one line naming the file, the line and the field; and
no input makes the work unbounded (a response body, the prompts' token counts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from multisample.bandits.select.arbiters import HumanArbiter
from multisample.cli.app import app
from multisample.engine import run_session
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.openai import MAX_RESPONSE_BYTES, OpenAIBackend
from multisample.engine.config import ConfigError, OpenAIModelSpec, PoolConfig, VLLMModelSpec
from multisample.engine.config_files import load_config
from multisample.engine.prompts import PromptFile
from multisample.engine.storage import SUMMARY, dumps_line
from multisample.engine.templates import read_template
from multisample.engine.terminal import printable, shown
from multisample.engine.types import GenerationRequest, Message, Prompt, SamplingSettings
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import SAMPLES
from multisample.search.synthesize.run import synthesize
from tests.search.toy import ToyPool

HOSTILE = (
    "\x1b]0;owned\x07\x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 [/x] [link=http://e]x"
)
"""A window title, a screen clear, an OSC 8 link, a closing tag with no opening one, and a
markup link."""


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_line(output: str, *fragments: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- what reaches the terminal -----------------------------------------------------------------


def test_control_characters_are_shown_never_obeyed() -> None:
    assert printable("a\x1b[2Jb\nc\td\x07\u202e") == "a\\x1b[2Jb\nc\td\\x07\\u202e"
    assert shown("[/x] [bold]") == "\\[/x] \\[bold]"
    assert "\x1b" not in printable(HOSTILE)


def test_a_person_judging_sees_hostile_answers_as_text() -> None:
    console = Console(record=True, width=200, force_terminal=True, color_system=None)
    arbiter = HumanArbiter(console, lambda question: "1", seed=0)
    query = Prompt(id=HOSTILE, prompt=HOSTILE, history=(Message("user", HOSTILE),))
    verdicts = asyncio.run(arbiter([query], [HOSTILE], ["plain"]))
    assert len(verdicts) == 1
    screen = console.export_text(styles=False)
    assert "\x1b]" not in screen and "\x07" not in screen
    assert "\\x1b]0;owned\\x07" in screen and "[/x] [link=http://e]x" in screen


async def toy_run(tmp_path: Path, text: str = "Say hi.") -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p1", "prompt": text}) + "\n")
    config = SynthesizeConfig.model_validate(
        {
            "models": [{"name": "a", "model": "/no/such/model"}],
            "prompts": str(prompts),
            "budget": {"generations": 2},
            "reward": {"kind": "callable", "path": "tests.search.test_sweep:toy_reward"},
        }
    )
    await synthesize(config, tmp_path / "run", pool=ToyPool())  # type: ignore[arg-type]
    return tmp_path / "run"


async def test_show_prints_a_samples_markup_and_escapes_as_text(tmp_path: Path) -> None:
    run = await toy_run(tmp_path)
    samples = [json.loads(x) for x in (run / SAMPLES).read_text().splitlines()]
    samples[0]["text"] = HOSTILE
    (run / SAMPLES).write_text("".join(dumps_line(s) for s in samples))
    result = cli("show", str(run), "--prompt", "p1")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "[/x]" in result.output
    assert "[link=http://e]x" in result.output


def test_an_error_holding_markup_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('models:\n  - {name: m, model: x}\nseed: "[/b]"\n')
    result = cli("config", "check", str(path), "--kind", "synthesize")
    assert result.exit_code == 2
    one_line(result.output, "seed", "[/b]")


# --- templates, engine arguments and endpoints -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A: {answer} and a { brace", "not a template"),
        ("{}", "unknown field(s) {}"),
        ("{0} {answer}", "unknown field(s) {0}"),
        ("{answer.__class__}", "unknown field(s) {answer.__class__}"),
        ("{answer!z}", "not a conversion"),
        ("{answer:{question}}", "take no format spec"),
        ("{answer:>300000000}", "take no format spec"),
    ],
)
def test_a_template_that_cannot_work_is_refused_when_read(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_template(path, {"question", "answer"})
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_template_not_in_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"{answer} \xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        read_template(path, {"answer"})


@pytest.mark.parametrize(
    "argument",
    [
        {"worker_cls": "evil.Worker"},
        {"worker_extension_cls": "evil.Extension"},
        {"logits_processors": ["evil.processor"]},
        {"allowed_local_media_path": "/"},
    ],
)
def test_engine_args_that_import_code_or_open_the_disk_need_an_opt_in(
    argument: dict[str, Any],
) -> None:
    spec = {"name": "m", "model": "x", "engine_args": argument}
    with pytest.raises(ValueError, match="set trust_engine_args: true"):
        VLLMModelSpec.model_validate(spec)
    assert VLLMModelSpec.model_validate({**spec, "trust_engine_args": True}).engine_args


SECRET = "sk-verysecret123"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", f"http://user:{SECRET}@example.com/v1"),
        ("base_url", f"https://example.com/v1?api_key={SECRET}"),
        ("api_key_env", SECRET),
    ],
)
def test_a_secret_in_an_endpoint_setting_is_refused_and_never_echoed(
    tmp_path: Path, field: str, value: str
) -> None:
    model = {"name": "r", "backend": "openai", "model": "m", "base_url": "http://h/v1"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"models": [{**model, field: value}]}))
    with pytest.raises(ConfigError) as info:
        load_config(path, PoolConfig)
    assert f"models[0].{field}" in str(info.value) and SECRET not in str(info.value)


# --- malformed records and documents --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("prompt_id"), "samples.jsonl:1: prompt_id: Field required"),
        (lambda r: r.update(reward="high"), "samples.jsonl:1: reward: Input should be a valid"),
    ],
)
async def test_export_of_a_malformed_sample_is_one_line(
    tmp_path: Path, change: Any, message: str
) -> None:
    run = await toy_run(tmp_path)
    samples = [json.loads(x) for x in (run / SAMPLES).read_text().splitlines()]
    change(samples[0])
    (run / SAMPLES).write_text("".join(dumps_line(s) for s in samples))
    result = cli("export", str(run))
    assert result.exit_code == 2
    one_line(result.output, message)
    assert not (run / "export").exists()


async def test_a_torn_summary_is_one_line(tmp_path: Path) -> None:
    run = await toy_run(tmp_path)
    (run / SUMMARY).write_text('{"status": "compl')
    result = cli("show", str(run))
    assert result.exit_code == 2
    one_line(result.output, f"{run / SUMMARY}: damaged")


def test_a_set_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  - {name: m, model: x}\n")
    for override in ("a." * 5000 + "b=1", "seed=" + "[" * 5000 + "]" * 5000):
        result = cli("config", "check", str(path), "--set", override)
        assert result.exit_code == 2
        one_line(result.output, "nested deeper than 32 levels")


# --- bounded work ----------------------------------------------------------------------------


async def test_a_response_body_past_the_limit_is_an_error_not_a_memory_to_fill() -> None:
    spec = OpenAIModelSpec.model_validate(
        {"name": "r", "backend": "openai", "model": "m", "base_url": "http://h/v1"}
    )
    chunk = b" " * 2**20
    sent = 0

    async def endless(request: httpx.Request) -> httpx.Response:
        async def body() -> Any:
            nonlocal sent
            while True:
                sent += len(chunk)
                yield chunk

        return httpx.Response(200, content=body())

    backend = OpenAIBackend(spec, SamplingSettings())
    await backend.start()
    backend._client = httpx.AsyncClient(transport=httpx.MockTransport(endless))
    request = GenerationRequest((Message("user", "hi"),), SamplingSettings(), 0)
    with pytest.raises(BackendError, match="sent more than 32 MiB"):
        await backend.generate([request])
    assert sent <= MAX_RESPONSE_BYTES + len(chunk)
    await backend.close()


class CountingPool(ToyPool):
    """A toy pool with a context window that records how many token counts run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = self.most = 0

    async def context_length(self, model: str) -> int | None:
        return 1000

    async def count_tokens(self, model: str, messages: Sequence[Message]) -> int | None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0)  # let every other count start that would
        self.running -= 1
        return 10


async def test_preflight_counts_tokens_a_batch_at_a_time() -> None:
    prompts = [Prompt(id=str(i), prompt="hi") for i in range(1000)]
    pool = CountingPool()
    file = PromptFile(Path("p.jsonl"), prompts, {p.id: i + 1 for i, p in enumerate(prompts)})
    await run_session.preflight(pool, file, ["a"])  # type: ignore[arg-type]
    assert pool.most == run_session.PREFLIGHT_BATCH
