"""Cutting a sweep's work items into shards, lanes and workers: pure data, no Ray.

The remaining work items (configuration-major, baseline first) are cut into contiguous shards of
about ``batch_size`` rows and equal expected token cost (prompt suffix tokens plus
``max_new_tokens`` per row, :func:`estimate_costs`, :func:`make_shards`), and the shards into one
contiguous lane per worker (:func:`lanes_of`), so each worker walks its lane in order and reuses
its cached few-shot prefixes, stealing shards from the tail of the busiest lane once its own runs
dry (:func:`pick_shard`). :func:`plan_workers` sizes the worker pool from a cluster's resources.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sprint_lab.sweeps.batch import WorkItem
from sprint_lab.tasks.prompts import get_template

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem


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
    model: LabModel,
    problems: Sequence[Problem],
    items: Sequence[WorkItem],
    prompt: Any,
    max_new_tokens: int,
) -> list[int]:
    """Expected token cost of each item: its question's prompt suffix tokens + ``max_new_tokens``.

    The few-shot prefix is left out: it is computed once per configuration and actor, and then
    served from the prefix cache.

    Example:
        >>> items = [WorkItem("none", 0), WorkItem("L0H1", 0)]
        >>> costs = estimate_costs(model, problems, items, "fewshot_cot", 64)
        >>> costs[0] == costs[1] > 64
        True
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


def normalise_resources(resources: dict[str, float] | None) -> dict[str, Any]:
    """``{"num_gpus": 1}`` / ``{"GPU": 1, "CPU": 2, "accel": 1}`` -> Ray actor options.

    Example:
        >>> normalise_resources({"GPU": 1, "accel": 2})
        {'num_gpus': 1.0, 'resources': {'accel': 2.0}}
    """
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
    cluster: Mapping[str, float],
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
    options = normalise_resources(resources_per_worker)
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
