"""Run a sweep's (configuration, question) pairs on a pool of Ray actors.

The remaining work items (configuration-major, baseline first) are cut into contiguous shards of
about ``batch_size`` rows and equal expected token cost (prompt suffix tokens plus
``max_new_tokens`` per row), and the shards into one contiguous lane per worker, so each actor
walks its lane in order and reuses its cached few-shot prefixes, stealing shards from the tail of
the busiest lane once its own runs dry. Each actor loads the model once and runs the local
runner's batched, gated generation (:class:`~sprint_lab.sweeps.run.BatchRunner`); the driver appends
every finished shard to the Parquet store as it arrives, and a shard whose worker dies is
retried, a bounded number of times, on a replacement actor."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sprint_lab.core.heads import Head
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import BatchRunner, SweepProgress, WorkItem, collect
from sprint_lab.tasks.prompts import get_template

#: Environment variables handed to every actor (the model cache and the hub's offline switches).
FORWARDED_ENV = (
    "SPRINT_LAB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "XDG_CACHE_HOME",
)
#: Prefix of the actors' names (they live in the driver's Ray namespace).
ACTOR_PREFIX = "sprint_lab-"
_POLL_S = 0.25


class ShardFailedError(RuntimeError):
    """A shard could not be completed: its workers kept dying, or generation raised."""


@dataclass(frozen=True)
class Shard:
    """A contiguous run of work items handled by one actor call.

    Attributes:
        index: position of the shard in the plan (stable within one run).
        items: the (configuration, question) pairs, configuration-major.
        cost: estimated token cost (prompt suffix tokens + ``max_new_tokens`` per item).
    """

    index: int
    items: tuple[WorkItem, ...]
    cost: int

    @property
    def configs(self) -> list[str]:
        """The configurations in the shard, in order."""
        return list(dict.fromkeys(item.config for item in self.items))

    def describe(self) -> str:
        """A one-line description naming the shard, e.g. for error messages."""
        configs = self.configs
        span = configs[0] if len(configs) == 1 else f"{configs[0]}..{configs[-1]}"
        n = len(self.items)
        return f"shard {self.index} ({n} item{'' if n == 1 else 's'}, configs {span})"


def estimate_costs(
    model, problems: Sequence[Any], items: Sequence[WorkItem], prompt: Any, max_new_tokens: int
) -> list[int]:
    """Expected token cost of each item: its question's prompt suffix tokens + ``max_new_tokens``.

    The few-shot prefix is left out: it is computed once per configuration and actor, and then
    served from the prefix cache.

    Example:
        >>> costs = estimate_costs(model, problems, items, "fewshot_cot", 64)  # doctest: +SKIP
    """
    template = get_template(prompt)
    suffix_tokens: dict[int, int] = {}
    for q in sorted({item.question_index for item in items}):
        _, suffix = template.parts(problems[q].question, model.tokenizer)
        ids = model.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        suffix_tokens[q] = len(ids)
    return [suffix_tokens[item.question_index] + int(max_new_tokens) for item in items]


def make_shards(
    items: Sequence[WorkItem], costs: Sequence[float], *, batch_size: int, workers: int = 1
) -> list[Shard]:
    """Cut ``items`` (kept in order) into contiguous shards of roughly equal cost.

    There are ``ceil(len(items) / batch_size)`` shards, at least ``workers`` of them and rounded
    up to a multiple of ``workers`` (equal rounds, no straggler), at most one per item. An item
    joins the shard its cost midpoint falls in, so shard costs differ by at most about one item.

    Example:
        >>> from sprint_lab.sweeps.run import WorkItem
        >>> items = [WorkItem(c, q) for c in ("none", "L0H0") for q in range(3)]
        >>> [len(s.items) for s in make_shards(items, [1] * 6, batch_size=4, workers=2)]
        [3, 3]
    """
    if len(costs) != len(items):
        raise ValueError(f"{len(items)} items but {len(costs)} costs")
    if batch_size < 1 or workers < 1:
        raise ValueError("batch_size and workers must be >= 1")
    if not items:
        return []
    n_shards = max(math.ceil(len(items) / batch_size), workers)
    n_shards = min(math.ceil(n_shards / workers) * workers, len(items))
    weights = [max(float(c), 1e-9) for c in costs]
    target = sum(weights) / n_shards
    groups: list[list[int]] = [[] for _ in range(n_shards)]
    before = 0.0
    for i, weight in enumerate(weights):
        groups[min(n_shards - 1, int((before + weight / 2) / target))].append(i)
        before += weight
    shards = []
    for group in groups:
        if group:
            shards.append(
                Shard(
                    index=len(shards),
                    items=tuple(items[i] for i in group),
                    cost=int(round(sum(costs[i] for i in group))),
                )
            )
    return shards


def _normalise_resources(resources: dict[str, float] | None) -> dict[str, Any]:
    """``{"num_gpus": 1}`` / ``{"GPU": 1, "CPU": 2, "accel": 1}`` -> Ray actor options."""
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for key, value in (resources or {}).items():
        if key in ("num_cpus", "CPU"):
            options["num_cpus"] = float(value)
        elif key in ("num_gpus", "GPU"):
            options["num_gpus"] = float(value)
        elif key == "memory":
            options["memory"] = float(value)
        else:
            custom[key] = float(value)
    if custom:
        options["resources"] = custom
    return options


def plan_workers(
    cluster: dict[str, float],
    workers: int | None = None,
    resources_per_worker: dict[str, float] | None = None,
    threads_per_worker: int | None = None,
) -> tuple[int, int, dict[str, Any]]:
    """Choose the worker count, torch threads per worker and Ray actor options.

    Defaults: one GPU per worker and one worker per GPU on a cluster with GPUs; otherwise
    ``threads_per_worker`` CPUs (default 1) per worker and ``CPUs // threads_per_worker``
    workers.

    Returns:
        ``(workers, threads_per_worker, actor_options)``.

    Raises:
        ValueError: one worker's resources exceed the whole cluster's.

    Example:
        >>> plan_workers({"CPU": 8.0}, threads_per_worker=2)
        (4, 2, {'num_cpus': 2.0})
        >>> plan_workers({"CPU": 16.0, "GPU": 2.0})
        (2, 1, {'num_gpus': 1.0, 'num_cpus': 1.0})
    """
    options = _normalise_resources(resources_per_worker)
    gpus = float(cluster.get("GPU", 0.0))
    if resources_per_worker is None and gpus >= 1:
        options["num_gpus"] = 1.0
    on_gpu = options.get("num_gpus", 0.0) > 0
    if threads_per_worker is None:
        threads_per_worker = max(1, int(options.get("num_cpus", 1)))
    if threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    options.setdefault("num_cpus", 1.0 if on_gpu else float(threads_per_worker))
    need = {"CPU": options["num_cpus"], "GPU": options.get("num_gpus", 0.0)}
    need.update(options.get("resources", {}))
    for key, amount in need.items():
        if amount > float(cluster.get(key, 0.0)) + 1e-9:
            raise ValueError(
                f"one worker needs {amount:g} {key} but the Ray cluster has "
                f"{cluster.get(key, 0.0):g}; lower resources_per_worker/threads_per_worker"
            )
    if workers is None:
        fits = [float(cluster.get(key, 0.0)) / amount for key, amount in need.items() if amount > 0]
        workers = max(1, int(min(fits) + 1e-9)) if fits else 1
    elif workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return int(workers), int(threads_per_worker), options


class ShardWorker:
    """Loads the model once and runs shards with :class:`~sprint_lab.sweeps.run.BatchRunner`.

    Ray wraps this class as an actor; it also runs in-process (handy for debugging).

    Args:
        sources: model sources to try in order (the first that exists on this node wins; the
            last is always tried), e.g. ``["/abs/cached/dir", "smollm2-135m"]``.
        dtype: ``"float32"``, ``"bfloat16"``, ...
        problems: the sweep's questions (``WorkItem.question_index`` indexes them).
        prompt, max_new_tokens, grade_mode: as in :func:`~sprint_lab.sweeps.run.sweep`.
        threads: torch intra-op threads for this worker.
        device: ``None`` for CUDA when this worker sees a GPU, else CPU.

    Example:
        >>> worker = ShardWorker(["smollm2-135m"], "float32", problems)   # doctest: +SKIP
        >>> worker.run(0, [WorkItem("none", 0)])["rows"]                 # doctest: +SKIP
    """

    def __init__(
        self,
        sources: Sequence[str],
        dtype: str,
        problems: Sequence[Any],
        prompt: Any = "fewshot_cot",
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        threads: int = 1,
        device: str | None = None,
    ) -> None:
        import torch

        from sprint_lab.core.model import load_model

        started = time.perf_counter()
        torch.set_num_threads(int(threads))
        source = next((s for s in sources[:-1] if Path(s).exists()), sources[-1])
        self.model = load_model(source, dtype=dtype, device=device)
        self.runner = BatchRunner(
            self.model, problems, prompt=prompt, max_new_tokens=max_new_tokens,
            grade_mode=grade_mode,
        )  # fmt: skip
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "load_s": time.perf_counter() - started,
        }

    def ready(self) -> dict[str, Any]:
        """Where the worker runs and how long loading took (returns once loaded)."""
        return dict(self.info)

    def run(self, shard_index: int, items: Sequence[WorkItem]) -> dict[str, Any]:
        """Generate and grade one shard.

        Returns:
            ``{"shard", "rows", "seconds", "pid", "prefills"}``; ``prefills`` counts the prefix
            caches this worker has computed so far (prefix-cache misses).
        """
        started = time.perf_counter()
        rows = self.runner.run(list(items))
        return {
            "shard": shard_index,
            "rows": rows,
            "seconds": time.perf_counter() - started,
            "pid": os.getpid(),
            "prefills": self.runner.prefix_cache.misses,
        }


def ensure_ray(address: str | None = None) -> bool:
    """Connect to Ray: reuse an initialised one, else join ``address`` or start a local one.

    A local instance starts without the dashboard and without usage stats. Returns ``True``
    when this call initialised Ray (it is left running for later sweeps in this process).

    Example:
        >>> ensure_ray()                               # doctest: +SKIP
        True
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def _model_sources(model) -> list[str]:
    """Where actors load the model from: the driver's resolved local folder, then ``name``."""
    name = str(model.name)
    sources = []
    resolved = getattr(getattr(model.hf_model, "config", None), "_name_or_path", None)
    if resolved and Path(resolved).is_dir():
        sources.append(str(Path(resolved).resolve()))
    path = Path(name).expanduser()
    sources.append(str(path.resolve()) if path.exists() else name)
    return sources


