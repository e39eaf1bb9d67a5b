"""What `multisample serve` is given: the pool, the routes (a strategy that answers as a
model), the selection routes (a bandit that picks among models and routes per request),
where it listens and what it allows one client."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from multisample.bandits.policies.co_ucb import CoUCBSettings
from multisample.bandits.policies.registry import PolicySettings
from multisample.bandits.select.config import (
    AdaptSettings,
    CandidateSpec,
    RewardPreference,
    SelectConfig,
)
from multisample.engine.config import (
    MODEL_NAME,
    BudgetConfig,
    PoolConfig,
    Settings,
    repeated,
)
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.rewards.verifiable import VerifiableRewardSpec
from multisample.engine.types import SamplingSettings
from multisample.search.best_of_n import BestOfNSettings
from multisample.search.pairs import PairSettings
from multisample.search.registry import StrategySettings


class RouteSpec(Settings):
    """A strategy that answers as a model: a request naming the route runs the search for
    it, and the answer is the sample the strategy chooses."""

    name: str = Field(pattern=MODEL_NAME)
    """The `model` a request names to use the route."""
    strategy: StrategySettings = Field(default_factory=BestOfNSettings)
    """The search and its settings, as `strategy` of a synthesize config."""
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(generations=4))
    """What one request's search may spend."""
    reward: RewardSpec = Field(default_factory=lambda: VerifiableRewardSpec(kind="verifiable"))
    """How the search scores its samples."""
    pairs: PairSettings = Field(default_factory=PairSettings)
    """How each request's samples make preference pairs in the traffic's records."""


class ClientPreference(Settings):
    """The client (or a person on the comparison page) says which answer it prefers,
    through POST /v1/feedback: a request gets both answers as its two choices."""

    kind: Literal["client"] = "client"


ServeFeedback = Annotated[RewardPreference | ClientPreference, Field(discriminator="kind")]


class ServeCandidate(CandidateSpec):
    """An arm of a selection route: a pool model (with its own system prompt and sampling,
    as in `select`) or a route."""

    model: str = ""
    """The pool model that answers; empty when `route` answers."""
    route: str | None = None
    """The route that answers (a strategy over the pool: its compute against a model's)."""

    @model_validator(mode="after")
    def _model_or_route(self) -> ServeCandidate:
        if bool(self.model) == (self.route is not None):
            raise ValueError(f"candidate {self.name!r}: give a model or a route, one of them")
        return self


class SelectionSpec(Settings):
    """A bandit that serves: per request the policy picks a pair of candidates (one for a
    single-arm policy), both answer, the feedback prefers one, and the policy learns;
    with `adapt`, model candidates are trained online on what the duels taught them and
    serve their new versions without a restart (select's collaborative update)."""

    name: str = Field("auto", pattern=MODEL_NAME)
    """The `model` a request names to use it."""
    candidates: list[ServeCandidate] = Field(min_length=2)
    """The arms."""
    policy: PolicySettings = Field(default_factory=CoUCBSettings)
    """The bandit policy; `kind` names it."""
    feedback: ServeFeedback = Field(default_factory=RewardPreference)
    """reward: a reward scores both answers at once and the preferred one is returned;
    client: both are returned and POST /v1/feedback says which was preferred."""
    adapt: AdaptSettings | None = None
    """Online adaptation of the model candidates (select's `adapt`); None: none."""
    seed: int = 0
    """Seeds the policy, the answers' sampling and the adaptation."""


class Limits(Settings):
    """What one request, and one client, may ask of the gateway."""

    max_body_bytes: int = Field(1_000_000, ge=1024)
    """The largest request body read; a larger one is refused (413)."""
    max_tokens: int = Field(2048, ge=1)
    """The most tokens a request may ask for (max_tokens or max_completion_tokens)."""
    max_n: int = Field(8, ge=1)
    """The most choices (`n`) one request may ask for."""
    concurrency: int = Field(64, ge=1)
    """Requests answered at once; the ones after wait in the queue."""
    queue: int = Field(256, ge=0)
    """Requests waiting for a turn; beyond it a request is refused at once (429)."""
    per_client: int = Field(16, ge=1)
    """Requests one client (its API key, else its address) may have in flight at once."""


