"""Run a sweep's (configuration, question) pairs on a pool of Ray actors.

:class:`RayExecutor` holds the Ray settings; each run is one :class:`RayScheduler`. The remaining
work items are cut into contiguous shards of equal expected token cost and dealt into one lane
per worker (:mod:`sprint_lab.sweeps.shards`), so each actor walks its lane in order and reuses its
cached few-shot prefixes, stealing shards from the tail of the busiest lane once its own runs
dry. Each actor (:class:`ShardWorker`) loads the model once and runs the local runner's batched,
gated generation (:class:`~sprint_lab.sweeps.batch.BatchRunner`); the driver hands every finished
shard to the sweep's :class:`~sprint_lab.sweeps.executor.RowSink` as it arrives (store, progress,
callback), and a shard whose worker dies is retried, a bounded number of times, on a replacement
actor. ``ray`` itself is imported only when a sweep runs, so importing this module is cheap.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sprint_lab.sweeps.batch import WorkItem
from sprint_lab.sweeps.executor import RowSink, SweepJob
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.shards import (
    Shard,
    estimate_costs,
    lanes_of,
    make_shards,
    pick_shard,
    plan_workers,
)
from sprint_lab.sweeps.worker import FORWARDED_ENV, ShardWorker, ensure_ray, model_sources

if TYPE_CHECKING:
    pass

#: Prefix of the actors' names (they live in the driver's Ray namespace).
ACTOR_PREFIX = "sprint_lab-"
_POLL_S = 0.25


class ShardFailedError(RuntimeError):
    """A shard could not be completed: its workers kept dying, or generation raised."""


@dataclass
class _Slot:
    actor: Any
    name: str
    started: float
    ready: bool = False
    busy: bool = False
    lane: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RayExecutor:
    """Runs a sweep on Ray actors, one model copy per actor.

    Args:
        workers: actor count (default: one per GPU, or ``CPUs // threads_per_worker``).
        address: a Ray cluster address; default: the initialised Ray, else a new local one.
        resources_per_worker: Ray resources per actor, e.g. ``{"num_gpus": 1}``.
        threads_per_worker: torch threads (and CPUs reserved) per actor, default 1.
        max_shard_retries: how often a shard whose worker died is retried before failing.

    The result's ``meta["ray"]`` holds the run's counters (``workers``, ``shards``,
    ``shards_run``, ``items_run``, ``retries``, ``workers_lost``, ``prefix_prefills``,
    ``startup_s``, ``busy_s`` (summed shard compute), ``wall_s``, ...).

    A sweep on Ray starts a cluster and actor processes (seconds to minutes), so the example is
    not run here.

    Example:
        >>> result = sl.sweep(model, problems, heads, out="results/",          # doctest: +SKIP
        ...                   executor=RayExecutor(workers=2))
        >>> result.meta["ray"]["items_run"]                                    # doctest: +SKIP
    """

    workers: int | None = None
    address: str | None = None
    resources_per_worker: dict[str, float] | None = None
    threads_per_worker: int | None = None
    max_shard_retries: int = 3

    def __post_init__(self) -> None:
        if self.max_shard_retries < 0:
            raise ValueError(f"max_shard_retries must be >= 0, got {self.max_shard_retries}")

    def run(self, job: SweepJob, items: Sequence[WorkItem], sink: RowSink) -> bool:
        """Run ``items`` on Ray actors; ``False`` when cancelled before all were done.

        Raises:
            ShardFailedError: a shard's workers died more than ``max_shard_retries`` times, or
                generation raised inside a worker (the message names the shard).
            RuntimeError: no worker could be started or kept alive.
        """
        return RayScheduler(self, job, items, sink).run()


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


class RayScheduler:
    """One Ray run of a sweep: starts workers, hands out shards, reacts to each event.

    Every piece of the run's state is an attribute; each event has its method:
    :meth:`start_workers` / :meth:`start_worker`, :meth:`submit`, :meth:`worker_ready`,
    :meth:`shard_finished`, :meth:`worker_died`, :meth:`cancel` and :meth:`finish`.

    Args:
        config: the executor's settings.
        job: the sweep.
        items: the pairs still to do, configuration-major.
        sink: where finished shards go.
    """

    def __init__(
        self, config: RayExecutor, job: SweepJob, items: Sequence[WorkItem], sink: RowSink
    ) -> None:
        self.config = config
        self.job = job
        self.items = list(items)
        self.sink = sink
        self.stats: dict[str, Any] = {
            "workers": 0,
            "threads_per_worker": None,
            "shards": 0,
            "shards_run": 0,
            "items_run": 0,
            "retries": 0,
            "workers_lost": 0,
            "workers_started": 0,
            "startup_s": None,
            "worker_load_s": [],
            "prefix_prefills": 0,
            "busy_s": 0.0,
            "wall_s": 0.0,
        }
        self.wall_start = time.perf_counter()
        self.run_id = uuid.uuid4().hex[:8]
        self.slots: dict[int, _Slot] = {}
        self.in_flight: dict[Any, tuple[int, Shard | None]] = {}
        self.pending: list[Shard] = []
        self.lanes: dict[int, int] = {}
        self.attempts: Counter[int] = Counter()
        self.startup_failures = 0
        self.last_error: BaseException | None = None
        self.stopping = False
        self.complete = True
        self.worker_info: list[dict[str, Any]] = []
        self.prefills: dict[int, int] = {}
        self.ray: Any = None
        self.actor_cls: Any = None
        self.actor_options: dict[str, Any] = {}
        self.actor_args: tuple[Any, ...] = ()
        sink.decorate = self.annotate

    def annotate(self, result: SweepResult) -> SweepResult:
        """Add this run's counters to a result as ``meta["ray"]``."""
        self.stats["wall_s"] = time.perf_counter() - self.wall_start
        result.meta["ray"] = dict(self.stats)
        return result

    # ------------------------------------------------------------------ set-up
    def run(self) -> bool:
        """Run every item; ``False`` when cancelled first."""
        if not self.items:
            return True
        n_workers = self.prepare()
        self.sink.open_progress(f"sweep (ray x{n_workers})")
        try:
            self.start_workers(n_workers)
            while self.step():
                pass
        finally:
            self.finish()
        return self.complete

    def prepare(self) -> int:
        """Connect to Ray, size the pool, cut the shards; return the worker count."""
        import ray

        job, config = self.job, self.config
        self.ray = ray
        ensure_ray(config.address)
        n_workers, threads, options = plan_workers(
            ray.cluster_resources(),
            config.workers,
            config.resources_per_worker,
            config.threads_per_worker,
        )
        costs = estimate_costs(
            job.model, job.problems, self.items, job.template, job.max_new_tokens
        )
        shards = make_shards(self.items, costs, batch_size=job.batch_size, workers=n_workers)
        n_workers = min(n_workers, len(shards))
        self.pending = list(shards)
        self.lanes = lanes_of(shards, n_workers)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
        if n_workers * options["num_cpus"] > cluster_cpus + 1e-9:
            warnings.warn(
                f"{n_workers} workers x {options['num_cpus']:g} CPUs exceed the cluster's "
                f"{cluster_cpus:g} CPUs; the workers that do not fit wait for resources",
                stacklevel=4,
            )
        self.stats.update(workers=n_workers, threads_per_worker=threads, shards=len(shards))
        env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
        env["OMP_NUM_THREADS"] = str(threads)
        self.actor_cls = ray.remote(ShardWorker)
        self.actor_options = dict(
            options, runtime_env={"env_vars": env}, max_restarts=0, max_task_retries=0
        )
        self.actor_args = (
            model_sources(job.model), str(job.model.dtype).removeprefix("torch."),
            ray.put(list(job.problems)), job.template, job.max_new_tokens, job.grade_mode,
            threads, None, job.deterministic, job.strategy, job.reference, job.resample_seed,
        )  # fmt: skip
        return n_workers

    # ------------------------------------------------------------------ events
    def start_workers(self, n_workers: int) -> None:
        """Start one worker per lane."""
        for lane in range(n_workers):
            self.start_worker(lane)

    def start_worker(self, lane: int) -> None:
        """Start an actor for ``lane`` (unless loading keeps failing); it reports when ready."""
        if self.startup_failures > self.config.max_shard_retries:
            return
        sid = self.stats["workers_started"]
        self.stats["workers_started"] += 1
        name = f"{ACTOR_PREFIX}{self.run_id}-w{sid}"
        actor = self.actor_cls.options(name=name, **self.actor_options).remote(*self.actor_args)
        self.slots[sid] = _Slot(actor=actor, name=name, started=time.perf_counter(), lane=lane)
        self.in_flight[actor.ready.remote()] = (sid, None)

    def submit(self, sid: int) -> None:
        """Give worker ``sid`` its next shard, if it is idle and work is left."""
        slot = self.slots[sid]
        if self.stopping or not self.pending or slot.busy:
            return
        shard = pick_shard(self.pending, slot.lane, self.lanes)
        slot.busy = True
        self.in_flight[slot.actor.run.remote(shard.index, shard.items)] = (sid, shard)

    def step(self) -> bool:
        """Wait for the next event and handle it; ``False`` once the run is over."""
        if self.job.cancelled() and not self.stopping:
            self.cancel()
        shards_in_flight = any(shard is not None for _, shard in self.in_flight.values())
        if not shards_in_flight and (self.stopping or not self.pending):
            return False
        if not self.in_flight:
            cause = f": {self.last_error}" if self.last_error else ""
            raise RuntimeError(
                f"no Ray worker is left to run the {len(self.pending)} remaining shards "
                f"({self.stats['workers_started']} started, {self.stats['workers_lost']} lost)"
                f"{cause}"
            )
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=_POLL_S)
        for ref in ready:
            self.receive(ref)
        if self.stopping:  # no new shards: stop waiting for workers still loading
            for ref in [r for r, (_, s) in self.in_flight.items() if s is None]:
                del self.in_flight[ref]
        return True

    def receive(self, ref: Any) -> None:
        """Route one finished Ray call to its event."""
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

        sid, shard = self.in_flight.pop(ref)
        try:
            value = self.ray.get(ref)
        except (RayActorError, WorkerCrashedError, ObjectLostError) as error:
            self.worker_died(sid, shard, error)
            return
        except RayTaskError as error:
            where = shard.describe() if shard is not None else f"worker {self.slots[sid].name}"
            raise ShardFailedError(f"{where} raised inside its Ray worker: {error}") from error
        if shard is None:
            self.worker_ready(sid, value)
        else:
            self.shard_finished(sid, shard, value)

    def worker_ready(self, sid: int, info: dict[str, Any]) -> None:
        """A worker finished loading the model: record it and give it a shard."""
        slot = self.slots[sid]
        slot.ready, slot.info = True, info
        self.worker_info.append(info)
        self.stats["worker_load_s"] = [round(w["load_s"], 3) for w in self.worker_info]
        if self.stats["startup_s"] is None:
            self.stats["startup_s"] = time.perf_counter() - self.wall_start
        self.submit(sid)

    def shard_finished(self, sid: int, shard: Shard, value: dict[str, Any]) -> None:
        """A shard's rows arrived: keep the worker busy, then hand the rows to the sink."""
        self.slots[sid].busy = False
        self.prefills[sid] = value["prefills"]
        self.stats["prefix_prefills"] = sum(self.prefills.values())
        self.stats["busy_s"] += value["seconds"]
        self.submit(sid)  # keep the worker busy before doing the driver's bookkeeping
        self.stats["shards_run"] += 1
        self.stats["items_run"] += len(shard.items)
        self.sink.set_postfix(workers=sum(s.ready for s in self.slots.values()))
        self.sink.emit(value["rows"], tag="ray-")

    def worker_died(self, sid: int, shard: Shard | None, error: BaseException) -> None:
        """A worker was lost: retry its shard (bounded) and replace it on its lane."""
        slot = self.slots.pop(sid)
        self.last_error = error
        self.stats["workers_lost"] += 1
        if not slot.ready:
            self.startup_failures += 1
        _kill(self.ray, slot.actor)
        if shard is not None:
            self.attempts[shard.index] += 1
            if self.attempts[shard.index] > self.config.max_shard_retries:
                raise ShardFailedError(
                    f"{shard.describe()} failed {self.attempts[shard.index]} times "
                    f"(max_shard_retries={self.config.max_shard_retries}); last error: {error}"
                ) from error
            self.stats["retries"] += 1
            self.pending.insert(0, shard)
            for other in list(self.slots):
                if self.slots[other].ready:
                    self.submit(other)
        if self.pending and not self.stopping:
            self.start_worker(slot.lane)  # the replacement takes over the lane

    def cancel(self) -> None:
        """Stop handing out shards; those in flight are still stored."""
        self.stopping, self.complete = True, False

    def finish(self) -> None:
        """Kill every actor of this run."""
        for slot in self.slots.values():
            _kill(self.ray, slot.actor)
