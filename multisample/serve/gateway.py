"""What answers a request, whatever its `model` names: a pool model (or adapter), a route
(a strategy searching for the request) or a selection route (a bandit choosing among
models and routes). HTTP-free: engine.pool below, serve.app above.

Seeds: a request's `seed` seeds its samples (choice i of a pool model: seed + i; a
route's search: its run seed); without one, they derive from the server's seed and the
request's id, so every response can be reproduced from its records.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from multisample.engine.config import find_specs
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.base import Reward
from multisample.engine.rewards.correct import CorrectRewardSpec
from multisample.engine.seeds import derive_seed
from multisample.engine.types import (
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    SamplingSettings,
)
from multisample.search.base import SearchContext
from multisample.search.pairs import pair_records
from multisample.search.registry import run_strategy
from multisample.search.synthesize.records import with_metadata
from multisample.search.templates import load_templates
from multisample.serve.config import RouteSpec, ServeConfig
from multisample.serve.protocol import APIError, ChatRequest, Extension, Usage
from multisample.serve.selection import SelectionRoute
from multisample.serve.traffic import Traffic

Kind = Literal["model", "route", "selection"]


@dataclass
class Answer:
    """A response: its choices (text, finish reason), every internal call's tokens, what
    answered, and the trace (with `multisample.trace`)."""

    choices: list[tuple[str, str | None]]
    usage: Usage
    kind: Kind
    trace: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class Gateway:
    """The pool, the routes' rewards and the selection routes of one server."""

    def __init__(
        self,
        config: ServeConfig,
        pool: ModelPool,
        traffic: Traffic,
        rewards: dict[str, Reward],
        selections: dict[str, SelectionRoute],
    ) -> None:
        self.config = config
        self.pool = pool
        self.traffic = traffic
        self.rewards = rewards
        """Each route's reward, started, by route name."""
        self.routes = {r.name: r for r in config.routes}
        self.selections = selections
        self.templates = load_templates({})
        self.requests: Counter[str] = Counter()
        """Requests answered, by the model they named."""

    def models(self) -> list[tuple[str, Kind]]:
        """Every name a request may give as `model`, and what it is."""
        named: list[tuple[str, Kind]] = [(n, "model") for n in self.pool.names]
        named += [(n, "route") for n in self.routes]
        named += [(n, "selection") for n in self.selections]
        return named

    def kind(self, model: str) -> Kind:
        found = dict(self.models()).get(model)
        if found is None:
            raise APIError(
                404,
                f"the model {model!r} does not exist; GET /v1/models lists them",
                "model",
                "model_not_found",
            )
        return found

    # --- what a request asks for ------------------------------------------------------

    def prompt(self, id: str, request: ChatRequest) -> Prompt:
        """The request's conversation as a prompt of the run (its id the response's), with
        the reference and constraints the request's `multisample` field gives."""
        turns = request.turns()
        task = request.multisample or Extension()
        return Prompt(
            id=id,
            prompt=turns[-1].content,
            history=turns[:-1],
            reference=task.reference,
            constraints=task.constraints,
        )

    def sampling(self, request: ChatRequest, model: str | None = None) -> SamplingSettings:
        """The server's sampling (and a pool model's own), then the request's fields."""
        limit, cap = request.limit(), self.config.limits.max_tokens
        if limit is not None and limit > cap:
            raise APIError(
                400, f"max_tokens: {limit} is above this server's cap of {cap}", "max_tokens"
            )
        base = (
            self.config.sampling
            if model is None
            else self.pool.sampling(model, self.config.sampling)
        )
        update: dict[str, Any] = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": limit,
            "presence_penalty": request.presence_penalty,
        }
        update = {k: v for k, v in update.items() if v is not None}
        if request.stop is not None:
            update["stop"] = request.stops()
        return base.model_copy(update=update)

    def seed(self, request: ChatRequest, id: str) -> int:
        return request.seed if request.seed is not None else derive_seed(self.config.seed, id)

    def check(self, request: ChatRequest, kind: Kind) -> None:
        """What the request asks that the server's caps or the model refuse."""
        if request.n > self.config.limits.max_n:
            raise APIError(
                400, f"n: {request.n} is above this server's cap of {self.config.limits.max_n}", "n"
            )
        if kind == "selection" and request.n != 1:
            raise APIError(
                400, "n: a selection route answers with its round's answers; ask n=1", "n"
            )
        if kind != "model" and not (request.multisample and request.multisample.reference):
            for path, _ in find_specs(self._scoring(request.model), CorrectRewardSpec):
                raise APIError(
                    400,
                    f"multisample.reference: {request.model!r} scores answers with the "
                    f"'correct' reward ({path}), which compares them with the task's "
                    "reference answer: send it as multisample.reference",
                    "multisample.reference",
                )
        if kind == "model":
            spec = self.pool.spec(request.model)
            if spec.system_prompt and request.messages[0].role == "system":
                raise APIError(
                    400,
                    f"messages.0: model {request.model!r} has a system prompt of its own; a "
                    "conversation takes one",
                    "messages",
                )

    def _scoring(self, name: str) -> dict[str, Any]:
        """What scores a route's or a selection's answers: its reward, or its feedback and
        the rewards of the routes among its candidates, by config path."""
        if name in self.routes:
            return {name: self.routes[name]}
        spec = self.selections[name].spec
        routes = {c.route: self.routes[c.route] for c in spec.candidates if c.route}
        return {name: spec, **routes}

    # --- answering ----------------------------------------------------------------------

    async def answer(self, id: str, request: ChatRequest) -> Answer:
        kind = self.kind(request.model)
        self.check(request, kind)
        prompt = self.prompt(id, request)
        seed = self.seed(request, id)
        if kind == "model":
            answer = await self._model(prompt, request, seed)
        elif kind == "route":
            answer = await self._route(self.routes[request.model], prompt, request, seed)
        else:
            selection = self.selections[request.model]
            answer = await self._selection(id, selection, prompt, request, seed)
        self.requests[request.model] += 1
        return answer

    async def _model(self, prompt: Prompt, request: ChatRequest, seed: int) -> Answer:
        model = request.model
        settings = self.sampling(request, model)
        requests = [
            GenerationRequest(prompt.conversation(), settings, seed + i) for i in range(request.n)
        ]
        made = await self.pool.generate(model, requests)
        self.record_model(model, prompt, made)
        usage = Usage()
        for generation in made:
            usage.add(generation.prompt_tokens, generation.completion_tokens)
        return Answer([(g.text, g.finish_reason) for g in made], usage, "model")

    def record_model(self, model: str, prompt: Prompt, made: list[Generation]) -> None:
        samples = [
            {
                "prompt_id": prompt.id,
                "strategy": "serve",
                "id": i,
                "model": g.model,
                "action": "generate",
                "parents": [],
                "depth": 1,
                "text": g.text,
                "reward": None,
                "prompt_tokens": g.prompt_tokens,
                "completion_tokens": g.completion_tokens,
                "finish_reason": g.finish_reason,
                "seed": g.seed,
                "latency_s": g.latency_s,
                "adapter": g.adapter,
                "adapter_version": g.adapter_version,
            }
            for i, g in enumerate(made)
        ]
        self.traffic.commit_model(model, prompt, samples)

    async def stream(self, id: str, request: ChatRequest) -> AsyncIterator[str | Generation]:
        """A pool model's answer to a streamed request, piece by piece, its Generation
        last; recorded once it is whole."""
        prompt = self.prompt(id, request)
        generation = GenerationRequest(
            prompt.conversation(), self.sampling(request, request.model), self.seed(request, id)
        )
        async for item in self.pool.stream(request.model, generation):
            if isinstance(item, Generation):
                self.record_model(request.model, prompt, [item])
                self.requests[request.model] += 1
            yield item

    async def _route(
        self, route: RouteSpec, prompt: Prompt, request: ChatRequest, seed: int
    ) -> Answer:
        """Each of the n choices is one search (its seed seed + i); every one committed."""
        usage = Usage()
        choices = []
        traces = []
        for index in range(request.n):
            one = prompt if index == 0 else prompt.model_copy(update={"id": f"{prompt.id}-{index}"})
            text, reason, trace = await self.run_route(
                route, one, self.sampling(request), seed + index, usage
            )
            choices.append((text, reason))
            traces.append(trace)
        trace = {"searches": traces} if request.traced() else None
        return Answer(choices, usage, "route", trace)

    async def run_route(
        self, route: RouteSpec, prompt: Prompt, sampling: SamplingSettings, seed: int, usage: Usage
    ) -> tuple[str, str | None, dict[str, Any]]:
        """One search of `route` for `prompt`: the answer it chooses, its finish reason
        and its trace; its tokens added to `usage`, its records committed."""
        ctx = SearchContext(
            self.pool, self.rewards[route.name], sampling, route.budget, seed, self.templates
        )
        started = time.perf_counter()
        result = await run_strategy(prompt, ctx, route.strategy)
        for candidate in result.candidates:
            usage.add(candidate.prompt_tokens, candidate.completion_tokens)
        chosen = result.chosen()
        pairs = pair_records(prompt, result.candidates, route.pairs, seed, self.system_prompts())
        self.traffic.commit_route(
            route, prompt, with_metadata(prompt, result.sample_records()), pairs
        )
        trace = {
            "route": route.name,
            "strategy": route.strategy.kind,
            "selected": result.selected,
            "seconds": round(time.perf_counter() - started, 3),
            "spend": result.spend,
            "candidates": [
                {
                    "id": c.id,
                    "model": c.model,
                    "action": c.action,
                    "parents": list(c.parents),
                    "reward": c.reward,
                    "partial": c.partial,
                    "text": c.text,
                }
                for c in result.candidates
            ],
            "tree": result.tree_document(),
        }
        if chosen is None:
            return "", "stop", trace
        return chosen.text, chosen.finish_reason, trace

    def summary(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "selections": {n: s.document() for n, s in self.selections.items()},
        }

    def system_prompts(self) -> dict[str, str | None]:
        return {m.name: m.system_prompt for m in self.config.models}

    async def _selection(
        self, id: str, selection: SelectionRoute, prompt: Prompt, request: ChatRequest, seed: int
    ) -> Answer:
        sampling = self.sampling(request)

        async def as_candidate(
            name: str, query: Prompt, seed: int
        ) -> tuple[str, str | None, int, int]:
            seed = derive_seed(seed, name)  # each candidate samples apart, as `select`'s do
            spec = next(c for c in selection.spec.candidates if c.name == name)
            if spec.route is not None:
                usage = Usage()
                one = query.model_copy(update={"id": f"{query.id}-{name}"})
                text, reason, _ = await self.run_route(
                    self.routes[spec.route], one, sampling, seed, usage
                )
                return text, reason, usage.prompt_tokens, usage.completion_tokens
            model = selection.model_of(name)
            assert model is not None
            settings = self.pool.sampling(model, sampling)
            if spec.sampling is not None:
                settings = settings.model_copy(update=spec.sampling.model_dump(exclude_unset=True))
            system = (Message("system", spec.system_prompt),) if spec.system_prompt else ()
            request = GenerationRequest((*system, *query.conversation()), settings, seed)
            (made,) = await self.pool.generate(model, [request])
            return made.text, made.finish_reason, made.prompt_tokens, made.completion_tokens

        choices, prompt_tokens, completion_tokens, played = await selection.play(
            id, prompt, seed, as_candidate
        )
        usage = Usage(prompt_tokens, completion_tokens)
        return Answer(
            choices, usage, "selection", played if request.traced() else None, {"selection": played}
        )

    async def feedback(
        self, id: str, preferred: int | None, rating: float | None, note: str | None
    ) -> dict[str, Any]:
        """Record a client's feedback on response `id`; a preference between a
        selection route's two answers is its round's verdict."""
        record: dict[str, Any] = {
            "id": id,
            "preferred": preferred,
            "rating": rating,
            "note": note,
            "time": time.time(),
        }
        outcome: dict[str, Any] = {}
        name = next((n for n, s in self.selections.items() if id in s.pending), None)
        if preferred is not None:
            if name is None:
                raise APIError(
                    404,
                    f"id: no response {id!r} is waiting for a preference (only a selection "
                    "route's two-answer responses are, until a restart)",
                    "id",
                )
            outcome = await self.selections[name].feedback(id, preferred)
            record["selection"] = name
            record.update(outcome)
        self.traffic.add_feedback(record)
        return {"id": id, "recorded": True, **outcome}
