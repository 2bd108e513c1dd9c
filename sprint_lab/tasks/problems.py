"""Loading problems: a benchmark split by task name (or a ``.jsonl`` path), and seeded subsets.

:func:`load_problems` resolves its ``name`` through the task registry
(:func:`~sprint_lab.tasks.task.get_task`), so a newly registered dataset loads like the built-in
ones. Subsets are drawn *stratified by level* (:func:`stratified_subset`): every difficulty level
keeps its share, so a 50-problem MATH500 subset has the level mix of the full 500 and the ids
and order of the full set. :func:`pick_problems` adds a level cap, for the small models of the
notebooks' smoke runs.

Example:
    >>> probs = load_problems("arith", limit=5, seed=0)
    >>> len(probs), probs[0].source, probs[0].task
    (5, 'arith', 'gsm8k')
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from sprint_lab.tasks.records import (
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    problems_to_frame,
)
from sprint_lab.tasks.task import get_task

__all__ = [
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "load_problems",
    "pick_problems",
    "problems_to_frame",
    "stratified_subset",
]


def load_problems(
    name: str | os.PathLike[str],
    split: str = "test",
    *,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[Problem]:
    """Load a benchmark (or a JSONL file) as a list of :class:`Problem`.

    Sources by ``name`` (any task of :data:`~sprint_lab.tasks.task.TASKS`):

    - ``"gsm8k"`` (splits ``train``/``test``): gold = text after ``####`` with commas removed,
      ``solution`` = the worked answer, ids ``gsm8k-{split}-{index:05d}`` (file order).
    - ``"math500"`` (split ``test`` only): the 500 PRM800K/HuggingFaceH4 problems; id =
      ``unique_id``.
    - ``"math"`` (splits ``train``/``test``): the full MATH dataset. Locally it is read from
      ``math/{split}.jsonl`` in the data directory (PRM800K ``math_splits`` format: ``problem``,
      ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``). From the hub it is
      ``EleutherAI/hendrycks_math``: its seven subject configs concatenated in alphabetical
      order (7,500 train / 5,000 test); the gold answer is the last ``\\boxed{}`` of the
      solution and ids are ``math-{split}-{config}-{index:05d}``. The hub train split is the
      original Hendrycks train split, so it is disjoint from MATH500 (which was drawn from the
      test split); it is smaller than PRM800K's 12,000-problem train split used by SPRINT.
    - ``"arith"``: our offline generated word problems (see :mod:`sprint_lab.tasks.arith`).
    - a path to a ``.jsonl`` file whose rows have ``question`` (or ``problem``) and ``answer``,
      optionally ``id``, ``solution``, ``level``, ``subject``, ``source``; ids default to
      ``{file stem}-{index:05d}``.

    Local data (``data_dir``, else the ``SPRINT_LAB_DATA`` environment variable) is used when
    set: ``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl``, ``math/{train,test}.jsonl``.
    Otherwise the hub is used through ``datasets.load_dataset`` (respecting ``HF_HUB_OFFLINE``).

    Args:
        name: Task name (see :func:`~sprint_lab.tasks.task.list_tasks`) or path to a ``.jsonl``
            file.
        split: ``"train"`` or ``"test"`` (ignored for JSONL files).
        limit: If given, return a seeded random subset of this size, stratified by level when
            levels exist (see :func:`stratified_subset`), in original order. Ids are those of
            the full set.
        seed: Seed of the subset draw.
        data_dir: Folder holding the local JSONL files; overrides ``SPRINT_LAB_DATA``.

    Returns:
        The problems, in file order.

    Raises:
        ProblemFormatError: Unknown name or split, a file that is not UTF-8, a malformed JSON
            line, a missing or invalid field.
        DatasetUnavailableError: Neither local files nor the hub can provide the data.
        FileNotFoundError: ``name`` looks like a JSONL path that does not exist.

    Example:
        >>> probs = load_problems("arith", "test", limit=10, seed=1)
        >>> sorted({p.level for p in probs})
        [1, 2, 3, 4, 5]
    """
    problems = get_task(name).load(split, data_dir)
    if limit is None:
        return problems
    return stratified_subset(problems, limit, seed=seed)


def stratified_subset(problems: Sequence[Problem], limit: int, *, seed: int = 0) -> list[Problem]:
    """Draw a seeded random subset, stratified by ``level``, kept in original order.

    Each level (``None`` counts as a level of its own) gets a share of ``limit`` proportional to
    its size; leftover slots go to the levels with the largest fractional remainders (ties: the
    lower level first). Within a level, members are drawn with ``random.Random(seed)``.
    Without any levels this is a plain seeded sample.

    Args:
        problems: The full set.
        limit: Number of problems wanted; at least the full size returns everything.
        seed: Seed of the draw.

    Returns:
        The chosen problems, in the order they have in ``problems``.

    Raises:
        ValueError: ``limit`` is negative.

    Example:
        >>> ps = [Problem(id=str(i), question="q", answer="1", level=1 + i % 2) for i in range(10)]
        >>> [p.level for p in stratified_subset(ps, 4, seed=0)].count(1)
        2
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"limit must be an int or None, got {limit!r}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    n = len(problems)
    if limit >= n:
        return list(problems)
    rng = random.Random(seed)
    strata: dict[int | None, list[int]] = {}
    for i, p in enumerate(problems):
        strata.setdefault(p.level, []).append(i)
    if len(strata) == 1:
        chosen = rng.sample(range(n), limit)
    else:
        keys = sorted(strata, key=lambda k: (k is None, k if k is not None else 0))
        exact = {k: limit * len(strata[k]) / n for k in keys}
        quota = {k: int(exact[k]) for k in keys}
        leftover = limit - sum(quota.values())
        by_remainder = sorted(keys, key=lambda k: -(exact[k] - quota[k]))  # stable: level order
        for k in by_remainder[:leftover]:
            quota[k] += 1
        chosen = []
        for k in keys:
            chosen.extend(rng.sample(strata[k], quota[k]))
    return [problems[i] for i in sorted(chosen)]


def pick_problems(
    dataset: str | os.PathLike[str],
    split: str = "test",
    n: int | None = None,
    *,
    max_level: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[Problem]:
    """A seeded subset of a dataset split, stratified by level, optionally easy levels only.

    Args:
        dataset: a name for :func:`load_problems` (``"arith"``, ...) or a ``.jsonl`` path.
        split: ``"train"`` or ``"test"``.
        n: how many problems (``None``: all that pass the level filter).
        max_level: keep only problems with ``level <= max_level`` (problems without a level
            are kept); ``None`` keeps every level.
        seed: seed of the subset draw.
        data_dir: folder with local benchmark files.

    Returns:
        The problems, in the order of the full split.

    Raises:
        ValueError: when no problem passes the level filter.

    Example:
        >>> easy = pick_problems("arith", "train", 4, max_level=1)
        >>> len(easy), {p.level for p in easy}
        (4, {1})
    """
    pool = load_problems(dataset, split, seed=seed, data_dir=data_dir)
    if max_level is not None:
        pool = [p for p in pool if p.level is None or p.level <= max_level]
    if not pool:
        raise ValueError(f"no {dataset} {split} problem has level <= {max_level}")
    return pool if n is None else stratified_subset(pool, n, seed=seed)
