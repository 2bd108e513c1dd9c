"""The ablation sweep: every candidate head pruned in turn, every question answered.

A sweep is a set of (configuration, question) pairs: the unpruned baseline ``"none"`` plus one
configuration per candidate head. Pairs are ordered configuration-major and packed into mixed
batches, each row carrying its own head mask, so a forward pass serves several configurations
and each configuration's few-shot prefix is computed once. Rows are graded as they finish and,
with ``out=``, appended batch by batch to a Parquet store, so an interrupted sweep resumes where
it stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import Head, as_heads
from sprint_lab.generation.generator import PrefixCache, generate
from sprint_lab.sweeps.result import SweepResult, order_table
from sprint_lab.sweeps.store import SweepStore
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.prompts import get_template

BASELINE = "none"


@dataclass(frozen=True)
class WorkItem:
    """One (configuration, question) pair: ``config`` is ``"none"`` or a head label."""

    config: str
    question_index: int


@dataclass
class SweepProgress:
    """Passed to a sweep's ``callback`` after every batch."""

    done: int
    total: int
    new_rows: pd.DataFrame
    result: Callable[[], SweepResult] = field(repr=False)


class SweepCancelled(Exception):
    """Raised inside the runner when the ``cancel`` event is set (the sweep returns cleanly)."""


def config_labels(heads: Sequence[Head]) -> list[str]:
    """``["none", "L0H0", ...]``: the baseline first, then each head's label."""
    return [BASELINE] + [head.label for head in heads]


def plan(problems: Sequence[Any], heads: Sequence[Head], done: set[tuple[str, str]] = frozenset()):
    """The work still to do, configuration-major (baseline first), skipping ``done`` pairs."""
    return [
        WorkItem(config, q)
        for config in config_labels(heads)
        for q, problem in enumerate(problems)
        if (problem.id, config) not in done
    ]


class BatchRunner:
    """Generates and grades batches of work items: shared by the local and the Ray executors.

    Args:
        model: the :class:`~sprint_lab.core.model.LabModel`.
        problems: the questions, indexed by ``WorkItem.question_index``.
        prompt: a prompt template name or object (see :mod:`sprint_lab.tasks.prompts`).
        max_new_tokens: generation limit.
        grade_mode: extraction mode passed to :func:`~sprint_lab.tasks.grading.grade`.
        prefix_cache_entries: how many (prefix, configuration) KV caches to keep.
        reuse_prefix: reuse the shared few-shot prefix's KV cache (off only to measure its gain).
        attention: attention path for :func:`~sprint_lab.generation.generator.generate` (``"auto"``,
            ``"shared_prefix"`` or ``"bridge"``).
    """

    def __init__(
        self,
        model,
        problems: Sequence[Any],
        *,
        prompt: Any = "fewshot_cot",
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        prefix_cache_entries: int = 8,
        reuse_prefix: bool = True,
        attention: str = "auto",
    ) -> None:
        self.model = model
        self.attention = attention
        self.problems = list(problems)
        self.template = get_template(prompt)
        self.max_new_tokens = max_new_tokens
        self.grade_mode = grade_mode
        self.stop = self.template.stop_strings(model.tokenizer)
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        self.reuse_prefix = reuse_prefix
        self._parts = [self.template.parts(p.question, model.tokenizer) for p in self.problems]
        self._has_level = any(getattr(p, "level", None) is not None for p in self.problems)
        self._has_subject = any(getattr(p, "subject", None) is not None for p in self.problems)

    def run(self, items: Sequence[WorkItem]) -> pd.DataFrame:
        """Generate and grade one batch; return its tidy rows."""
        configs = [None if it.config == BASELINE else [Head.parse(it.config)] for it in items]
        completions = generate(
            self.model,
            [self._parts[it.question_index] for it in items],
            head_masks=masks_for(self.model, configs),
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            batch_size=max(1, len(items)),
            prefix_cache=self.prefix_cache,
            reuse_prefix=self.reuse_prefix,
            attention=self.attention,
        )
        records = []
        for item, completion in zip(items, completions, strict=True):
            problem = self.problems[item.question_index]
            verdict = grade(completion.text, problem, mode=self.grade_mode)
            head = None if item.config == BASELINE else Head.parse(item.config)
            record = {
                "question_id": problem.id,
                "config": item.config,
                "layer": -1 if head is None else head.layer,
                "head": -1 if head is None else head.head,
                "completion": completion.text,
                "extracted": verdict.extracted,
                "correct": bool(verdict.correct),
                "n_tokens": completion.n_tokens,
                "finish_reason": completion.finish_reason,
                "extractor": verdict.extractor,
            }
            if self._has_level:
                record["level"] = getattr(problem, "level", None)
            if self._has_subject:
                record["subject"] = getattr(problem, "subject", None)
            records.append(record)
        return pd.DataFrame.from_records(records)


def _meta(model, problems, heads, template, max_new_tokens, grade_mode, seed) -> dict[str, Any]:
    return {
        "model": model.name,
        "dtype": str(model.dtype).removeprefix("torch."),
        "prompt": template.name,
        "max_new_tokens": int(max_new_tokens),
        "grade_mode": grade_mode,
        "seed": int(seed),
        "heads": [head.label for head in heads],
        "question_ids": [p.id for p in problems],
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
    }


