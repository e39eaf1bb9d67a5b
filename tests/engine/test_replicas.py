"""Replicas of a vLLM model with stand-in actors (no Ray, no engine): how batches are split
by load and put back in order, where a dead replica's requests go while it restarts,
adapters and weights on every replica, the cores and placement of replicas, GPU engines
starting one after another, and the checks that stop a bad config before any engine
starts. The real engines are in test_replicas_engine.py."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from ray.exceptions import ActorDiedError

import multisample.engine.backends.vllm as vllm
import multisample.engine.pool as pool_module
from multisample.engine import actors, vllm_args
from multisample.engine.actors import BIND_VARIABLE, check_cluster_gpus, gpu_shortage
from multisample.engine.adapters import ServedAdapter
from multisample.engine.backends.base import BackendError
from multisample.engine.backends.vllm import VLLMBackend, split_by_load
from multisample.engine.config import ConfigError, PoolConfig, VLLMModelSpec
from multisample.engine.config_files import load_config
from multisample.engine.cpu_binding import replica_cores
from multisample.engine.pool import ModelPool
from multisample.engine.types import Generation, GenerationRequest, Message, SamplingSettings
from multisample.engine.vllm_args import check_engine_args, engine_args_problem
from tests.reliability.test_restart_logic import _Method


class ReplicaActor:
    """Answers like a VLLMEngineActor: the text depends on the request only (its seed and
    prompt), never on which actor answered; `die()` makes every call fail as Ray's do."""

    def __init__(self, number: int, start_gate: asyncio.Event | None = None) -> None:
        self.number = number
        self.dead = False
        self.hold: asyncio.Event | None = None  # set: batches wait for it
        self.start_gate = start_gate
        self.batches: list[list[int]] = []
        self.loaded: list[Any] = []
        self.weights: list[str] = []
        self.start = _Method(self._start)
        self.generate = _Method(self._generate)
        self.count_tokens = _Method(self._count)
        self.load_adapter = _Method(self._load_adapter)
        self.load_weights = _Method(self._load_weights)
        self.shutdown = _Method(self._shutdown)

    def die(self) -> None:
        self.dead = True

    async def _start(self) -> dict[str, Any]:
        if self.start_gate is not None:
            await self.start_gate.wait()
        await asyncio.sleep(0.001)
        return {"node_id": f"n{self.number}", "pid": self.number, "max_model_len": 2048}

    async def _generate(
        self, requests: list[GenerationRequest], adapter: ServedAdapter | None = None
    ) -> list[Generation]:
        self.batches.append([r.seed for r in requests])
        if self.hold is not None:
            await self.hold.wait()
        for _ in range(random.randint(0, 3)):  # replicas answer in any order
            await asyncio.sleep(0)
        if self.dead:
            raise ActorDiedError()
        model = "m" if adapter is None else adapter.name
        return [
            Generation(
                f"{model} seed{r.seed} {r.messages[-1].content[:12]}",
                model,
                3,
                2 + r.seed % 5,
                "stop",
                r.seed,
                0.0,
            )
            for r in requests
        ]

    async def _count(self, messages: list[Message]) -> int:
        if self.dead:
            raise ActorDiedError()
        return 7

    async def _load_adapter(self, adapter: ServedAdapter) -> None:
        if self.dead:
            raise ActorDiedError()
        self.loaded.append(adapter)

    async def _load_weights(self, folder: str) -> None:
        if self.dead:
            raise ActorDiedError()
        self.weights.append(folder)

    async def _shutdown(self) -> None:
        if self.dead:
            raise ActorDiedError()


async def until(condition: Any) -> None:
    """Wait for `condition()` to hold, giving the event loop's other tasks their turns
    (the test's own timeout bounds a wait that never ends)."""
    while not condition():
        await asyncio.sleep(0)


