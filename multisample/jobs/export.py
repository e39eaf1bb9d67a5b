"""`multisample export RUN_DIR`: a run directory's data as training sets, split by prompt.

- SFT (`--sft`): the best sample of each prompt (highest reward; the earliest on a tie)
  as one conversation in TRL's conversational format, `messages`: the best sample's
  model's system prompt (if its spec has one), the prompt's turns exactly as the model
  was sent them for the original prompt (a multi-turn prompt's earlier turns, then its
  user turn), and the sample as the assistant turn. An answer a strategy refined or
  aggregated is paired with the original prompt, as the pairs are: the data teaches the
  model to give the search's answer at once.
- Pairs (`--pairs`): the run's preference pairs as they are.

Both are split by prompt with `multisample.jobs.train.split_by_prompt` (seeded, the same split
`multisample train` makes with the same seed and fraction): a test prompt's sample and
pairs are all in the test files. Only committed prompts are exported. The files are
written into a temporary folder that then replaces RUN_DIR/export/ whole, so a reader
never sees one export's SFT beside another's pairs; the dataset card then lists them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multisample.engine.config import ConfigError
from multisample.engine.config_files import load_config
from multisample.engine.prompts import load_prompts
from multisample.engine.storage import (
    CONFIG,
    PROGRESS,
    SUMMARY,
    checked_jsonl,
    dumps_line,
    install_folder,
    read_document,
    read_jsonl,
)
from multisample.engine.types import Prompt
from multisample.jobs.train import split_by_prompt
from multisample.search.pairs import conversation
from multisample.search.synthesize.card import write_card
from multisample.search.synthesize.config import SynthesizeConfig
from multisample.search.synthesize.records import (
    PAIRS,
    PROMPTS,
    SAMPLES,
    PairShape,
    SampleShape,
)

EXPORT = "export"
SPLIT = "split.json"


class ExportInputError(RuntimeError):
    """What the user must fix before exporting (one line, names the file or option)."""


@dataclass(frozen=True)
class ExportOptions:
    sft: bool = True
    pairs: bool = True
    test: float = 0.0
    """Share of the prompts held out into the test files (0: everything is train)."""
    seed: int = 0


def parse_split(text: str) -> float:
    """The test share of a `--split test=FRACTION` option."""
    name, _, value = text.partition("=")
    if name.strip() != "test" or not value:
        raise ExportInputError(f"--split: expected test=FRACTION (e.g. test=0.1), got {text!r}")
    try:
        share = float(value)
    except ValueError:
        raise ExportInputError(f"--split: {value!r} is not a number") from None
    if not 0.0 <= share < 1.0:
        raise ExportInputError(f"--split: the test share must be in [0, 1), got {share}")
    return share


def best_samples(run: Path, committed: set[str]) -> dict[str, dict[str, Any]]:
    """Each committed prompt's best scored sample (highest reward, earliest id on a tie)."""
    best: dict[str, dict[str, Any]] = {}
    for record in checked_jsonl(run / SAMPLES, SampleShape):
        if record["prompt_id"] not in committed or record.get("reward") is None:
            continue
        held = best.get(record["prompt_id"])
        if held is None or (record["reward"], -record["id"]) > (held["reward"], -held["id"]):
            best[record["prompt_id"]] = record
    return best


def run_prompts(run: Path, config: SynthesizeConfig, wanted: set[str]) -> dict[str, Prompt]:
    """The prompts `wanted`: from the run's prompts.jsonl, else (a run made before it was
    written) from the config's prompts file."""
    found: dict[str, Prompt] = {}
    for record in read_jsonl(run / PROMPTS):
        if record.get("prompt_id") in wanted:
            data = {k: v for k, v in record.items() if k != "prompt_id"}
            found[record["prompt_id"]] = Prompt.model_validate({"id": record["prompt_id"], **data})
    missing = wanted - set(found)
    if missing:
        try:
            by_id = {p.id: p for p in load_prompts(config.prompts).prompts}
        except ConfigError as exc:
            raise ExportInputError(
                f"{run / PROMPTS}: lacks {len(missing)} prompt(s), and the config's prompts "
                f"file cannot be read: {exc}"
            ) from None
        absent = sorted(missing - set(by_id))
        if absent:
            raise ExportInputError(
                f"{config.prompts}: no prompt {absent[0]!r} of the run (has the file changed?)"
            )
        found.update((i, by_id[i]) for i in missing)
    return found