class ServeConfig(PoolConfig):
    """An OpenAI-compatible gateway over a model pool, its routes and selection routes."""

    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    """Default sampling; a request's own fields (temperature, top_p, max_tokens, stop)
    override it."""
    routes: list[RouteSpec] = Field(default_factory=list)
    """Strategies served as models."""
    selections: list[SelectionSpec] = Field(default_factory=list)
    """Bandits served as models."""
    host: str = "127.0.0.1"
    """Where it listens; 127.0.0.1 (this machine only) unless told otherwise."""
    port: int = Field(8000, ge=0, le=65535)
    """The port; 0 picks a free one (printed, and written to the run's server.json)."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable holding the key clients must send (Authorization:
    Bearer KEY); None: no key."""
    limits: Limits = Field(default_factory=Limits)
    """Caps on requests and clients."""
    output_dir: str = "runs"
    """Where run directories are created (the traffic is a run directory)."""
    seed: int = 0
    """Seeds requests that give no seed of their own."""

    @model_validator(mode="after")
    def _names(self) -> ServeConfig:
        names = [*self.model_names(), *(r.name for r in self.routes)]
        names += [s.name for s in self.selections]
        twice = repeated(names)
        if twice:
            raise ValueError(
                f"models, routes and selections share one namespace; repeated: {', '.join(twice)}"
            )
        known = self.model_names()
        routes = {r.name: r for r in self.routes}
        for route in self.routes:
            for model in route.strategy.models_used(known):
                if model not in known:
                    raise ValueError(f"route {route.name!r}: no pool model named {model!r}")
            route.strategy.check_pool(known)
            route.strategy.check_run(route.reward, route.budget)
        for selection in self.selections:
            for candidate in selection.candidates:
                if candidate.route is not None and candidate.route not in routes:
                    raise ValueError(
                        f"selection {selection.name!r}: candidate {candidate.name!r} names no "
                        f"route {candidate.route!r}"
                    )
            self.select_config(selection)  # select's own checks of the candidates
        return self

    def select_config(self, selection: SelectionSpec) -> SelectConfig:
        """The `select` config a selection route keeps its state with: its candidates,
        policy and adaptation. A route candidate stands there as the first model its route
        uses (what merged adaptation must not share), never to answer."""
        known = self.model_names()
        routes = {r.name: r for r in self.routes}
        candidates = [
            CandidateSpec(
                name=c.name,
                model=c.model or routes[c.route].strategy.models_used(known)[0],  # type: ignore[index]
                system_prompt=c.system_prompt,
                sampling=c.sampling,
            )
            for c in selection.candidates
        ]
        feedback = selection.feedback
        if isinstance(selection.adapt, AdaptSettings):
            adapted = selection.adapt.candidates or [c.name for c in selection.candidates]
            routed = [c.name for c in selection.candidates if c.route and c.name in adapted]
            if routed:
                raise ValueError(
                    f"selection {selection.name!r}: adapt.candidates: {routed[0]!r} is a route; "
                    "only model candidates adapt (name them in adapt.candidates)"
                )
        return SelectConfig.model_validate(
            {
                "models": [m.model_dump() for m in self.models],
                "ray_address": self.ray_address,
                "prompts": "-",
                "sampling": self.sampling.model_dump(),
                "candidates": [c.model_dump() for c in candidates],
                "policy": selection.policy.model_dump(),
                "feedback": feedback.model_dump()
                if isinstance(feedback, RewardPreference)
                else {"kind": "human"},
                "adapt": None if selection.adapt is None else selection.adapt.model_dump(),
                "seed": selection.seed,
                "batch": 1,
                "output_dir": self.output_dir,
            }
        )


LOOPBACK = ("127.0.0.1", "localhost", "::1")
RESUMABLE = frozenset({"host", "port", "api_key_env", "limits"})
"""Fields a restart with --resume may change: where it listens and what it allows, not
what answers."""


def serve_traps(config: ServeConfig) -> list[str]:
    """Warnings about a serve config that runs but may not do what was meant."""
    warnings = []
    if config.host not in LOOPBACK and config.api_key_env is None:
        warnings.append(
            f"host {config.host}: anyone who reaches this port can use the models; set "
            "api_key_env to ask for a key"
        )
    return warnings
