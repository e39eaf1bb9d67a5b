"""The configs of the runs that search: what synthesize and sweep share, and synthesize's
own (a strategy, a budget, how pairs are made, a seed)."""

from __future__ import annotations

from pydantic import Field

from multisample.engine.config import BudgetConfig, ConfigError, RunConfig
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.rewards.verifiable import VerifiableRewardSpec
from multisample.search.best_of_n import BestOfNSettings
from multisample.search.pairs import PairSettings
from multisample.search.registry import StrategySettings


class SearchRunConfig(RunConfig):
    """What synthesize and sweep configs share beyond every run's settings: the reward,
    the prompt templates and how many searches run at once."""

    reward: RewardSpec = Field(default_factory=lambda: VerifiableRewardSpec(kind="verifiable"))
    """How responses are scored."""
    templates: dict[str, str] = Field(default_factory=dict)
    """Template files replacing the built-in ones, by name: refine, aggregate, feedback,
    corrector (see search/templates/)."""
    concurrency: int = Field(16, ge=1)
    """Prompts searched at once."""


class SynthesizeConfig(SearchRunConfig):
    """A synthesis run: models, reward, strategy, budget, prompts and outputs."""

    strategy: StrategySettings = Field(default_factory=BestOfNSettings)
    """The search strategy and its settings; `kind` names it."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    """What each prompt's search may spend."""
    pairs: PairSettings = Field(default_factory=PairSettings)
    """How DPO preference pairs are built from each prompt's samples."""
    seed: int = 0
    """Base seed: every generation's seed derives from it, the prompt id and its index."""

    def check_models(self) -> None:
        """The model names the strategy refers to must exist in the pool (checked before
        any engine starts)."""
        names = self.model_names()
        for model in self.strategy.models_used(names):
            if model not in names:
                raise ConfigError(f"strategy: no model named {model!r}; configured: {names}")
        try:
            self.strategy.check_pool(names)
            self.strategy.check_run(self.reward, self.budget)
        except ValueError as exc:
            raise ConfigError(f"strategy: {exc}") from None
