"""A run directory's dataset card: README.md with the YAML front matter Hugging Face
dataset cards have, so `datasets.load_dataset(RUN_DIR, "pairs")` finds its files.

The front matter's `configs` name the run's JSONL files (only those that exist and hold
rows); the text says what made them: the strategy, models, reward, budget, the counts
and mean rewards of the summary, how to load each, and the config itself. It is written
with the summary at the end of a run (each sweep cell is a run of its own) and again by
`multisample export`, which adds its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from multisample.engine.storage import CONFIG, write_atomic
from multisample.search.synthesize.config import SynthesizeConfig

CARD = "README.md"

FILES: tuple[tuple[str, str, str, str], ...] = (
    # (config name, split, path, what a row is)
    ("samples", "train", "samples.jsonl", "one generation: its prompt id, model, lineage, text, "
     "reward, tokens, seed"),
    ("pairs", "train", "pairs.jsonl", "one DPO preference pair in TRL's conversational format "
     "(prompt, chosen, rejected) with both samples' rewards"),
    ("prompts", "train", "prompts.jsonl", "one prompt as it was read: its turns, reference, "
     "constraints and metadata"),
    ("sft", "train", "export/sft-train.jsonl", "the best sample of one prompt as a TRL "
     "conversation (`messages`): `multisample export --sft`"),
    ("sft", "test", "export/sft-test.jsonl", "the same, for the held-out prompts"),
    ("pairs_split", "train", "export/pairs-train.jsonl", "the pairs of the training prompts: "
     "`multisample export --pairs`"),
    ("pairs_split", "test", "export/pairs-test.jsonl", "the pairs of the held-out prompts"),
)  # fmt: skip


TEXT = """---
{meta}---

# multisample run `{name}`

Synthetic data made by multisample's `synthesize`: strategy **{strategy}**,
reward **{reward}**, budget per prompt: {budget}, seed {seed},
prompts from `{prompts}`.

## Models

| name | model | backend | system prompt |
| --- | --- | --- | --- |
{models}

## Counts

| | |
| --- | --- |
{counts}

## Files

| file | config / split | rows | one row is |
| --- | --- | --- | --- |
{files}

Rows of prompts read with a column mapping carry the file's other columns in `metadata`.

## Loading

RUN_DIR is this folder (it was `{run}`):

```python
from datasets import load_dataset

{loading}
```

Each config is a `DatasetDict` of its splits; one file alone loads with
`load_dataset("json", data_files="RUN_DIR/pairs.jsonl", split="train")`.

## Config

```yaml
{config}
```
"""
"""The card's text; `card_text` fills it in."""

COUNTS = (
    ("prompts", "prompts"),
    ("samples", "samples"),
    ("pairs", "preference pairs"),
    ("mean_reward_first_sample", "mean reward, first sample"),
    ("mean_reward_best", "mean reward, best of the search"),
    ("mean_reward_all", "mean reward, every sample"),
)
"""The summary's figures the card shows, and their labels."""


def _rows(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def front_matter(run: Path) -> dict[str, Any]:
    """The card's metadata: a `configs` entry per JSONL file with rows."""
    configs: dict[str, list[dict[str, str]]] = {}
    for name, split, relative, _ in FILES:
        path = run / relative
        if path.is_file() and _rows(path):
            configs.setdefault(name, []).append({"split": split, "path": relative})
    entries: list[dict[str, Any]] = [
        {"config_name": name, "data_files": files} for name, files in configs.items()
    ]
    if entries:
        entries[0]["default"] = True
    return {
        "pretty_name": f"multisample run {run.name}",
        "tags": ["synthetic", "multisample"],
        "configs": entries,
    }


def card_text(run: Path, config: SynthesizeConfig, summary: dict[str, Any]) -> str:
    """README.md of the run directory `run`, made with `config`, as `summary` says."""
    meta = yaml.safe_dump(front_matter(run), sort_keys=False, allow_unicode=True)
    models = "\n".join(
        f"| {spec.name} | `{spec.model}` | {spec.backend} | {_cell(spec.system_prompt)} |"
        for spec in config.models
    )
    budget = ", ".join(f"{k} {v}" for k, v in config.budget.model_dump(exclude_none=True).items())
    counts = "\n".join(f"| {label} | {_figure(summary.get(key))} |" for key, label in COUNTS)
    files = "\n".join(
        f"| `{relative}` | `{name}` / {split} | {_rows(run / relative)} | {what} |"
        for name, split, relative, what in FILES
        if (run / relative).is_file()
    )
    names = [c["config_name"] for c in front_matter(run)["configs"]]
    loading = (
        "\n".join(f'{name} = load_dataset("RUN_DIR", "{name}")' for name in names)
        or "# no files with rows yet"
    )
    config_yaml = (run / CONFIG).read_text(encoding="utf-8") if (run / CONFIG).is_file() else ""
    return TEXT.format(
        meta=meta,
        name=run.name,
        run=run,
        strategy=config.strategy.kind,
        reward=config.reward.kind,
        budget=budget or "none",
        seed=config.seed,
        prompts=config.prompts,
        models=models,
        counts=counts,
        files=files,
        loading=loading,
        config=config_yaml.rstrip(),
    )


def write_card(run: Path, config: SynthesizeConfig, summary: dict[str, Any]) -> None:
    """Write (or rewrite) the run directory's README.md, atomically."""
    write_atomic(run / CARD, card_text(run, config, summary))


def _cell(text: str | None) -> str:
    """Text for one table cell: on one line, pipes escaped."""
    if not text:
        return "-"
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= 80 else flat[:77] + "..."


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