@dataclass
class _Slot:
    actor: Any
    name: str
    started: float
    ready: bool = False
    busy: bool = False
    lane: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def lanes_of(shards: Sequence[Shard], workers: int) -> dict[int, int]:
    """Deal the shards (in plan order) into ``workers`` contiguous lanes of equal length.

    Each worker walks its own lane in order, so a configuration cut between two consecutive
    shards still has its prefix served from the worker's prefix cache.

    Example:
        >>> lanes_of([Shard(i, (), 1) for i in range(4)], 2)
        {0: 0, 1: 0, 2: 1, 3: 1}
    """
    return {shard.index: shard.index * workers // len(shards) for shard in shards}


def pick_shard(pending: list[Shard], lane: int, lanes: dict[int, int]) -> Shard:
    """Take the next shard for a worker on ``lane`` out of ``pending``.

    The first pending shard of its own lane; once the lane is empty, the *last* shard of the
    lane with the most pending cost (work stealing from the end its owner reaches last).

    Example:
        >>> shards = [Shard(i, (), 1) for i in range(4)]
        >>> lanes = lanes_of(shards, 2)
        >>> pick_shard([shards[1], shards[2], shards[3]], 0, lanes).index
        1
        >>> pick_shard([shards[2], shards[3]], 0, lanes).index
        3
    """
    own = [i for i, shard in enumerate(pending) if lanes[shard.index] == lane]
    if own:
        return pending.pop(min(own, key=lambda i: pending[i].index))
    remaining: Counter[int] = Counter()
    for shard in pending:
        remaining[lanes[shard.index]] += shard.cost
    richest = max(remaining, key=lambda key: (remaining[key], -key))
    victims = [i for i, shard in enumerate(pending) if lanes[shard.index] == richest]
    return pending.pop(max(victims, key=lambda i: pending[i].index))


def run_on_ray(
    model,
    problems: Sequence[Any],
    heads: Sequence[Head],
    items: Sequence[WorkItem],
    *,
    store=None,
    meta: dict[str, Any] | None = None,
    prompt: Any = "fewshot_cot",
    max_new_tokens: int = 256,
    grade_mode: str = "flexible",
    batch_size: int = 32,
    progress: bool = True,
    workers: int | None = None,
    resources_per_worker: dict[str, float] | None = None,
    address: str | None = None,
    callback: Callable[[SweepProgress], None] | None = None,
    cancel: threading.Event | None = None,
    threads_per_worker: int | None = None,
    max_shard_retries: int = 3,
) -> SweepResult:
    """Run ``items`` on Ray actors and return the sweep's result (called by ``sweep``).

    Args:
        model: the driver's :class:`~sprint_lab.core.model.LabModel` (used for its name, dtype and
            tokenizer only: every actor loads its own copy).
        problems, heads: the sweep's questions and candidate heads.
        items: the pairs still to do (already-stored pairs removed), configuration-major.
        store: a :class:`~sprint_lab.sweeps.store.SweepStore`; each finished shard is appended to it.
        meta: the sweep's settings; the result's ``meta["ray"]`` adds this run's counters
            (``shards``, ``shards_run``, ``items_run``, ``retries``, ``workers_lost``,
            ``prefix_prefills``, ``startup_s``, ``busy_s`` (summed shard compute), ...).
        prompt, max_new_tokens, grade_mode, batch_size, progress, callback, cancel: as in
            :func:`~sprint_lab.sweeps.run.sweep` (``batch_size`` sizes the shards; ``cancel`` stops
            handing out shards and returns once those in flight are stored).
        workers: actor count (default: one per GPU, or ``CPUs // threads_per_worker``).
        resources_per_worker: Ray resources per actor, e.g. ``{"num_gpus": 1}``.
        address: a Ray cluster address; default: the initialised Ray, else a new local one.
        threads_per_worker: torch threads (and CPUs reserved) per actor, default 1.
        max_shard_retries: how often a shard whose worker died is retried before failing.

    Returns:
        A :class:`~sprint_lab.sweeps.result.SweepResult`, as from the local executor.

    Raises:
        ShardFailedError: a shard's workers died more than ``max_shard_retries`` times, or
            generation raised inside a worker (the message names the shard).
        RuntimeError: no worker could be started or kept alive.

    Example:
        >>> result = sweep(model, problems, heads, executor="ray", workers=2,  # doctest: +SKIP
        ...                out="results/")
        >>> result.meta["ray"]["items_run"]                                    # doctest: +SKIP
    """
    import ray
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

    lost_errors = (RayActorError, WorkerCrashedError, ObjectLostError)
    problems = list(problems)
    heads = list(heads)
    items = list(items)
    meta = dict(meta or {})
    if max_shard_retries < 0:
        raise ValueError(f"max_shard_retries must be >= 0, got {max_shard_retries}")
    template = get_template(prompt)
    total = len(problems) * (len(heads) + 1)
    done = total - len(items)
    frames: list[pd.DataFrame] = []
    stats: dict[str, Any] = {
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
    wall_start = time.perf_counter()

    def result(complete: bool) -> SweepResult:
        out = collect(store, frames, meta, problems, heads, complete)
        stats["wall_s"] = time.perf_counter() - wall_start
        out.meta["ray"] = dict(stats)
        return out

    if not items:
        return result(True)

    ensure_ray(address)
    n_workers, threads, options = plan_workers(
        ray.cluster_resources(), workers, resources_per_worker, threads_per_worker
    )
    costs = estimate_costs(model, problems, items, template, max_new_tokens)
    shards = make_shards(items, costs, batch_size=batch_size, workers=n_workers)
    n_workers = min(n_workers, len(shards))
    lanes = lanes_of(shards, n_workers)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if n_workers * options["num_cpus"] > cluster_cpus + 1e-9:
        warnings.warn(
            f"{n_workers} workers x {options['num_cpus']:g} CPUs exceed the cluster's "
            f"{cluster_cpus:g} CPUs; the workers that do not fit wait for resources",
            stacklevel=2,
        )
    stats.update(workers=n_workers, threads_per_worker=threads, shards=len(shards))
    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
    env["OMP_NUM_THREADS"] = str(threads)
    actor_cls = ray.remote(ShardWorker)
    actor_options = dict(options, runtime_env={"env_vars": env}, max_restarts=0, max_task_retries=0)
    problems_ref = ray.put(problems)
    actor_args = (
        _model_sources(model), str(model.dtype).removeprefix("torch."), problems_ref, template,
        max_new_tokens, grade_mode, threads,
    )  # fmt: skip
    run_id = uuid.uuid4().hex[:8]
    slots: dict[int, _Slot] = {}
    in_flight: dict[Any, tuple[int, Shard | None]] = {}
    pending: list[Shard] = list(shards)
    attempts: Counter[int] = Counter()
    startup_failures = 0
    last_error: list[BaseException] = []
    stopping = False
    complete = True
    worker_info: list[dict[str, Any]] = []
    prefills: dict[int, int] = {}

    def start_worker(lane: int) -> None:
        if startup_failures > max_shard_retries:  # loading keeps failing: stop replacing
            return
        sid = stats["workers_started"]
        stats["workers_started"] += 1
        name = f"{ACTOR_PREFIX}{run_id}-w{sid}"
        actor = actor_cls.options(name=name, **actor_options).remote(*actor_args)
        slots[sid] = _Slot(actor=actor, name=name, started=time.perf_counter(), lane=lane)
        in_flight[actor.ready.remote()] = (sid, None)

    def dispatch(sid: int) -> None:
        slot = slots[sid]
        if stopping or not pending or slot.busy:
            return
        shard = pick_shard(pending, slot.lane, lanes)
        slot.busy = True
        in_flight[slot.actor.run.remote(shard.index, shard.items)] = (sid, shard)

    def shards_in_flight() -> bool:
        return any(shard is not None for _, shard in in_flight.values())

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc=f"sweep (ray x{n_workers})", unit="answer")
    try:
        for lane in range(n_workers):
            start_worker(lane)
        while True:
            if cancel is not None and cancel.is_set() and not stopping:
                stopping, complete = True, False
            if not shards_in_flight() and (stopping or not pending):
                break
            if not in_flight:
                cause = f": {last_error[-1]}" if last_error else ""
                raise RuntimeError(
                    f"no Ray worker is left to run the {len(pending)} remaining shards "
                    f"({stats['workers_started']} started, {stats['workers_lost']} lost){cause}"
                )
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                sid, shard = in_flight.pop(ref)
                slot = slots[sid]
                try:
                    value = ray.get(ref)
                except lost_errors as error:
                    last_error.append(error)
                    stats["workers_lost"] += 1
                    del slots[sid]
                    if not slot.ready:
                        startup_failures += 1
                    try:
                        ray.kill(slot.actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    if shard is not None:
                        attempts[shard.index] += 1
                        if attempts[shard.index] > max_shard_retries:
                            raise ShardFailedError(
                                f"{shard.describe()} failed {attempts[shard.index]} times "
                                f"(max_shard_retries={max_shard_retries}); last error: {error}"
                            ) from error
                        stats["retries"] += 1
                        pending.insert(0, shard)
                        for other in list(slots):
                            if slots[other].ready:
                                dispatch(other)
                    if pending and not stopping:
                        start_worker(slot.lane)  # the replacement takes over the lane
                    continue
                except RayTaskError as error:
                    where = shard.describe() if shard is not None else f"worker {slot.name}"
                    message = f"{where} raised inside its Ray worker: {error}"
                    raise ShardFailedError(message) from error
                if shard is None:  # the worker finished loading the model
                    slot.ready, slot.info = True, value
                    worker_info.append(value)
                    stats["worker_load_s"] = [round(w["load_s"], 3) for w in worker_info]
                    if stats["startup_s"] is None:
                        stats["startup_s"] = time.perf_counter() - wall_start
                    dispatch(sid)
                    continue
                slot.busy = False
                prefills[sid] = value["prefills"]
                stats["prefix_prefills"] = sum(prefills.values())
                stats["busy_s"] += value["seconds"]
                dispatch(sid)  # keep the worker busy before doing the driver's bookkeeping
                rows = value["rows"]
                if store is not None:
                    store.append(rows, tag="ray-")
                frames.append(rows)
                done += len(shard.items)
                stats["shards_run"] += 1
                stats["items_run"] += len(shard.items)
                if bar is not None:
                    bar.update(len(shard.items))
                    bar.set_postfix(workers=sum(s.ready for s in slots.values()), refresh=False)
                if callback is not None:
                    callback(SweepProgress(done, total, rows, lambda: result(False)))
            if stopping:  # no new shards: stop waiting for workers still loading
                for ref in [r for r, (_, s) in in_flight.items() if s is None]:
                    del in_flight[ref]
    finally:
        for slot in slots.values():
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if bar is not None:
            bar.close()
    return result(complete)
