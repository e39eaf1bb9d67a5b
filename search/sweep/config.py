"""A sweep's config: methods x budgets x seeds over one prompts file, and its cells (each
a synthesize run of its own, under `<sweep>/cells/<method>-b<budget>-s<seed>/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from multisample.engine.config import Settings, model_names, repeated
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.seeds import derive_seed
from multisample.search.registry import STRATEGIES, StrategySettings
from multisample.search.synthesize.config import SearchRunConfig, SynthesizeConfig

CELLS = "cells"
"""The sweep directory's folder of cells."""


class SweepMethod(Settings):
    """One method of a sweep: a name and a strategy with its settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    """How tables, plots and the report call this method; unique within a sweep."""
    strategy: StrategySettings
    """The search strategy and its settings, as `strategy` of a synthesize config."""
    reuse_prefix: bool = False
    """Take each smaller budget's search from the largest budget's search instead of a
    fresh one: its first b samples, or `subsamples` random sets of b (methods that search
    alike share that search: best_of_n, majority and weighted_best_of_n of one model, with
    reuse_prefix, sample once and each choose its answer). Only strategies whose
    search at budget b is the first b samples of a larger one allow it (best_of_n,
    majority, weighted_best_of_n); it saves the smaller budgets' generations, but then the
    budgets' results are nested, not independent."""
    subsamples: int = Field(1, ge=1, le=1000)
    """With reuse_prefix: how many random sets of b of the largest search's samples each
    smaller budget b averages its quality and compute over (search-and-learn's trick for
    smooth curves from one large-N run; seeded by the sweep seed and b); 1: the first b."""


class SweepConfig(SearchRunConfig):
    """An inference-scaling sweep: methods x budgets x seeds over one prompts file."""

    methods: list[SweepMethod] = Field(min_length=1)
    """The methods compared, each a name and a strategy."""
    budgets: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2, 4, 8], min_length=1
    )
    """Generations per prompt of each cell (every call of a policy model counts)."""
    eval_reward: RewardSpec | None = None
    """A reward that evaluates the answers `reward` selects, as inference-scaling papers
    select with one model and evaluate with another; any reward `reward` accepts. None:
    the selection reward evaluates too (every curve is then an oracle best-of-N)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Sweep seeds; every cell's search seed derives from one of them and its budget."""
    concurrency: int = Field(32, ge=1)
    """Prompt searches in flight at once, over all cells together."""
    top_k: int = Field(4, ge=1)
    """k of the 'mean top-k reward' quality measure (a search with fewer scored samples
    averages all it has)."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[SweepMethod], info: ValidationInfo) -> list[SweepMethod]:
        twice = repeated([m.name for m in methods])
        if twice:
            raise ValueError(f"method names must be unique; repeated: {', '.join(twice)}")
        models = model_names(info.data.get("models", []))
        for index, method in enumerate(methods):
            for model in method.strategy.models_used(models) if models else []:
                if model not in models:
                    raise ValueError(
                        f"methods[{index}] ({method.name}): no model named {model!r}; "
                        f"configured: {models}"
                    )
            try:
                method.strategy.check_pool(models) if models else None
                if "reward" in info.data:
                    method.strategy.check_run(info.data["reward"], None)
            except ValueError as exc:
                raise ValueError(f"methods[{index}] ({method.name}): {exc}") from None
            if method.reuse_prefix and not method.strategy.prefix_reusable:
                reusable = " or ".join(k for k, (s, _) in STRATEGIES.items() if s.prefix_reusable)
                raise ValueError(
                    f"methods[{index}] ({method.name}): reuse_prefix needs a {reusable} "
                    f"strategy (got {method.strategy.kind}): other searches at a smaller "
                    "budget are not a prefix of a larger one"
                )
        return methods

    @field_validator("budgets", "seeds")
    @classmethod
    def _distinct(cls, values: list[int], info: ValidationInfo) -> list[int]:
        twice = repeated(values)
        if twice:
            raise ValueError(f"{info.field_name} must be distinct; repeated: {twice}")
        return values

    def evaluator(self) -> RewardSpec:
        """The reward that evaluates: `eval_reward`, else the selection reward."""
        return self.eval_reward or self.reward

    def evaluator_name(self) -> str | None:
        """The separate evaluation reward's kind, None when the selection reward evaluates."""
        return None if self.eval_reward is None else self.eval_reward.kind

    def method(self, name: str) -> SweepMethod:
        return next(m for m in self.methods if m.name == name)

    def cells(self) -> list[Cell]:
        """Every table row's cell: method x budget x seed, in config order."""
        return [
            Cell(m.name, b, s)
            for m in self.methods
            for b in sorted(self.budgets)
            for s in self.seeds
        ]

    def source(self, cell: Cell) -> Cell:
        """The cell whose search holds `cell`'s samples: itself, or for a method that
        reuses prefixes, the same seed's cell at the largest budget, of the first such
        method that searches alike (best-of-N, majority and weighted best-of-N of one
        model share one search, and differ only in the answer they choose from it)."""
        method = self.method(cell.method)
        if not method.reuse_prefix:
            return cell
        first = next(
            m for m in self.methods if m.reuse_prefix and m.strategy.same_search(method.strategy)
        )
        return Cell(first.name, max(self.budgets), cell.seed)

    def searches(self) -> list[Cell]:
        """The cells that run a search of their own (each once)."""
        return list(dict.fromkeys(self.source(c) for c in self.cells()))

    def cell_config(self, cell: Cell) -> SynthesizeConfig:
        """The synthesize config of a cell's own run directory."""
        data = self.model_dump(
            mode="json", exclude={"methods", "budgets", "seeds", "top_k", "eval_reward"}
        )
        data.update(
            strategy=self.method(cell.method).strategy.model_dump(mode="json"),
            budget={"generations": cell.budget},
            seed=cell_seed(cell.seed, cell.budget),
        )
        return SynthesizeConfig.model_validate(data)

    def models_used(self) -> list[str]:
        names = self.model_names()
        used = {model for m in self.methods for model in m.strategy.models_used(names)}
        return [n for n in names if n in used]


@dataclass(frozen=True, order=True)
class Cell:
    method: str
    budget: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-b{self.budget}-s{self.seed}"


def cell_seed(seed: int, budget: int) -> int:
    """The search seed of a cell: fresh for every budget (a larger budget does not replay
    a smaller one's samples), shared by the methods at one budget and seed."""
    return derive_seed("sweep", seed, budget)


def cell_path(path: Path, cell: Cell) -> Path:
    return path / CELLS / cell.name
