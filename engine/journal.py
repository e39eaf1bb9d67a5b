"""The generation journal: every generation of an unfinished search, on disk as soon as
it is made, so that a killed run resumes mid-search instead of from the prompt's start.

A run directory's `journal/` holds one JSONL file per prompt whose search is under way
(named by a hash of the prompt id, which any character may be part of). Its first line
is a header, `{"kind": "journal", "version": 1, "prompt_id": ...}`; then, in the order
they finished:
- a `generation` line per generation: the candidate index `id` within the prompt's
  search, `request` (a hash of the model, the messages, the sampling settings and the
  seed that were sent) and every field of the Generation the engine returned;
- a `reward` line per scored generation: `id`, `key` (a hash of the reward's identity,
  the prompt record and the text scored) and `reward`.
Lines are appended and flushed to the OS after each pool call and each reward call (not
fsynced: that would stall every search on the disk; a killed process loses nothing that
was flushed, a machine that goes down may lose the last lines, which are then made
again). The file is deleted once its prompt is committed, and the folder once the run is
complete, so the journal holds only the searches in flight.

Resuming replays: each unfinished prompt's search runs again from its start, and a
request whose index has a journal line with the same `request` hash is answered from the
line instead of an engine (a reward likewise when its `key` matches). Strategies decide
from generations and rewards only, so the replayed search makes the same requests in
the same order, rebuilds the same state, and charges its budget exactly as the first
run did; the first request that the journal does not hold goes to the engines.

A line whose index matches but whose request hash does not (the prompts file, a
template or multisample itself changed since the line was written) is never used: that
line and every later line of the prompt are dropped, with a warning, and the search goes
on from the engines. A torn last line (a kill mid-write) or a damaged line ends the
file's usable part: it and the lines after it are dropped, and made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from multisample.engine import storage
from multisample.engine.types import Generation, GenerationRequest, Prompt

logger = logging.getLogger(__name__)

JOURNAL = "journal"
"""The journal's folder in a run directory."""
VERSION = 1


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Header(_Line):
    kind: Literal["journal"] = "journal"
    version: int
    prompt_id: str


class _GenerationLine(_Line):
    kind: Literal["generation"] = "generation"
    id: int
    request: str
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    seed: int
    latency_s: float
    top_logprobs: tuple[dict[str, float], ...] = ()
    adapter: str | None = None
    adapter_version: int | None = None
    stop_reason: str | None = None
    cached_prompt_tokens: int | None = None

    def generation(self) -> Generation:
        return Generation(**self.model_dump(exclude={"kind", "id", "request"}))


class _RewardLine(_Line):
    kind: Literal["reward"] = "reward"
    id: int
    key: str
    reward: float


_ANY_LINE: TypeAdapter[_Header | _GenerationLine | _RewardLine] = TypeAdapter(
    Annotated[_Header | _GenerationLine | _RewardLine, Field(discriminator="kind")]
)


def _digest(parts: object) -> str:
    # ASCII JSON: a text holding an unpaired surrogate still hashes.
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def request_key(model: str, request: GenerationRequest) -> str:
    """What makes a request the same request: model, messages, sampling and seed."""
    messages = [[m.role, m.content] for m in request.messages]
    parts = [model, messages, request.sampling.model_dump(mode="json"), request.seed]
    if request.prefix:  # (the keys of requests without one stay as they were)
        parts.append(request.prefix)
    return _digest(parts)


def reward_key(identity: str, prompt: Prompt, text: str) -> str:
    """What makes a reward the same reward: the scorer, the prompt record and the text."""
    return _digest([identity, prompt.model_dump(mode="json"), text])