def fake_actors(monkeypatch: pytest.MonkeyPatch, backend: VLLMBackend) -> list[ReplicaActor]:
    """Every actor `backend` makes is a ReplicaActor; the list holds them in order."""
    made: list[ReplicaActor] = []

    def new_actor(replica: Any = None) -> ReplicaActor:
        made.append(ReplicaActor(len(made)))
        return made[-1]

    monkeypatch.setattr(backend, "_new_actor", new_actor)
    monkeypatch.setattr(vllm.ray, "kill", lambda actor, **kwargs: None)
    return made


def make_backend(
    monkeypatch: pytest.MonkeyPatch, replicas: int = 2, max_restarts: int = 3, **spec: Any
) -> tuple[VLLMBackend, list[ReplicaActor]]:
    model = VLLMModelSpec.model_validate({"name": "m", "model": "x", "replicas": replicas, **spec})
    backend = VLLMBackend(model, request_timeout_s=5, start_timeout_s=5, max_restarts=max_restarts)
    return backend, fake_actors(monkeypatch, backend)


def requests(seeds: range) -> list[GenerationRequest]:
    return [GenerationRequest((Message("user", "hi"),), SamplingSettings(), s) for s in seeds]


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("count", "in_flight", "sizes"),
    [
        (8, [0, 0], [4, 4]),
        (7, [0, 0], [4, 3]),  # the first on ties
        (6, [4, 0], [1, 5]),  # the busy one is filled up to the idle one's level first
        (2, [4, 0], [0, 2]),
        (1, [3, 1, 2], [0, 1, 0]),
        (0, [1, 1], [0, 0]),
    ],
)
def test_split_by_load(count: int, in_flight: list[int], sizes: list[int]) -> None:
    assert split_by_load(count, in_flight) == sizes


@given(st.integers(0, 300), st.lists(st.integers(0, 50), min_size=1, max_size=8))
def test_a_split_takes_every_request_and_levels_the_load(count: int, in_flight: list[int]) -> None:
    sizes = split_by_load(count, in_flight)
    assert sum(sizes) == count and min(sizes) >= 0
    after = [a + b for a, b in zip(in_flight, sizes, strict=True)]
    took = [a for a, size in zip(after, sizes, strict=True) if size]
    # Who took any request ends at most one above the least loaded replica.
    assert not took or max(took) <= min(after) + 1


async def test_a_batch_is_split_over_the_replicas_and_comes_back_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=2)
    await backend.start()
    batch = requests(range(8))
    generations = await backend.generate(batch)
    assert [g.seed for g in generations] == list(range(8))
    assert [g.text for g in generations] == [f"m seed{s} hi" for s in range(8)]
    assert made[0].batches == [[0, 1, 2, 3]] and made[1].batches == [[4, 5, 6, 7]]
    assert [r.in_flight for r in backend.replicas] == [0, 0]


async def test_a_busy_replica_gets_fewer_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, made = make_backend(monkeypatch, replicas=2)
    await backend.start()
    made[0].hold = asyncio.Event()
    first = asyncio.ensure_future(backend.generate(requests(range(2))))  # one to each
    # Replica 1 answers; replica 0 holds its request.
    await until(lambda: [r.in_flight for r in backend.replicas] == [1, 0])
    second = asyncio.ensure_future(backend.generate(requests(range(10, 13))))
    await until(lambda: len(made[0].batches) == 2 and len(made[1].batches) == 2)
    # The idle replica is filled to the busy one's level first, then they alternate.
    assert made[0].batches == [[0], [10]] and made[1].batches == [[1], [11, 12]]
    made[0].hold.set()
    assert [g.seed for g in await second] == [10, 11, 12]
    assert [g.seed for g in await first] == [0, 1]


async def test_count_tokens_and_context_length_with_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=3)
    await backend.start()
    assert await backend.count_tokens([Message("user", "hi")]) == 7
    assert await backend.context_length() == 2048
    assert len(made) == 3 and [r.label for r in backend.replicas] == ["m[0]", "m[1]", "m[2]"]


# --------------------------------------------------------------------------- failover


