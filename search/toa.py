"""TOA: Tree search-based Orchestrated Agents, Monte Carlo tree search over which model
acts next (Ye et al., "Multi-Agent Sampling: Scaling Inference Compute for Data Synthesis
with Tree Search-Based Agentic Collaboration", 2025; arXiv:2412.17061).

The tree alternates layers: the root (the prompt) -> K *model nodes* -> *response nodes*
-> K model nodes -> ... A model node is the action "call model m": under the root it
generates from the prompt, under a response node it refines that response (the refine
template: question + answer). When selection first passes through a response node, K
*fresh* model nodes that generate from the prompt again are added under it, with their
statistics copied from the root's model children.

One play is one generation and one reward call: select, expand (no rollout), back up.
The budget in plays is the budget's generation limit, or `n` under a token budget alone
(which also stops the search once its tokens are spent).

Choices the paper leaves open, as made here:
- UCB's n counts the plays begun, this one included (the authors' code passes
  play index + 1), so ln(n) is never ln(0).
- A model node without a response yet is never fully expanded: it is expanded rather
  than descended into. The authors' code cannot descend into it either (it would pick
  from an empty child list); it only arises when `width` < K or with plays in flight.
- Ties (UCB, top-k of responses) go to the first child in creation order: under a
  response node the K refine nodes come before the K fresh ones, each in model order.
- Rewards are compared as normalized r~ (as the authors' code does), so with a reward
  scale far above `tau` the sigmoid saturates and distinct rewards can tie. `normalize`
  chooses another mapping (engine/rewards/normalization.py): a fixed scale, or z-score
  or min-max over the prompt's responses attached so far. The per-prompt ones are
  applied when statistics are read (UCB's means use the statistics of that moment; the
  tree is written with the final ones); comparisons of r~ (full expansion, top-k) are
  comparisons of rewards under them.
- Fresh nodes copy the root children's real statistics (not plays in flight), and the
  width counts attached responses only (not those of plays in flight).
- With `topk_child` > 1, the kept responses compete by UCB on their own backed-up
  statistics (as in the authors' code; every node on the path is backed up).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
from pydantic import Field, field_validator, model_validator

from multisample.engine.rewards import normalization as norm
from multisample.engine.rewards.normalization import (
    IDENTITY,
    Affine,
    Normalization,
    RewardNormalization,
)
from multisample.engine.types import Message, Prompt
from multisample.engine.ucb import ucb
from multisample.search.base import ROOT, Candidate, ManyModels, Search, SearchContext, SearchResult

ModelAction = Literal["generate", "refine", "fresh"]
"""generate: a root child; refine: refines its parent response; fresh: generates from the
prompt again, under a response node."""


class TOASettings(ManyModels):
    """TOA's settings; the defaults are the published ones. The published sampling
    temperature (0.7; 0.8 for data synthesis) is not forced: the run's sampling applies."""

    kind: Literal["toa"] = "toa"
    alpha: float = Field(0.01, ge=0)
    """UCB exploration weight: mean(r~) + alpha * sqrt(2 ln(n) / visits)."""
    tau: float = Field(0.1, gt=0)
    """Temperature of the published normalization r~ = sigmoid(r / tau), used when
    `normalize` is not set."""
    normalize: Normalization | None = None
    """How rewards become r~: None is the published sigmoid(r / tau); otherwise none,
    {kind: sigmoid, tau}, {kind: scale, factor}, zscore or minmax (the last two over the
    prompt's responses so far). docs/METHODS.md says when to choose which."""
    width: int | None = Field(None, ge=1)
    """Responses a layer needs before its model nodes may be descended through; at least
    the number of models K (the authors' code asserts width >= K). None takes
    max(K, floor(budget / 3)), budget in plays (the authors' budget / 3, raised to K at
    budgets below 3K, where their assertion would fail)."""
    topk_child: int = Field(1, ge=1)
    """Selection descends only into the best `topk_child` responses of a model node."""
    plays_in_flight: int = Field(1, ge=1)
    """Plays running at once in one tree, with virtual loss. 1 (published): sequential
    plays. More: each selected path counts a visit with reward 0 until its real reward
    arrives, so concurrent plays spread over the tree; selections then see fewer
    rewards than sequential plays would, so results differ from the published method
    (still reproducible: plays finish in the order they began). Under a token budget
    alone the spend may overshoot by up to this many responses."""
    n: int = Field(16, ge=1)
    """Plays under a token budget alone (a generation budget sets the plays itself)."""

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str] | None) -> list[str] | None:
        if models is not None and len(set(models)) != len(models):
            raise ValueError("models must be distinct")
        if models is not None and not models:
            raise ValueError("models must not be empty")
        return models

    @model_validator(mode="after")
    def _width_covers_the_models(self) -> TOASettings:
        if self.models is not None:
            self.check_pool(self.models)
        return self

    @model_validator(mode="after")
    def _one_normalization(self) -> TOASettings:
        if self.normalize is not None and "tau" in self.model_fields_set:
            raise ValueError(
                "set tau or normalize, not both (tau is the default sigmoid's; write "
                "normalize: {kind: sigmoid, tau: ...} instead)"
            )
        return self

    def normalization(self) -> RewardNormalization:
        """The normalization in force: `normalize`, or the published sigmoid(r / tau)."""
        return self.normalize if self.normalize is not None else norm.Sigmoid(tau=self.tau)

    def check_pool(self, pool_models: list[str]) -> None:
        models = self.models_used(pool_models)
        if self.width is not None and self.width < len(models):
            raise ValueError(
                f"toa width {self.width} is below the number of models ({len(models)}); "
                "TOA needs width >= K (as the authors' code asserts)"
            )

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return budget / self.plays_in_flight  # plays, a few at a time


