"""What every strategy shares: the per-prompt search state and the typed result.

A strategy is `async def run(prompt, ctx, settings) -> SearchResult`. All of its state
lives in the `Search` object it creates for that prompt, never on a shared instance, so
any number of prompts' searches run at once over one pool.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import networkx as nx

from multisample.engine.answers import EXTRACTORS, extract_answer
from multisample.engine.budget import Budget
from multisample.engine.config import BudgetConfig, Settings
from multisample.engine.journal import Journal, PromptJournal, request_key, reward_key
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.base import BaseRewardSpec, Reward
from multisample.engine.seeds import derive_seed
from multisample.engine.types import (
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    SamplingSettings,
)
from multisample.search.templates import load_templates

Action = Literal["generate", "refine", "aggregate", "feedback"]
ROOT = "root"


class Sample(Protocol):
    """What choosing a search's answer reads of a sample: a Candidate, or one of a run's
    records read back (`sample_of`)."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def reward(self) -> float | None: ...
    @property
    def partial(self) -> bool: ...


@dataclass(frozen=True)
class SampleRecord:
    """A sample read back from a run's records, as choosing an answer reads it."""

    id: int
    text: str
    reward: float | None
    partial: bool = False


def sample_of(record: Mapping[str, Any], reward: str = "reward") -> SampleRecord:
    """A samples.jsonl record as a Sample (`reward`: the field that scores it)."""
    return SampleRecord(
        record["id"], record["text"], record.get(reward), record.get("partial", False)
    )


S = TypeVar("S", bound=Sample)


def answers(samples: Sequence[S]) -> list[S]:
    """The samples that are answers: scored, and not a partial solution."""
    return [s for s in samples if s.reward is not None and not s.partial]


class BaseStrategySettings(Settings):
    """What a sweep asks of every strategy's settings, besides their own fields."""

    prefix_reusable: ClassVar[bool] = False
    """Whether a search at budget b is exactly the first b samples of the same search at a
    larger budget, so that a sweep may take one for the other (`reuse_prefix`)."""

    @abstractmethod
    def models_used(self, pool_models: list[str]) -> list[str]:
        """The pool models this strategy calls, of `pool_models` (the pool's, in order)."""

    @abstractmethod
    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        """About how many generation rounds one search at `budget` generations waits
        through one after another (its length at any load): a sweep starts the longest
        searches first."""

    def check_pool(self, pool_models: list[str]) -> None:
        """Raise ValueError (one line) when these settings cannot run over `pool_models`
        (the pool's names, in order); checked with the config, before any engine starts."""

    def check_run(self, reward: BaseRewardSpec, budget: BudgetConfig | None) -> None:
        """Raise ValueError (one line) when these settings cannot search with `reward`
        under `budget` (None: a sweep's, which sets generations); checked with the config."""

    def same_search(self, other: BaseStrategySettings) -> bool:
        """Whether `other` makes the same samples as these settings (it may choose its
        answer differently): a sweep then searches once for both."""
        return self == other

    def choose(self, samples: Sequence[Sample], prompt: Prompt) -> int | None:
        """The id of the sample the search answers with, of `samples` (a search's, or a
        prefix of them, in id order): by default the best-rewarded, the first on a tie;
        None when none is scored. A sweep chooses again over the prefixes it reuses."""
        scored = answers(samples)
        return max(scored, key=lambda s: s.reward or 0.0).id if scored else None


class OneModel(BaseStrategySettings):
    """Settings of a strategy that samples a single pool model."""

    model: str | None = None
    """The pool model that samples; None takes the first configured model."""

    def models_used(self, pool_models: list[str]) -> list[str]:
        return [self.model or pool_models[0]]


class ManyModels(BaseStrategySettings):
    """Settings of a strategy that orchestrates several pool models."""

    models: list[str] | None = None
    """Pool models that take part, in this order; None takes all of them."""

    def models_used(self, pool_models: list[str]) -> list[str]:
        return self.models or pool_models


class BudgetExceededError(RuntimeError):
    """A strategy asked for more than its budget allows: a bug in the strategy."""


