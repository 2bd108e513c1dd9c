"""The Ray executor: same table as the local runner, survives a killed worker, resumes.

Runs on a local two-CPU Ray cluster (one torch thread per actor) with the embedded model, four
arithmetic questions and three heads of layer 0 plus the baseline (16 pairs).
"""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import pytest

from sprint_lab import RayExecutor, all_heads, load_problems, sweep
from sprint_lab.sweeps.batch import WorkItem
from sprint_lab.sweeps.ray import ACTOR_PREFIX, ShardFailedError
from sprint_lab.sweeps.shards import Shard, lanes_of, make_shards, pick_shard, plan_workers
from sprint_lab.sweeps.store import KEY, SweepStore

pytestmark = pytest.mark.slow

# chat_gsm8k has a short prefix, so the test sweeps stay fast on two shared cores.
SETTINGS = dict(prompt="chat_gsm8k", max_new_tokens=12, progress=False)
N_PAIRS = 4 * (3 + 1)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance with two CPUs, shut down after the module's tests."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def problems():
    return load_problems("arith", limit=4)


@pytest.fixture(scope="module")
def heads(embedded_model):
    return all_heads(embedded_model, layers=[0])[:3]


@pytest.fixture(scope="module")
def local_result(embedded_model, problems, heads):
    """The reference: the same sweep on the local executor, in one batch."""
    return sweep(embedded_model, problems, heads, batch_size=16, **SETTINGS)


TEXT_COLUMNS = ("completion", "extracted", "finish_reason", "extractor")


