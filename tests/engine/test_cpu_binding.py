"""Splitting this machine's cores between the vLLM engines (engine.cpu_binding)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multisample.engine import actors
from multisample.engine.actors import BIND_VARIABLE, PROCESSES_VARIABLE
from multisample.engine.config import PoolConfig
from multisample.engine.cpu_binding import cpu_cores_for, partition_cores
from multisample.engine.pool import ModelPool
from tests.engine.test_config import run_with_classifier_reward


@pytest.mark.parametrize(
    ("cores", "weights", "shares"),
    [
        ([0, 1], [1], [[0, 1]]),  # one engine on 2 cores computes on both (measured faster)
        ([0, 1], [1, 1], [[0], [1]]),
        ([0, 1], [1, 1, 0], [[0], [1], [0]]),  # more engines than cores: take turns
        ([0, 1, 2, 3], [0, 0], [[0, 1], [2, 3]]),  # no weights: equal shares
        ([3, 5, 7], [1], [[3, 5]]),  # the last core is left to schedulers and Ray
        (list(range(16)), [1, 1], [list(range(8)), list(range(8, 15))]),
        (list(range(16)), [4, 1], [list(range(11)), list(range(11, 15))]),  # 10.4 + 2.6
        ([0, 1], [], []),
    ],
)
def test_partition_cores(cores: list[int], weights: list[float], shares: list[list[int]]) -> None:
    assert partition_cores(cores, weights) == shares


@given(
    st.integers(1, 64),
    st.lists(st.floats(0, 8, allow_nan=False), min_size=1, max_size=12),
)
def test_fewer_engines_than_cores_get_disjoint_shares_of_every_usable_core(
    n_cores: int, weights: list[float]
) -> None:
    cores = list(range(n_cores))
    shares = partition_cores(cores, weights)
    assert len(shares) == len(weights) and all(shares)
    if len(weights) < n_cores:
        flat = [c for share in shares for c in share]
        spare = 1 if n_cores > 2 * len(weights) else 0
        assert flat == cores[: n_cores - spare]  # contiguous, disjoint, in order
    else:
        assert all(len(share) == 1 for share in shares)


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    monkeypatch.delenv(PROCESSES_VARIABLE, raising=False)


@pytest.mark.usefixtures("four_cores")
def test_models_and_the_classifier_reward_share_the_cores_by_num_cpus() -> None:
    config = run_with_classifier_reward()  # models num_cpus 1 and 0.5, classifier 2
    pool = ModelPool(config)  # not started: the cores are planned up front
    reward = config.reward.build(pool)
    classifier = reward.components[1][1]  # type: ignore[attr-defined]
    assert [pool.backends["a"].cpu_cores, pool.backends["b"].cpu_cores] == ["0", "1"]  # type: ignore[attr-defined]
    assert classifier.engine.cpu_cores == "2,3"
    env = actors.options(classifier.spec, classifier.engine.cpu_cores)["runtime_env"]["env_vars"]
    # The model computes in the engine-core process, its OpenMP threads on those cores.
    assert {k: env[k] for k in (BIND_VARIABLE, PROCESSES_VARIABLE, "OMP_NUM_THREADS")} == {
        BIND_VARIABLE: "2,3",
        PROCESSES_VARIABLE: "0",
        "OMP_NUM_THREADS": "2",
    }
    assert (env["OMP_PLACES"], env["OMP_PROC_BIND"]) == ("{2,3}", "true")


@pytest.mark.usefixtures("four_cores")
def test_a_user_who_sets_vllm_multiprocessing_keeps_its_worker_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROCESSES_VARIABLE, "1")
    env = actors.options(
        PoolConfig.model_validate({"models": [{"name": "a", "model": "/a"}]}).models[0], "0,1"
    )["runtime_env"]["env_vars"]  # type: ignore[arg-type]
    assert env[BIND_VARIABLE] == "0,1"  # vLLM binds its worker process
    assert not {PROCESSES_VARIABLE, "OMP_NUM_THREADS", "OMP_PLACES"} & set(env)


@pytest.mark.usefixtures("four_cores")
@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ray_address": "10.0.0.1:6379"}, "a cluster: actors may land on any node"),
        ({"models": [{"name": "a", "model": "/a", "num_gpus": 1}]}, "a GPU engine"),
    ],
)
def test_vllm_keeps_its_own_binding(change: dict[str, object], why: str) -> None:
    config = PoolConfig.model_validate({"models": [{"name": "a", "model": "/a"}], **change})
    assert cpu_cores_for(config, config.models[0]) is None, why  # type: ignore[arg-type]
    assert BIND_VARIABLE not in actors.options(config.models[0], None)["runtime_env"]["env_vars"]  # type: ignore[arg-type]


@pytest.mark.usefixtures("four_cores")
def test_a_binding_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BIND_VARIABLE, "0-3")
    config = PoolConfig.model_validate({"models": [{"name": "a", "model": "/a"}]})
    assert cpu_cores_for(config, config.models[0]) is None  # type: ignore[arg-type]