@dataclass(frozen=True)
class Candidate:
    """One generation of a search, with its lineage and reward."""

    id: int
    """Index within this prompt's search, in the order generations were requested."""
    model: str
    action: Action
    parents: tuple[int, ...]
    """Candidates this one was made from (refined, aggregated, commented on)."""
    depth: int
    text: str
    reward: float | None
    """Reward of (original prompt, text); None for feedback, which is not an answer."""
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    seed: int
    latency_s: float
    step: int = 0
    """The strategy's own step counter (round, layer, play) when it has one."""
    adapter: str | None = None
    """The LoRA adapter that answered (its name is `model`), None for a base model."""
    adapter_version: int | None = None
    """Which version of that adapter."""
    partial: bool = False
    """A solution cut at a step boundary (step-level search): its reward scores the
    steps so far; it is no answer, so neither pairs nor the search's choice take it."""


@dataclass(frozen=True)
class SearchContext:
    """What a strategy may use: shared by every prompt of a run."""

    pool: ModelPool
    reward: Reward
    sampling: SamplingSettings
    budget: BudgetConfig
    seed: int = 0
    templates: dict[str, str] = field(default_factory=load_templates)
    """Prompt templates by name (see search.templates)."""
    journal: Journal | None = None
    """Where each search records its generations and rewards as they are made, and
    from which a resumed search replays them (engine/journal.py); None records nothing."""


@dataclass
class SearchResult:
    prompt: Prompt
    strategy: str
    candidates: list[Candidate]
    tree: nx.DiGraph
    spend: dict[str, Any]
    selected: int | None = None
    """The candidate the search answers with, as its strategy chooses
    (`BaseStrategySettings.choose`: the best-rewarded, a vote...); None: none."""

    def scored(self) -> list[Candidate]:
        """The candidates that are answers: scored, and not a partial solution."""
        return answers(self.candidates)

    def best(self) -> Candidate | None:
        return max(self.scored(), key=lambda c: c.reward or 0.0, default=None)

    def chosen(self) -> Candidate | None:
        """The candidate the search answers with."""
        return next((c for c in self.candidates if c.id == self.selected), None)

    def sample_records(self) -> list[dict[str, Any]]:
        """One record per candidate: its fields, whether it is the search's answer
        (`selected`) and, for a prompt with a reference answer, the final answer read
        from it (`answer`, None where none can be read)."""
        chosen = self.chosen()
        extractors = self.prompt.extract or EXTRACTORS
        records = []
        for candidate in self.candidates:
            record = {"prompt_id": self.prompt.id, "strategy": self.strategy, **asdict(candidate)}
            record["selected"] = chosen is not None and candidate.id == chosen.id
            if self.prompt.reference is not None:
                record["answer"] = extract_answer(candidate.text, extractors)
            records.append(record)
        return records

    def tree_document(self) -> dict[str, Any]:
        return nx.node_link_data(self.tree, edges="edges")


@dataclass
class _Call:
    """One `Search.sample` call between its preparation and its generations."""

    model: str
    ids: list[int]
    requests: dict[int, GenerationRequest]
    prefix: str = ""
    """What every response continues (`Search.sample`'s `prefix`)."""
    separator: str | None = None
    """Set for a step call (`Search.sample`'s `separator`): nothing was reserved."""
    keys: dict[int, str] = field(default_factory=dict)
    """Each request's journal key (with a journal)."""
    recorded: dict[int, Generation] = field(default_factory=dict)
    """The generations the journal answers, by id."""

    def partial(self, generation: Generation) -> bool:
        """Whether a step call's generation is a step that stopped at the separator: a
        partial solution. A blank step ends its solution (the model has nothing to add)."""
        return (
            self.separator is not None
            and generation.stop_reason == self.separator
            and bool(generation.text.strip())
        )