async def test_a_dead_replicas_requests_go_to_the_others_while_it_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=2)
    await backend.start()
    restart_may_finish = asyncio.Event()
    made[0].hold = asyncio.Event()

    def slow_new_actor(replica: Any = None) -> ReplicaActor:
        made.append(ReplicaActor(len(made), start_gate=restart_may_finish))
        return made[-1]

    monkeypatch.setattr(backend, "_new_actor", slow_new_actor)
    batch = requests(range(8))
    pending = asyncio.ensure_future(backend.generate(batch))
    await until(lambda: made[0].batches and made[1].batches)  # both hold their share
    made[0].die()
    made[0].hold.set()
    # Answered while replica 0's new engine is still starting: replica 1 took its share.
    generations = await pending
    assert not restart_may_finish.is_set()
    assert [g.text for g in generations] == [f"m seed{s} hi" for s in range(8)]
    assert made[1].batches == [[4, 5, 6, 7], [0, 1, 2, 3]]
    assert backend.restarts == 1 and backend.replicas[0].restarting is not None
    restart_may_finish.set()
    await until(lambda: backend.replicas[0].serving)
    assert backend.replicas[0].actor is made[2]
    later = await backend.generate(requests(range(20, 24)))
    assert [g.seed for g in later] == [20, 21, 22, 23]
    assert made[2].batches == [[20, 21]]  # back in rotation


async def test_a_replica_out_of_restarts_leaves_the_others_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=2, max_restarts=0)
    await backend.start()
    made[0].die()
    generations = await backend.generate(requests(range(4)))
    assert [g.seed for g in generations] == [0, 1, 2, 3]
    assert backend.replicas[0].broken is not None and backend.restarts == 0
    assert made[1].batches == [[2, 3], [0, 1]]
    made[1].die()
    with pytest.raises(BackendError, match=r"^model 'm\[0\]': the engine actor died") as info:
        await backend.generate(requests(range(2)))
    assert "max_actor_restarts=0" in str(info.value) and "\n" not in str(info.value)


async def test_adapters_and_weights_reach_every_replica_and_survive_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=2, enable_lora=True)
    await backend.start()
    await backend.load_weights("/merged/v1")
    adapter = await backend.add_adapter("tuned", "/adapters/tuned")
    assert [a.weights for a in made] == [["/merged/v1"], ["/merged/v1"]]
    assert [[x.name for x in a.loaded] for a in made] == [["tuned"], ["tuned"]]
    made[1].die()
    generations = await backend.generate(requests(range(4)), adapter="tuned")
    assert {g.model for g in generations} == {"tuned"}
    await until(lambda: backend.replicas[1].serving)  # the restart finishes
    assert made[2].weights == ["/merged/v1"] and made[2].loaded == [adapter]


async def test_a_replica_dying_during_load_weights_is_restarted_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, made = make_backend(monkeypatch, replicas=2)
    await backend.start()
    made[0].die()
    await backend.load_weights("/merged/v2")
    assert backend.weights == "/merged/v2"
    assert made[1].weights == ["/merged/v2"]
    # The new actor got the weights when it started, and again from the retried call.
    assert made[2].weights and set(made[2].weights) == {"/merged/v2"}


async def test_close_stops_every_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, _ = make_backend(monkeypatch, replicas=3)
    await backend.start()
    await backend.close()
    assert all(r.actor is None for r in backend.replicas)
    with pytest.raises(BackendError, match="not started"):
        await backend.generate(requests(range(1)))


# --------------------------------------------------------------------------- placement


def test_replicas_are_spread_over_the_cluster() -> None:
    one = VLLMModelSpec.model_validate({"name": "m", "model": "x"})
    two = one.model_copy(update={"replicas": 2})
    assert "scheduling_strategy" not in actors.options(one, None)
    assert actors.options(two, None)["scheduling_strategy"] == "SPREAD"