def _batches(items: list[WorkItem], batch_size: int) -> Iterable[list[WorkItem]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def sweep(
    model,
    problems: Sequence[Any],
    heads: Iterable[Head | str | tuple[int, int]],
    *,
    prompt: Any = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 32,
    out: Any = None,
    resume: bool = True,
    progress: bool = True,
    seed: int = 0,
    grade_mode: str = "flexible",
    callback: Callable[[SweepProgress], None] | None = None,
    cancel: threading.Event | None = None,
    executor: str = "local",
    workers: int | None = None,
    resources_per_worker: dict[str, float] | None = None,
    address: str | None = None,
    tags: dict[str, Any] | None = None,
    threads_per_worker: int | None = None,
    max_shard_retries: int = 3,
) -> SweepResult:
    """Prune each head in turn (plus the unpruned baseline) and answer every question.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: :class:`~sprint_lab.tasks.problems.Problem` objects (ids must be unique).
        heads: candidate heads (``Head``, ``"L3H5"`` or ``(layer, head)``); the baseline is added.
        prompt: prompt template name (``"fewshot_cot"``, ``"chat_boxed"``, ...) or object.
        max_new_tokens: generation limit per answer (greedy decoding).
        batch_size: rows per forward pass; rows mix configurations.
        out: a folder for the Parquet store; rows are appended as batches finish.
        resume: with ``out``, skip (question, configuration) pairs already stored. With
            ``resume=False`` a non-empty store is an error (nothing computed is overwritten).
        progress: show a tqdm progress bar.
        seed: recorded with the results (greedy decoding does not sample).
        grade_mode: answer extraction mode (``"flexible"`` or ``"strict"``, see grading).
        callback: called with a :class:`SweepProgress` after each batch (widgets use it).
        cancel: a ``threading.Event``; when set, the sweep stops after the batch in flight and
            returns what it has (``result.complete`` is then ``False``).
        executor: ``"local"`` or ``"ray"`` (shards over Ray actors; see
            :mod:`sprint_lab.sweeps.ray`).
        workers: Ray workers (default: the cluster's GPUs, or CPUs on a CPU-only cluster).
        resources_per_worker: Ray resources per actor, e.g. ``{"num_gpus": 1}``.
        address: Ray cluster address (default: start or join a local one).
        tags: extra JSON-able facts stored in the result's ``meta`` (e.g. the dataset name).
        threads_per_worker: torch threads (and CPUs reserved) per Ray worker (default 1).
        max_shard_retries: how often a shard whose Ray worker died is retried on a new one.

    Returns:
        A :class:`~sprint_lab.sweeps.result.SweepResult`, one row per (question, configuration).

    Example:
        >>> problems = load_problems("arith", limit=8)                        # doctest: +SKIP
        >>> result = sweep(model, problems, all_heads(model, layers=[0]),     # doctest: +SKIP
        ...                max_new_tokens=48, out="results/")
        >>> result.deltas().head()                                            # doctest: +SKIP
    """
    heads = as_heads(heads)
    if len(set(heads)) != len(heads):
        raise ValueError("a head is listed twice in heads")
    problems = list(problems)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids repeat; each question needs a unique id")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    template = get_template(prompt)
    masks_for(model, [[h] for h in heads])  # validates every head against the model
    meta = {
        **(tags or {}),
        **_meta(model, problems, heads, template, max_new_tokens, grade_mode, seed),
    }
    store = SweepStore(out) if out is not None else None
    done: set[tuple[str, str]] = set()
    if store is not None:
        if store.has_rows():
            if not resume:
                raise FileExistsError(
                    f"{store.path} already holds sweep rows; pass resume=True to continue, "
                    "or choose an empty folder"
                )
            store.check_compatible(meta)
            done = store.done_keys()
        store.write_meta({**store.read_meta(), **meta})
    items = plan(problems, heads, done)
    if executor == "ray":
        from sprint_lab.sweeps.ray import run_on_ray

        return run_on_ray(
            model,
            problems,
            heads,
            items,
            store=store,
            meta=meta,
            prompt=template,
            max_new_tokens=max_new_tokens,
            grade_mode=grade_mode,
            batch_size=batch_size,
            progress=progress,
            workers=workers,
            resources_per_worker=resources_per_worker,
            address=address,
            callback=callback,
            cancel=cancel,
            threads_per_worker=threads_per_worker,
            max_shard_retries=max_shard_retries,
        )
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    runner = BatchRunner(
        model, problems, prompt=template, max_new_tokens=max_new_tokens, grade_mode=grade_mode
    )
    return _run_local(
        runner, items, store, meta, problems, heads, batch_size, progress, callback, cancel
    )


def collect(store, frames, meta, problems, heads, complete) -> SweepResult:
    """Assemble a SweepResult from the store (if any) or the in-memory frames."""
    if store is not None:
        table = store.read()
    else:
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return SweepResult(order_table(table, problems, heads), meta, complete=complete)


def _run_local(
    runner, items, store, meta, problems, heads, batch_size, progress, callback, cancel
) -> SweepResult:
    total = len(problems) * (len(heads) + 1)
    already = total - len(items)
    frames: list[pd.DataFrame] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=already, desc="sweep", unit="answer")
    done = already
    complete = True
    try:
        for batch in _batches(items, batch_size):
            if cancel is not None and cancel.is_set():
                complete = False
                break
            rows = runner.run(batch)
            if store is not None:
                store.append(rows)
            frames.append(rows)
            done += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if callback is not None:
                callback(
                    SweepProgress(
                        done,
                        total,
                        rows,
                        lambda: collect(store, frames, meta, problems, heads, False),
                    )
                )
    finally:
        if bar is not None:
            bar.close()
    return collect(store, frames, meta, problems, heads, complete)