def sft_record(prompt: Prompt, sample: dict[str, Any], system_prompt: str | None) -> dict[str, Any]:
    """One SFT example: the conversation the model was sent, then its best answer."""
    record: dict[str, Any] = {
        "messages": [
            *conversation(prompt, system_prompt),
            {"role": "assistant", "content": sample["text"]},
        ],
        "prompt_id": prompt.id,
        "sample_id": sample["id"],
        "model": sample["model"],
        "reward": sample["reward"],
    }
    if prompt.metadata:
        record["metadata"] = prompt.metadata
    return record


def export_run(run: Path, options: ExportOptions) -> dict[str, Any]:
    """Write RUN/export/ (SFT and/or pairs, split by prompt); return what was written."""
    if not (run / CONFIG).is_file():
        raise ExportInputError(f"{run}: not a run directory (no {CONFIG})")
    if (run / "cells").is_dir() and not (run / SAMPLES).exists():
        raise ExportInputError(f"{run}: a sweep; export one of its cells ({run}/cells/<cell>)")
    config = load_config(run / CONFIG, SynthesizeConfig)
    order = {prompt_id: i for i, prompt_id in enumerate(committed_order(run))}
    committed = set(order)
    if not committed:
        raise ExportInputError(f"{run}: no prompt is committed yet (empty {PROGRESS})")
    train_ids, test_ids = split_by_prompt(sorted(committed), options.test, options.seed)
    test = set(test_ids)
    files: dict[str, list[dict[str, Any]]] = {}
    if options.sft:
        best = best_samples(run, committed)
        prompts = run_prompts(run, config, set(best))
        systems = config.system_prompts()
        for prompt_id in sorted(best, key=order.__getitem__):
            sample = best[prompt_id]
            split = "test" if prompt_id in test else "train"
            record = sft_record(prompts[prompt_id], sample, systems.get(sample["model"]))
            files.setdefault(f"sft-{split}.jsonl", []).append(record)
    if options.pairs:
        for record in checked_jsonl(run / PAIRS, PairShape):
            if record["prompt_id"] in committed:
                split = "test" if record["prompt_id"] in test else "train"
                files.setdefault(f"pairs-{split}.jsonl", []).append(record)
    manifest = {
        "test_share": options.test,
        "seed": options.seed,
        "train_prompts": train_ids,
        "test_prompts": test_ids,
        "rows": {name: len(rows) for name, rows in sorted(files.items())},
    }
    _replace_export(run, files, manifest)
    if (run / SUMMARY).is_file():
        summary = read_document(run / SUMMARY)
        write_card(run, config, summary)
    return manifest


def committed_order(run: Path) -> list[str]:
    """Committed prompt ids in the order they were committed."""
    return list(dict.fromkeys(r["prompt_id"] for r in read_jsonl(run / PROGRESS)))


def _replace_export(run: Path, files: dict[str, list[dict[str, Any]]], manifest: Any) -> None:
    """Build the export in a temporary folder, then swap it for RUN/export/."""
    for stale in run.glob(f".{EXPORT}.*"):  # a killed export's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(dir=run, prefix=f".{EXPORT}.new-"))
    try:
        for name, rows in files.items():
            (building / name).write_text("".join(dumps_line(r) for r in rows), encoding="utf-8")
        (building / SPLIT).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        install_folder(building, run / EXPORT)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