def file_name(prompt_id: str) -> str:
    return hashlib.sha256(prompt_id.encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".jsonl"


def _read_lines(path: Path) -> tuple[list[bytes], bool]:
    """The complete lines of a journal file, and whether anything followed them (a torn
    last line). Never raises on content: the caller validates each line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    *lines, rest = data.split(b"\n")
    return [line + b"\n" for line in lines], bool(rest)


def _parse(line: bytes) -> _Header | _GenerationLine | _RewardLine | None:
    try:
        return _ANY_LINE.validate_json(line)
    except ValidationError:
        return None


@dataclass
class SessionCounts:
    """What this session's searches took from engines and from the journal."""

    generations: int = 0
    """Generations the engines made (and the journal recorded)."""
    completion_tokens: int = 0
    """Their completion tokens."""
    replayed: int = 0
    """Generations answered from the journal instead of an engine."""
    rewards_replayed: int = 0
    """Rewards taken from the journal instead of the reward."""


class Journal:
    """The journal of one run directory (one process at a time holds a run directory)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = SessionCounts()

    @classmethod
    def open(cls, run_path: Path, done: Iterable[str]) -> Journal:
        """The run's journal, without the files of prompts already committed (a kill
        between a prompt's commit and the deletion of its file leaves one behind) and
        without files whose header this version does not read."""
        journal = cls(run_path / JOURNAL)
        committed = set(done)
        for path in sorted(journal.folder.glob("*.jsonl")):
            lines, _ = _read_lines(path)
            header = _parse(lines[0]) if lines else None
            if not lines:
                path.unlink()  # killed while writing its header
            elif not isinstance(header, _Header) or header.version != VERSION:
                logger.warning("%s: not a journal this version reads; not used", path)
                path.unlink()
            elif header.prompt_id in committed:
                path.unlink()
        return journal

    def prompt(self, prompt_id: str) -> PromptJournal:
        """The journal of one prompt's search (read now, repaired if a kill tore it)."""
        return PromptJournal(self, prompt_id, self.folder / file_name(prompt_id))

    def complete(self, prompt_id: str) -> None:
        """Drop a prompt's journal once its records are committed."""
        (self.folder / file_name(prompt_id)).unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the journal: the run is complete, every prompt committed."""
        shutil.rmtree(self.folder, ignore_errors=True)


class PromptJournal:
    """What one prompt's search recorded, to replay, and where it records more."""

    def __init__(self, journal: Journal, prompt_id: str, path: Path) -> None:
        self.journal = journal
        self.prompt_id = prompt_id
        self.path = path
        self.replaying = True
        """False from the first request the journal answers differently: later lines
        were made after a different request, so none of them is used."""
        self._lines: list[tuple[int, bytes]] = []
        """The usable lines on disk after the header, with the index each is about."""
        self.generations: dict[int, _GenerationLine] = {}
        self.rewards: dict[int, _RewardLine] = {}
        self._load()

    def _header(self) -> bytes:
        header = _Header(version=VERSION, prompt_id=self.prompt_id)
        return storage.dumps_line(header.model_dump()).encode("utf-8")

    def _load(self) -> None:
        lines, torn = _read_lines(self.path)
        if not lines:
            if torn:  # killed while writing the header
                self.path.unlink()
            return
        header = _parse(lines[0])
        if header != _Header(version=VERSION, prompt_id=self.prompt_id):
            logger.warning("%s: not this prompt's journal; not used", self.path)
            self.path.unlink()
            return
        for number, line in enumerate(lines[1:], start=2):
            parsed = _parse(line)
            if not isinstance(parsed, _GenerationLine | _RewardLine):
                logger.warning(
                    "%s:%d: damaged journal line; it and the %d after it are made again",
                    self.path,
                    number,
                    len(lines) - number,
                )
                break
            if isinstance(parsed, _GenerationLine):
                self.generations[parsed.id] = parsed  # a later line wins
            else:
                self.rewards[parsed.id] = parsed
            self._lines.append((parsed.id, line))
        if torn or len(self._lines) + 1 < len(lines):
            self._rewrite()  # so that new lines never follow a torn or damaged one

    def _rewrite(self) -> None:
        """The file as the header and the usable lines, replaced atomically."""
        text = b"".join([self._header(), *(line for _, line in self._lines)])
        storage.replace_file(self.path, text.decode("utf-8"))

    def generation(self, index: int, key: str) -> Generation | None:
        """The recorded generation of candidate `index` if it was made for the request
        `key`; None when the engines must make it."""
        line = self.generations.get(index) if self.replaying else None
        if line is None:
            return None
        if line.request != key:
            logger.warning(
                "%s: generation %d of prompt %r was made for another request (the prompts "
                "file, a template or multisample changed since); it and the later ones "
                "are made again",
                self.path,
                index,
                self.prompt_id,
            )
            self._drop_from(index)
            return None
        self.journal.counts.replayed += 1
        return line.generation()

    def reward(self, index: int, key: str) -> float | None:
        """The recorded reward of candidate `index` if it was given for `key`."""
        line = self.rewards.get(index)
        if line is None or line.key != key:
            return None
        self.journal.counts.rewards_replayed += 1
        return line.reward

    def _drop_from(self, index: int) -> None:
        """Stop replaying: keep only the lines of the candidates before `index` (all of
        them already answered from the journal, since indices are asked in order)."""
        self.replaying = False
        self._lines = [(i, line) for i, line in self._lines if i < index]
        self.generations = {i: g for i, g in self.generations.items() if i < index}
        self.rewards = {i: r for i, r in self.rewards.items() if i < index}
        self._rewrite()

    def add_generations(self, made: Sequence[tuple[int, str, Generation]]) -> None:
        """Record generations the engines just made: (index, request key, generation)."""
        records = [
            _GenerationLine(id=index, request=key, **asdict(generation)).model_dump(mode="json")
            for index, key, generation in made
        ]
        self._append(records)
        self.journal.counts.generations += len(made)
        self.journal.counts.completion_tokens += sum(g.completion_tokens for _, _, g in made)

    def add_rewards(self, scored: Sequence[tuple[int, str, float]]) -> None:
        """Record rewards just given: (index, reward key, reward)."""
        self._append(
            [
                _RewardLine(id=index, key=key, reward=value).model_dump()
                for index, key, value in scored
            ]
        )

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        lines = [(int(r["id"]), storage.dumps_line(r).encode("utf-8")) for r in records]
        data = b"".join(line for _, line in lines)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = self._header() + data
        storage.append_bytes(self.path, data, sync=False)
        self._lines += lines