def test_each_replica_is_an_engine_in_the_split_of_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    config = PoolConfig.model_validate(
        {"models": [{"name": "a", "model": "/a", "replicas": 2}, {"name": "b", "model": "/b"}]}
    )
    assert replica_cores(config, config.models[0]) == ["0,1", "2"]  # type: ignore[arg-type]
    assert replica_cores(config, config.models[1]) == ["3"]  # type: ignore[arg-type]
    pool = ModelPool(config)
    backend = pool.backends["a"]
    assert isinstance(backend, VLLMBackend)
    assert [r.cpu_cores for r in backend.replicas] == ["0,1", "2"]


@pytest.mark.parametrize(
    ("num_gpus", "most_at_once"),
    [(0.5, 1), (0.0, 4), (1.0, 4)],  # shares of a GPU start one after another
)
async def test_engines_sharing_a_gpu_start_one_after_another(
    monkeypatch: pytest.MonkeyPatch, num_gpus: float, most_at_once: int
) -> None:
    config = PoolConfig.model_validate(
        {
            "ray_address": "auto",
            "models": [
                {"name": n, "model": "/x", "num_gpus": num_gpus, "replicas": 2} for n in "ab"
            ],
        }
    )
    pool = ModelPool(config)
    starting, most = 0, 0
    arrived = asyncio.Condition()

    class CountingActor(ReplicaActor):
        async def _start(self) -> dict[str, Any]:
            nonlocal starting, most
            async with arrived:
                starting += 1
                most = max(most, starting)
                arrived.notify_all()
                # Starts that may overlap wait for each other (an event, not a delay); a
                # start that ran alone when it must not would hang here: pytest's timeout.
                await arrived.wait_for(lambda: starting >= most_at_once)
            for _ in range(3):  # let any start scheduled beside this one begin: it must not
                await asyncio.sleep(0)
            starting -= 1
            return await super()._start()

    for backend in pool.backends.values():
        monkeypatch.setattr(backend, "_new_actor", lambda replica=None: CountingActor(0))
    monkeypatch.setattr(actors, "connect", lambda config: None)
    gpu_node = {"Alive": True, "Resources": {"GPU": 4.0}}
    monkeypatch.setattr(actors.ray, "nodes", lambda: [gpu_node])
    await pool.start()
    assert most == most_at_once


def gpu_config(*models: dict[str, Any]) -> PoolConfig:
    return PoolConfig.model_validate(
        {"models": [{"name": f"m{i}", "model": "/x", **m} for i, m in enumerate(models)]}
    )


def test_more_gpus_than_the_cluster_has_names_the_field() -> None:
    config = gpu_config({"num_gpus": 1, "replicas": 3}, {"num_gpus": 0.5})
    problem = gpu_shortage(config, total=2, largest_node=1)
    assert problem == (
        "models[0].num_gpus: the engines ask for 3.5 GPU(s) in all (models[0]: 3, "
        "models[1]: 0.5; replicas counted), but the Ray cluster has 2"
    )
    assert gpu_shortage(config, total=4, largest_node=1) is None
    big = gpu_config({"num_gpus": 2, "tensor_parallel_size": 2})
    assert gpu_shortage(big, total=4, largest_node=1) == (
        "models[0].num_gpus: one engine asks for 2 GPU(s), but no node of the Ray cluster "
        "has more than 1"
    )
    assert gpu_shortage(gpu_config({}), total=0, largest_node=0) is None  # CPU engines