@dataclass
class Search:
    """The state of one prompt's search: budget, candidates and tree."""

    prompt: Prompt
    ctx: SearchContext
    strategy: str
    budget: Budget = field(init=False)
    candidates: list[Candidate] = field(default_factory=list)
    tree: nx.DiGraph = field(default_factory=nx.DiGraph)

    def __post_init__(self) -> None:
        self.budget = Budget(self.ctx.budget, self.ctx.pool.parameters)
        self.tree.add_node(ROOT, kind="prompt", text=self.prompt.prompt)
        self._next_id = 0
        self._journal: PromptJournal | None = (
            None if self.ctx.journal is None else self.ctx.journal.prompt(self.prompt.id)
        )

    def _new_ids(self, n: int) -> list[int]:
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        return ids

    def sample(
        self,
        model: str,
        messages: Sequence[Message],
        n: int = 1,
        *,
        action: Action = "generate",
        parents: tuple[int, ...] = (),
        depth: int = 1,
        step: int = 0,
        score: bool = True,
        sampling: SamplingSettings | None = None,
        prefix: str = "",
        separator: str | None = None,
    ) -> Coroutine[Any, Any, list[Candidate]]:
        """Generate `n` responses of `model` to `messages`, charge them to the budget,
        score them (unless `score` is False) and add them to the tree; await the result.

        `prefix` starts every response (the model continues it; the candidate's text
        includes it). With a `separator` this is a step call of a step-level search: each
        generation stops at the separator, and one that does is a partial solution
        (`Candidate.partial`, its text ending with the separator), charged its tokens but
        not a generation; one that ends otherwise completes its solution, a generation.
        Step calls hold nothing against the generation limit: their strategy keeps to it.

        Seeds derive from (run seed, prompt id, candidate id), so a search gives the same
        samples however its calls interleave with other prompts'. The candidate ids are
        given (and the budget held) when `sample` is called, not when its result is first
        awaited: they follow the order of the strategy's decisions even for calls it runs
        as tasks, which start (or, when the search is cancelled, never start) in any order.
        """
        call = self._prepare(model, messages, n, sampling, prefix, separator)
        return self._sample(call, action, parents, depth, step, score)

    async def _sample(
        self,
        call: _Call,
        action: Action,
        parents: tuple[int, ...],
        depth: int,
        step: int,
        score: bool,
    ) -> list[Candidate]:
        generations = await self._generate(call)
        partial = [call.partial(g) for g in generations]
        texts = [
            call.prefix + g.text + (call.separator or "" if cut else "")
            for g, cut in zip(generations, partial, strict=True)
        ]
        rewards: list[float | None] = [None] * len(call.ids)
        if score:
            rewards = list(await self._rewards(call.ids, texts, partial))
            self.budget.charge_rewards(len(call.ids))
        made = [
            Candidate(
                id=i,
                model=call.model,
                action=action,
                parents=parents,
                depth=depth,
                text=text,
                reward=reward,
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
                finish_reason=generation.finish_reason,
                seed=generation.seed,
                latency_s=generation.latency_s,
                step=step,
                adapter=generation.adapter,
                adapter_version=generation.adapter_version,
                partial=cut,
            )
            for i, generation, text, reward, cut in zip(
                call.ids, generations, texts, rewards, partial, strict=True
            )
        ]
        for candidate in made:
            self._add_to_tree(candidate)
        self.candidates.extend(made)
        return made

    def _prepare(
        self,
        model: str,
        messages: Sequence[Message],
        n: int,
        sampling: SamplingSettings | None,
        prefix: str = "",
        separator: str | None = None,
    ) -> _Call:
        """The ids and requests of `n` generations, held against the budget (so that
        searches running at once cannot overspend), and those the journal answers.

        Only the generation limit is enforced here: a token limit is for the strategy to
        check before each call, as here it would depend on timing (a call in flight that
        finishes between the strategy's check and this one spends tokens).
        """
        remaining = self.budget.remaining_generations()
        if separator is None and remaining is not None and n > remaining:
            raise BudgetExceededError(
                f"{self.strategy}: {n} more generation(s) would exceed the budget "
                f"({self.budget.generations} spent of {self.ctx.budget.generations})"
            )
        ids = self._new_ids(n)
        settings = self.ctx.pool.sampling(model, sampling or self.ctx.sampling)
        if separator is not None:
            settings = settings.model_copy(update={"stop": (*settings.stop, separator)})
        # A multi-turn prompt's earlier turns come before every call made for it.
        turns = (*self.prompt.history, *messages)
        requests = {
            i: GenerationRequest(
                turns, settings, derive_seed(self.ctx.seed, self.prompt.id, i), prefix
            )
            for i in ids
        }
        call = _Call(model, ids, requests, prefix, separator)
        if self._journal is not None:
            # Asked in id order: the journal sees the indices in the order they are given.
            for i, request in requests.items():
                call.keys[i] = request_key(model, request)
                recorded = self._journal.generation(i, call.keys[i])
                if recorded is not None:
                    call.recorded[i] = recorded
        if separator is None:
            self.budget.reserve(n)
        return call

    async def _generate(self, call: _Call) -> list[Generation]:
        """The call's generations, charged to the budget: the journal's where it recorded
        them (a resumed search), the engines' for the rest, journaled at once. Either way
        they are charged alike, so a resumed search spends exactly what the first run did.
        """
        todo = [i for i in call.ids if i not in call.recorded]
        try:
            made = (
                await self.ctx.pool.generate(call.model, [call.requests[i] for i in todo])
                if todo
                else []
            )
        except BaseException:
            if call.separator is None:
                self.budget.release(len(call.ids))
            raise
        by_id = {**call.recorded, **dict(zip(todo, made, strict=True))}
        generations = [by_id[i] for i in call.ids]
        for generation in generations:
            if call.partial(generation):
                self.budget.charge_tokens(generation)
            else:
                self.budget.charge(generation, held=call.separator is None)
        if self._journal is not None:
            self._journal.add_generations([(i, call.keys[i], by_id[i]) for i in todo])
        return generations

    async def _rewards(self, ids: list[int], texts: list[str], partial: list[bool]) -> list[float]:
        """The rewards of the candidates `ids` (their `texts`); a partial solution's by the
        reward of unfinished solutions (`Reward.unfinished`)."""
        finished: list[tuple[int, str]] = []
        unfinished: list[tuple[int, str]] = []
        for i, text, cut in zip(ids, texts, partial, strict=True):
            (unfinished if cut else finished).append((i, text))
        if not unfinished:  # every call but a step-level search's
            known = await self._scores(self.ctx.reward, finished)
        else:
            done, cut = await asyncio.gather(
                self._scores(self.ctx.reward, finished),
                self._scores(self.ctx.reward.unfinished, unfinished),
            )
            known = {**done, **cut}
        return [known[i] for i in ids]

    async def _scores(self, reward: Reward, candidates: list[tuple[int, str]]) -> dict[int, float]:
        """`reward`'s scores of `candidates` (id, text): from the journal where it recorded
        them for the same reward, prompt and text; the rest scored in one call and
        journaled."""
        if not candidates:
            return {}
        if self._journal is None:
            scores = await reward.score(self.prompt, [text for _, text in candidates])
            return {i: s for (i, _), s in zip(candidates, scores, strict=True)}
        identity = reward.identity()
        keys = {i: reward_key(identity, self.prompt, text) for i, text in candidates}
        known = {i: r for i, key in keys.items() if (r := self._journal.reward(i, key)) is not None}
        todo = [(i, text) for i, text in candidates if i not in known]
        if todo:
            scores = await reward.score(self.prompt, [text for _, text in todo])
            known.update((i, s) for (i, _), s in zip(todo, scores, strict=True))
            self._journal.add_rewards([(i, keys[i], known[i]) for i, _ in todo])
        return known

    def _add_to_tree(self, candidate: Candidate) -> None:
        """A node for `candidate`, with edges from its parents (from the root if none)."""
        self.tree.add_node(
            candidate.id,
            kind=candidate.action,
            model=candidate.model,
            reward=candidate.reward,
            depth=candidate.depth,
        )
        for parent in candidate.parents or (ROOT,):
            self.tree.add_edge(parent, candidate.id)

    async def sample_until_spent(
        self,
        model: str,
        messages: Sequence[Message],
        limit: int | None = None,
        **options: Any,
    ) -> list[Candidate]:
        """`sample` until the budget (or `limit` samples) is spent; `options` as for `sample`.

        With a generation budget all samples go out in one batch, so the engine batches
        them and reuses the prompt's KV cache. Under a token budget they go one at a time,
        so the spend overshoots the token limit by at most one response.
        """
        made: list[Candidate] = []
        while self.budget.can_generate() and (limit is None or len(made) < limit):
            remaining = self.budget.remaining_generations()
            n = remaining if remaining is not None and self.ctx.budget.tokens is None else 1
            if limit is not None:
                n = min(n, limit - len(made))
            made += await self.sample(model, messages, n, **options)
        return made

    def result(self, tree: nx.DiGraph | None = None) -> SearchResult:
        """The search's result; `tree` replaces the candidate graph when a strategy
        keeps its own (TOA exports its MCTS tree of model and response nodes)."""
        candidates = sorted(self.candidates, key=lambda c: c.id)
        return SearchResult(
            self.prompt,
            self.strategy,
            candidates,
            self._tree_in_id_order(candidates) if tree is None else tree,
            self.budget.to_dict(),
        )

    def _tree_in_id_order(self, candidates: list[Candidate]) -> nx.DiGraph:
        """The candidate graph with nodes and edges in candidate order: calls sent
        together finish in any order, and the tree's file must not depend on it."""
        ordered = nx.DiGraph()
        ordered.add_node(ROOT, **self.tree.nodes[ROOT])
        for candidate in candidates:
            ordered.add_node(candidate.id, **self.tree.nodes[candidate.id])
            for parent in candidate.parents or (ROOT,):
                ordered.add_edge(parent, candidate.id)
        return ordered


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` integers differing by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