# --- The math, as pure functions -----------------------------------------------------------


def tree_width(width: int | None, plays: int, models: int) -> int:
    """The width of a search: the configured one, else the authors' plays / 3 (their
    width = K x samples per model / 3), raised to K where it is smaller (they assert
    width >= K)."""
    return max(models, plays // 3) if width is None else width


def is_fully_expanded(
    kind: str,
    *,
    next_layer_responses: int = 0,
    width: int = 0,
    parent_reward: float | None = None,
    child_rewards: Sequence[float] = (),
) -> bool:
    """Step 2. The root and response nodes always are. A model node is when (a) the
    responses on the next layer, over the whole tree, number at least `width`, and (b)
    its parent is the root (`parent_reward` None) or its best child's r~ beats the
    parent's. A model node with no response yet never is (ours: see the module doc)."""
    if kind != "model":
        return True
    if not child_rewards:
        return False
    if next_layer_responses < width:
        return False
    return parent_reward is None or max(child_rewards) > parent_reward


# --- The tree of one search ----------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    id: str | int
    kind: Literal["prompt", "model", "response"]
    layer: int
    """Root 0, model nodes odd, response nodes even."""
    parent: _Node | None = None
    model: str | None = None
    action: ModelAction | None = None
    candidate: Candidate | None = None
    normalized: float | None = None
    """r~ of a response node, before the per-prompt part of the normalization (which
    keeps the order of the values)."""
    children: list[_Node] = field(default_factory=list)
    visits: int = 1
    reward_sum: float = 0.0
    """Sum of the backed-up r~, before the per-prompt part of the normalization."""
    n_rewards: int = 0
    pending: int = 0
    """Plays in flight through this node: each counts a visit and a reward of 0."""
    copied: tuple[int, float, int] | None = None
    """A fresh node's (visits, reward sum, rewards) copied from the root's child."""
    fresh_added: bool = False

    def ucb(self, plays: int, alpha: float, affine: Affine = IDENTITY) -> float:
        """UCB with r~ under `affine`, the per-prompt part of the normalization now."""
        count = self.n_rewards + self.pending
        if not count:
            return math.inf  # a child without rewards is tried first
        mean = affine.total(self.reward_sum, self.n_rewards) / count
        return float(ucb(mean, self.visits + self.pending, plays, scale=alpha))


class _Tree:
    """The MCTS bookkeeping of one prompt's search (never shared between searches)."""

    def __init__(
        self,
        prompt: str,
        models: list[str],
        width: int,
        alpha: float,
        topk_child: int,
        normalization: RewardNormalization | None = None,
    ) -> None:
        self.models = models
        self.width = width
        self.alpha = alpha
        self.topk_child = topk_child
        self.prompt = prompt
        self.normalization = normalization
        """Its per-prompt part is applied here; `finish` is given the pointwise r~."""
        self.values: list[float] = []
        """The pointwise r~ of the attached responses, in the order they were attached."""
        self.root = _Node(ROOT, "prompt", 0)
        self.nodes: dict[str | int, _Node] = {ROOT: self.root}
        self.responses_per_layer: Counter[int] = Counter()
        for model in models:
            self._add_model(self.root, model, "generate")

    def _add_model(self, parent: _Node, model: str, action: ModelAction) -> _Node:
        node = _Node(f"m:{parent.id}/{action}/{model}", "model", parent.layer + 1, parent)
        node.model, node.action = model, action
        parent.children.append(node)
        self.nodes[node.id] = node
        return node

    def _add_fresh(self, response: _Node) -> None:
        """K model nodes that generate afresh, with the root's children's statistics
        (real ones: plays in flight are not copied)."""
        for source in self.root.children:
            assert source.model is not None
            node = self._add_model(response, source.model, "fresh")
            node.visits, node.reward_sum, node.n_rewards = (
                source.visits,
                source.reward_sum,
                source.n_rewards,
            )
            node.copied = (source.visits, source.reward_sum, source.n_rewards)
        response.fresh_added = True

    def fully_expanded(self, node: _Node) -> bool:
        parent = node.parent
        return is_fully_expanded(
            node.kind,
            next_layer_responses=self.responses_per_layer[node.layer + 1],
            width=self.width,
            parent_reward=None if parent is None or parent.kind == "prompt" else parent.normalized,
            child_rewards=[c.normalized for c in node.children if c.normalized is not None],
        )

    def affine(self) -> Affine:
        """The per-prompt part of the normalization, from the responses attached so far."""
        if self.normalization is None:
            return IDENTITY
        return self.normalization.affine(self.values)

    def _best_child(self, node: _Node, plays: int, affine: Affine) -> _Node:
        children = node.children
        if node.kind == "model":
            # Keep the top `topk_child` responses by their own r~ (stable: ties -> first).
            ranked = sorted(children, key=lambda c: c.normalized or 0.0, reverse=True)
            kept = set(ranked[: self.topk_child])
            children = [c for c in children if c in kept]
        # The highest UCB; ties -> first in order.
        return max(children, key=lambda c: c.ucb(plays, self.alpha, affine))

    def select(self, plays: int) -> list[_Node]:
        """Step 1: the path from the root to the model node to expand; `plays` = n."""
        node = self.root
        path = [node]
        affine = self.affine()
        while True:
            if node.kind == "response" and not node.fresh_added:
                self._add_fresh(node)
            if not self.fully_expanded(node):
                return path
            node = self._best_child(node, plays, affine)
            path.append(node)

    def begin(self, path: list[_Node]) -> None:
        """Virtual loss while the play is in flight: a visit with reward 0 on the path."""
        for node in path:
            node.pending += 1

    def finish(self, path: list[_Node], candidate: Candidate, normalized: float) -> _Node:
        """Step 3 (attach the response holding r~, before the per-prompt part) and step 4
        (back up r~ to the root); the virtual loss becomes the real visit and reward."""
        model_node = path[-1]
        response = _Node(candidate.id, "response", model_node.layer + 1, model_node)
        response.model, response.candidate, response.normalized = (
            candidate.model,
            candidate,
            normalized,
        )
        model_node.children.append(response)
        self.nodes[response.id] = response
        self.values.append(normalized)
        self.responses_per_layer[response.layer] += 1
        for model in self.models:  # a response node comes with K refine children
            self._add_model(response, model, "refine")
        for node in path:
            node.pending -= 1
            node.visits += 1
            node.reward_sum += normalized
            node.n_rewards += 1
        return response

    def to_graph(self) -> nx.DiGraph:
        """The tree as a graph: the root, model nodes ("m:<parent>/<action>/<model>")
        and response nodes (the candidate id), each with its statistics, in r~ under the
        prompt's final statistics (a per-prompt normalization)."""
        graph = nx.DiGraph()
        affine = self.affine()
        for node in self.nodes.values():
            reward_sum = affine.total(node.reward_sum, node.n_rewards)
            stats = {
                "layer": node.layer,
                "visits": node.visits,
                "n_rewards": node.n_rewards,
                "reward_sum": reward_sum,
                "reward_mean": reward_sum / node.n_rewards if node.n_rewards else None,
            }
            if node.kind == "prompt":
                graph.add_node(node.id, kind="prompt", text=self.prompt, **stats)
            elif node.kind == "model":
                extra = {}
                if node.copied is not None:
                    visits, copied_sum, n_rewards = node.copied
                    extra = {
                        "copied_visits": visits,
                        "copied_reward_sum": affine.total(copied_sum, n_rewards),
                        "copied_n_rewards": n_rewards,
                    }
                graph.add_node(
                    node.id, kind="model", model=node.model, action=node.action, **stats, **extra
                )
            else:
                assert node.candidate is not None
                graph.add_node(
                    node.id,
                    kind="response",
                    model=node.model,
                    action=node.candidate.action,
                    reward=node.candidate.reward,
                    normalized=None if node.normalized is None else affine(node.normalized),
                    depth=node.candidate.depth,
                    step=node.candidate.step,
                    **stats,
                )
            if node.parent is not None:
                graph.add_edge(node.parent.id, node.id)
        return graph


# --- The strategy ----------------------------------------------------------------------------


async def run(prompt: Prompt, ctx: SearchContext, settings: TOASettings) -> SearchResult:
    search = Search(prompt, ctx, "toa")
    models = settings.models_used(ctx.pool.names)
    remaining = search.budget.remaining_generations()
    plays = settings.n if remaining is None else remaining
    settings.check_pool(ctx.pool.names)  # a library caller skips the config's check
    width = tree_width(settings.width, plays, len(models))
    normalization = settings.normalization()
    tree = _Tree(prompt.prompt, models, width, settings.alpha, settings.topk_child, normalization)

    def expand(index: int, path: list[_Node]) -> Coroutine[Any, Any, list[Candidate]]:
        # Step 3: call the chosen model once and score the response (no rollout). The
        # call is made here, not in the task that awaits it, so the candidate ids follow
        # the plays' order even if the search is cancelled before every task starts.
        node = path[-1]
        assert node.model is not None and node.parent is not None
        if node.action == "refine":
            parent = node.parent.candidate
            assert parent is not None
            text = ctx.templates["refine"].format(question=prompt.prompt, answer=parent.text)
            action, parents = "refine", (parent.id,)
        else:
            text, action, parents = prompt.prompt, "generate", ()
        return search.sample(
            node.model,
            (Message("user", text),),
            action=action,
            parents=parents,
            depth=(node.layer + 1) // 2,
            step=index,
        )

    # Plays finish in the order they began, so the tree grows the same however long each
    # generation takes: a run is reproducible with any number of plays in flight.
    in_flight: deque[tuple[list[_Node], asyncio.Task[list[Candidate]]]] = deque()
    started = 0
    finished_tokens = 0

    def may_start() -> bool:
        # Counts the tokens of finished plays only, not of plays in flight that happen to
        # be back already: whether a play starts must not depend on how fast the others
        # return (a resumed search gets its recorded ones back at once).
        remaining = search.budget.remaining_generations()
        if remaining is not None and remaining < 1:
            return False
        return ctx.budget.tokens is None or finished_tokens < ctx.budget.tokens

    try:
        while True:
            while started < plays and len(in_flight) < settings.plays_in_flight and may_start():
                # Step 1: select (n counts the plays begun, this one included).
                path = tree.select(started + 1)
                tree.begin(path)
                in_flight.append((path, asyncio.create_task(expand(started, path))))
                started += 1
            if not in_flight:
                break
            path, task = in_flight[0]
            (candidate,) = await task
            in_flight.popleft()
            finished_tokens += candidate.prompt_tokens + candidate.completion_tokens
            assert candidate.reward is not None
            # Steps 3-4: attach the response and back up r~.
            tree.finish(path, candidate, normalization.pointwise(candidate.reward))
    finally:
        for _, task in in_flight:
            task.cancel()
        await asyncio.gather(*(task for _, task in in_flight), return_exceptions=True)
    return search.result(tree=tree.to_graph())
