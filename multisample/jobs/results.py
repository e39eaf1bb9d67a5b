"""What a run returns: its records and summary, read back from its run directory once
the summary marks it complete (so a resumed run returns all of it, not this session's
part), with `to_dataset` for a Hugging Face `datasets.Dataset` of any of its tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from multisample.bandits.select.state import ANSWERS, ROUNDS
from multisample.engine.storage import SUMMARY, read_document, read_jsonl
from multisample.search.sweep.config import CELLS
from multisample.search.synthesize.records import PAIRS, SAMPLES

if TYPE_CHECKING:
    import datasets


def as_dataset(rows: list[dict[str, Any]] | pd.DataFrame) -> datasets.Dataset:
    """Records or a table as a `datasets.Dataset` (imported here: only this needs it)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "to_dataset needs the Hugging Face `datasets` package: pip install datasets"
        ) from None
    if isinstance(rows, pd.DataFrame):
        return datasets.Dataset.from_pandas(rows, preserve_index=False)
    return datasets.Dataset.from_list(rows)


def _summary(path: Path) -> dict[str, Any]:
    return read_document(path / SUMMARY)


def _pick(tables: dict[str, Any], name: str, kind: str) -> Any:
    if name not in tables:
        raise ValueError(f"{kind}.to_dataset: no table {name!r}; choose one of {list(tables)}")
    return tables[name]


@dataclass(frozen=True)
class RunResult:
    """A synthesize run: every sample (with its lineage and reward) and preference pair,
    as the run directory's samples.jsonl and pairs.jsonl hold them, and its summary."""

    path: Path
    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    pairs: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """A complete synthesize run directory (one of a sweep's cells too)."""
        path = Path(path)
        return cls(
            path,
            _summary(path),
            list(read_jsonl(path / SAMPLES)),
            list(read_jsonl(path / PAIRS)),
        )

    def best(self) -> list[dict[str, Any]]:
        """Each prompt's best-rewarded sample (the first one on a tie), in run order."""
        best: dict[str, dict[str, Any]] = {}
        for sample in self.samples:
            if sample["reward"] is None:
                continue
            held = best.get(sample["prompt_id"])
            if held is None or sample["reward"] > held["reward"]:
                best[sample["prompt_id"]] = sample
        return list(best.values())

    def to_dataset(self, name: str = "samples") -> datasets.Dataset:
        """'samples', 'pairs' (TRL's conversational preference format) or 'best'."""
        tables = {"samples": self.samples, "pairs": self.pairs, "best": None}
        rows = _pick(tables, name, "RunResult")
        return as_dataset(self.best() if name == "best" else rows)


@dataclass(frozen=True)
class SweepResult:
    """A sweep: its summary, its tables (one row per method x budget x seed cell; per
    prompt of each cell; per method x budget with 95% intervals) and its report."""

    path: Path
    summary: dict[str, Any]
    table: pd.DataFrame
    units: pd.DataFrame
    curves: pd.DataFrame
    report: str

    @classmethod
    def load(cls, path: str | Path) -> SweepResult:
        path = Path(path)
        return cls(
            path,
            _summary(path),
            pd.read_parquet(path / "table.parquet"),
            pd.read_parquet(path / "units.parquet"),
            pd.read_csv(path / "curves.csv"),
            (path / "report.md").read_text(encoding="utf-8"),
        )

    @property
    def cells(self) -> list[str]:
        """The cells that ran a search, as `<method>-b<budget>-s<seed>`."""
        return sorted(p.name for p in (self.path / CELLS).iterdir() if p.is_dir())

    def cell(self, name: str) -> RunResult:
        """One cell's samples and pairs (a cell is a synthesize run of its own)."""
        if name not in self.cells:
            raise ValueError(f"SweepResult.cell: no cell {name!r}; cells: {self.cells}")
        return RunResult.load(self.path / CELLS / name)

    def to_dataset(self, name: str = "table") -> datasets.Dataset:
        """'table', 'units' or 'curves'."""
        tables = {"table": self.table, "units": self.units, "curves": self.curves}
        return as_dataset(_pick(tables, name, "SweepResult"))


@dataclass(frozen=True)
class SelectResult:
    """A select run: its summary (the best candidate, wins, regret), each round's row
    and every answer with its score and the preference."""

    path: Path
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]
    answers: list[dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path) -> SelectResult:
        path = Path(path)
        return cls(
            path,
            _summary(path),
            list(read_jsonl(path / ROUNDS)),
            list(read_jsonl(path / ANSWERS)),
        )

    def to_dataset(self, name: str = "answers") -> datasets.Dataset:
        """'answers' or 'rounds'."""
        tables = {"answers": self.answers, "rounds": self.rounds}
        return as_dataset(_pick(tables, name, "SelectResult"))


@dataclass(frozen=True)
class ServeResult:
    """A stopped server's run: its summary (requests by model, each selection route's
    state) and where its traffic is (routes/, models/, selections/, feedback.jsonl)."""

    path: Path
    summary: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> ServeResult:
        path = Path(path)
        return cls(path, _summary(path))