async def test_a_cluster_short_of_gpus_fails_after_a_bounded_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = [{"Alive": True, "Resources": {"GPU": 1.0}}, {"Alive": False, "Resources": {}}]
    monkeypatch.setattr(actors.ray, "nodes", lambda: nodes)
    config = gpu_config({"num_gpus": 1, "replicas": 2})
    with pytest.raises(ConfigError, match=r"has 1 \(waited 0 s for more\)$"):
        await check_cluster_gpus(config, wait_s=0.2)
    # A node joining during the wait is enough.
    asyncio.get_running_loop().call_later(
        0.1, nodes.append, {"Alive": True, "Resources": {"GPU": 1}}
    )
    await check_cluster_gpus(config, wait_s=5)


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"replicas": 0}, "replicas: Input should be greater than or equal to 1"),
        (
            {"engine_args": {"max_num_seqs": 8}},
            "engine_args: Value error, max_num_seqs is set by this spec's own field "
            "`max_num_seqs`; give it there, not in engine_args",
        ),
        ({"engine_args": {"tokenizer": "/t"}}, "set by this spec's own field `model`"),
        ({"engine_args": {"data_parallel_size": 2}}, "own field `replicas`"),
    ],
)
def test_bad_replicas_and_engine_args_given_twice_name_the_field(
    tmp_path: Path, model: dict[str, Any], message: str
) -> None:
    path = tmp_path / "pool.yaml"
    spec = {"name": "m", "model": "/x", **model}
    path.write_text(json.dumps({"models": [spec]}))  # JSON is YAML
    with pytest.raises(ConfigError) as info:
        load_config(path, PoolConfig)
    assert str(info.value).startswith(f"{path}:1: models[0].") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_classifier_refuses_its_own_fields_in_engine_args() -> None:
    from multisample.engine.rewards.classifier import ClassifierRewardSpec

    with pytest.raises(ValidationError, match="runner is set by this spec's own field `kind`"):
        ClassifierRewardSpec.model_validate(
            {"kind": "classifier", "model": "/r", "engine_args": {"runner": "generate"}}
        )
    spec = ClassifierRewardSpec.model_validate(
        {"kind": "classifier", "model": "/r", "gpu_memory_utilization": 0.2, "num_gpus": 0.25}
    )
    assert spec.gpu_memory_utilization == 0.2 and spec.engines == 1


FIELDS: dict[str, Any] = {
    "max_num_seqs": int | None,
    "quantization": str | None,
    "enable_prefix_caching": bool | None,
    "kv_cache_dtype": Any,
    "cpu_offload_gb": float,
    "scheduling_policy": __import__("typing").Literal["fcfs", "priority"],
    "hf_overrides": dict[str, Any],
    "compilation_config": object,  # a vLLM config class: names are checked, values not
}


@pytest.mark.parametrize(
    ("engine_args", "problem"),
    [
        ({"quantization": "awq", "cpu_offload_gb": 4, "hf_overrides": {"a": 1}}, None),
        ({"compilation_config": {"level": 3}}, None),
        (
            {"max_num_seq": 8},
            ("max_num_seq", "unknown vLLM engine argument; did you mean max_num_seqs?"),
        ),
        ({"no_such_thing_at_all": 1}, ("no_such_thing_at_all", "unknown vLLM engine argument")),
        (
            {"enable_prefix_caching": "no"},
            ("enable_prefix_caching", "vLLM expects bool or null (got 'no')"),
        ),
        ({"max_num_seqs": 2.5}, ("max_num_seqs", "vLLM expects int or null (got 2.5)")),
        (
            {"scheduling_policy": "lifo"},
            ("scheduling_policy", "vLLM expects one of 'fcfs', 'priority' (got 'lifo')"),
        ),
        ({"cpu_offload_gb": True}, ("cpu_offload_gb", "vLLM expects float (got True)")),
    ],
)
def test_engine_args_problems(engine_args: dict[str, Any], problem: tuple[str, str] | None) -> None:
    assert engine_args_problem(engine_args, FIELDS) == problem


def test_cpu_engines_get_small_kv_blocks_and_whole_prefills_unless_told_otherwise() -> None:
    spec = VLLMModelSpec(name="m", model="/m", max_model_len=8192)
    settings = actors.engine_args(spec, {}, {})
    assert actors.cpu_engine_settings(settings) == {
        **settings,
        "block_size": actors.CPU_BLOCK_SIZE,
        "max_num_batched_tokens": 8192,  # the longest prompt, prefilled whole
        "enable_chunked_prefill": False,
    }
    mine = {"block_size": 64, "max_num_batched_tokens": 9000, "enable_chunked_prefill": True}
    chosen = actors.cpu_engine_settings({"max_model_len": 2048, **mine})
    # The user's block and token budget stand; chunked prefill stays off (seeded requests).
    assert (chosen["block_size"], chosen["max_num_batched_tokens"]) == (64, 9000)
    assert chosen["enable_chunked_prefill"] is False
    assert actors.cpu_engine_settings({"max_model_len": None})["max_num_batched_tokens"] == 4096