def assert_same_table(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal rows and values; text columns compared as pandas ``str``.

    pandas infers ``object`` instead of ``str`` for a batch whose ``extracted`` is all ``None``,
    so any runner's text dtypes depend on how rows were batched; the values must still match.
    """
    left, right = left.copy(), right.copy()
    for frame in (left, right):
        for column in TEXT_COLUMNS:
            frame[column] = frame[column].astype("str")
    pd.testing.assert_frame_equal(left, right)


def _raw_rows(path) -> pd.DataFrame:
    """Every stored row, duplicates kept (``SweepStore.read`` would hide them)."""
    parts = SweepStore(path).parts()
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _sweep_actors(ray) -> set[str]:
    return {name for name in ray.util.list_named_actors() if name.startswith(ACTOR_PREFIX)}


def _wait_gone(ray, names: set[str], timeout: float = 30.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and names & _sweep_actors(ray):
        time.sleep(0.2)
    return names & _sweep_actors(ray)


def test_make_shards_balances_cost_and_keeps_order():
    items = [WorkItem(c, q) for c in ("none", "L0H0", "L0H1") for q in range(5)]
    costs = [10, 30, 10, 50, 20] * 3
    shards = make_shards(items, costs, batch_size=4, workers=2)
    assert len(shards) == 4  # ceil(15 / 4) = 4, already a multiple of 2 workers
    assert [it for s in shards for it in s.items] == items  # contiguous, in order, complete
    totals = [s.cost for s in shards]
    assert sum(totals) == sum(costs)
    assert max(totals) - min(totals) <= max(costs)
    assert len(make_shards(items[:3], [1, 1, 1], batch_size=32, workers=2)) == 2
    assert len(make_shards(items[:1], [1], batch_size=32, workers=4)) == 1
    assert Shard(3, tuple(items[4:7]), 9).describe() == "shard 3 (3 items, configs none..L0H0)"


def test_lanes_keep_workers_on_consecutive_shards_then_steal():
    shards = [Shard(i, (WorkItem("none", i),), 10) for i in range(6)]
    lanes = lanes_of(shards, 2)
    assert [lanes[s.index] for s in shards] == [0, 0, 0, 1, 1, 1]
    pending = list(shards)
    assert pick_shard(pending, 0, lanes).index == 0  # own lane, in order
    assert pick_shard(pending, 1, lanes).index == 3
    assert pick_shard(pending, 0, lanes).index == 1
    assert pick_shard(pending, 0, lanes).index == 2
    assert pick_shard(pending, 0, lanes).index == 5  # lane 0 is dry: steal lane 1's last shard
    assert [s.index for s in pending] == [4]


def test_plan_workers_defaults_and_limits():
    assert plan_workers({"CPU": 2.0}) == (2, 1, {"num_cpus": 1.0})
    assert plan_workers({"CPU": 16.0}, threads_per_worker=4) == (4, 4, {"num_cpus": 4.0})
    assert plan_workers({"CPU": 8.0, "GPU": 4.0})[0] == 4
    assert plan_workers({"CPU": 8.0, "GPU": 1.0}, resources_per_worker={"num_gpus": 0.5})[0] == 2
    with pytest.raises(ValueError, match="needs 1 GPU"):
        plan_workers({"CPU": 2.0}, resources_per_worker={"num_gpus": 1})


def test_ray_executor_holds_the_knobs_and_imports_ray_lazily():
    import subprocess
    import sys

    code = "import sys, sprint_lab; sprint_lab.RayExecutor(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(ValueError, match="max_shard_retries"):
        RayExecutor(max_shard_retries=-1)


def test_ray_sweep_equals_local(ray_cluster, embedded_model, problems, heads, local_result):
    result = sweep(
        embedded_model, problems, heads, batch_size=2, executor=RayExecutor(workers=2),
        strategy="verify", **SETTINGS,
    )  # fmt: skip
    stats = result.meta["ray"]
    assert stats["workers"] == 2 and stats["threads_per_worker"] == 1
    assert stats["shards"] == stats["shards_run"] == 8 and stats["items_run"] == N_PAIRS
    assert result.complete and len(result) == N_PAIRS
    assert_same_table(result.table, local_result.table)
    assert not _wait_gone(ray_cluster, _sweep_actors(ray_cluster))  # actors are cleaned up


def test_killed_worker_loses_only_its_shard(
    ray_cluster, embedded_model, problems, heads, local_result, tmp_path
):
    before = _sweep_actors(ray_cluster)
    killed: list[str] = []

    def kill_a_worker(progress):
        if not killed:  # after the first shard, both workers hold a shard in flight
            name = sorted(_sweep_actors(ray_cluster) - before)[0]
            ray_cluster.kill(ray_cluster.get_actor(name), no_restart=True)
            killed.append(name)

    result = sweep(
        embedded_model, problems, heads, batch_size=2, executor=RayExecutor(workers=2),
        out=tmp_path, callback=kill_a_worker, **SETTINGS,
    )  # fmt: skip
    stats = result.meta["ray"]
    assert killed and stats["workers_lost"] >= 1 and stats["retries"] >= 1
    assert result.complete
    raw = _raw_rows(tmp_path)
    assert len(raw) == N_PAIRS and not raw.duplicated(KEY).any()  # nothing lost, nothing twice
    assert_same_table(result.table, local_result.table)


def test_bounded_retries_name_the_shard(ray_cluster, embedded_model, problems, heads):
    before = _sweep_actors(ray_cluster)

    def kill_every_worker(progress):
        for name in _sweep_actors(ray_cluster) - before:
            ray_cluster.kill(ray_cluster.get_actor(name), no_restart=True)

    # max_shard_retries=0: the first shard lost to a dead worker fails the sweep.
    message = r"shard \d+ \(\d+ items?, configs .*max_shard_retries=0"
    with pytest.raises(ShardFailedError, match=message):
        sweep(
            embedded_model, problems, heads, batch_size=2,
            executor=RayExecutor(workers=2, max_shard_retries=0),
            callback=kill_every_worker, **SETTINGS,
        )  # fmt: skip


def test_resume_after_interrupt_redoes_nothing(
    ray_cluster, embedded_model, problems, heads, local_result, tmp_path
):
    common = dict(batch_size=2, executor=RayExecutor(workers=2), out=tmp_path, **SETTINGS)

    # 1. The cancel event stops handing out shards; those in flight are still stored.
    cancel = threading.Event()
    first = sweep(
        embedded_model, problems, heads, cancel=cancel, callback=lambda p: cancel.set(), **common
    )
    n_first = len(SweepStore(tmp_path).read())
    assert not first.complete and 2 <= n_first < N_PAIRS
    assert first.meta["ray"]["items_run"] == n_first == len(first)

    # 2. A KeyboardInterrupt in the driver kills the workers and keeps what is stored.
    before = _sweep_actors(ray_cluster)
    started: set[str] = set()

    def interrupt(progress):
        started.update(_sweep_actors(ray_cluster) - before)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(embedded_model, problems, heads, callback=interrupt, **common)
    n_second = len(SweepStore(tmp_path).read())
    assert n_first < n_second < N_PAIRS
    assert started and not _wait_gone(ray_cluster, started)

    # 3. Resuming runs exactly the pairs that are not stored yet.
    final = sweep(embedded_model, problems, heads, resume=True, **common)
    assert final.meta["ray"]["items_run"] == N_PAIRS - n_second
    raw = _raw_rows(tmp_path)
    assert len(raw) == N_PAIRS and not raw.duplicated(KEY).any()
    assert final.complete
    assert_same_table(final.table, local_result.table)