def test_unknown_engine_args_of_the_installed_vllm_name_the_field() -> None:
    config = PoolConfig.model_validate(
        {
            "models": [
                {"name": "a", "model": "/a", "engine_args": {"quantization": "awq"}},
                {"name": "b", "model": "/b", "engine_args": {"max_num_seq": 8}},
            ]
        }
    )
    with pytest.raises(ConfigError) as info:
        check_engine_args(actors.spec_paths(config))
    assert str(info.value) == (
        "models[1].engine_args.max_num_seq: unknown vLLM engine argument; did you mean "
        "max_num_seqs?"
    )


async def test_bad_engine_args_stop_the_pool_before_ray_or_any_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = PoolConfig.model_validate(
        {
            "ray_address": "auto",
            "models": [{"name": "a", "model": "/a", "engine_args": {"kv_cache_dtyp": "fp8"}}],
        }
    )
    pool = ModelPool(config)

    def no_ray(config: PoolConfig) -> None:
        raise AssertionError("Ray was reached before the engine arguments were checked")

    monkeypatch.setattr(actors, "connect", no_ray)
    monkeypatch.setattr(vllm_args, "vllm_engine_fields", lambda: {"kv_cache_dtype": str})
    with pytest.raises(ConfigError, match=r"^models\[0\]\.engine_args\.kv_cache_dtyp: unknown"):
        await pool.start()


def test_a_hub_model_missing_offline_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    config = PoolConfig.model_validate({"models": [{"name": "a", "model": "Org/Absent-Model"}]})
    with pytest.raises(ConfigError) as info:
        pool_module.check_local_models(config)
    assert str(info.value).startswith("models[0].model: hub model 'Org/Absent-Model' is not in")


# --------------------------------------------------------------------------- same results


def _records(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The samples, by prompt and candidate (prompts are committed as they finish, in an
    order that timing decides with any replica count), and the summary."""
    lines = (run / "samples.jsonl").read_text().splitlines()
    samples = sorted(map(json.loads, lines), key=lambda s: (s["prompt_id"], s["id"]))
    summary = json.loads((run / "summary.json").read_text())
    return samples, summary


def _without_timing(value: Any) -> Any:
    """The value less what measures time (latencies, wall clock, rates)."""
    timed = ("latency", "wall", "per_s", "time", "started", "finished", "duration")
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not any(t in k for t in timed)}
    if isinstance(value, list | tuple):
        return [_without_timing(v) for v in value]
    return value


async def _run_best_of_n(
    replicas: int, run: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from multisample.search.synthesize.config import SynthesizeConfig
    from multisample.search.synthesize.run import synthesize

    config = SynthesizeConfig.model_validate(
        {
            "ray_address": "auto",  # no local folder check: the actors are stand-ins
            "models": [{"name": "m", "model": "/x", "replicas": replicas, "parameters": 1e6}],
            "limit": 6,
            "budget": {"generations": 5},
            "strategy": {"kind": "best_of_n"},
            "concurrency": 3,
        }
    )
    pool = ModelPool(config, config.sampling)
    backend = pool.backends["m"]
    assert isinstance(backend, VLLMBackend)
    made = fake_actors(monkeypatch, backend)
    monkeypatch.setattr(actors, "connect", lambda config: None)
    await pool.start()
    try:
        await synthesize(config, run, pool=pool)
    finally:
        await pool.close()
    assert len(made) == replicas
    assert all(actor.batches for actor in made), "every replica should have answered"
    return _records(run)


async def test_best_of_n_records_and_summary_do_not_depend_on_the_replica_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = await _run_best_of_n(1, tmp_path / "one", monkeypatch)
    three = await _run_best_of_n(3, tmp_path / "three", monkeypatch)
    assert len(one[0]) == 30
    assert _without_timing(one) == _without_timing(three)
