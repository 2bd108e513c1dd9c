"""Executors: what runs a sweep's remaining work items, and the shared code they report to.

:func:`~sprint_lab.sweeps.run.sweep` validates its arguments, opens the store, plans the
(configuration, question) pairs still to do and hands them, with a :class:`SweepJob` that carries
every setting, to an :class:`Executor`. An executor only has to turn work items into graded rows
(:data:`~sprint_lab.sweeps.result.COLUMNS`, built with :func:`~sprint_lab.sweeps.result.make_row`)
and pass each finished group of rows to :meth:`RowSink.emit`, which appends them to the store,
advances the progress bar and calls the user's callback. So an executor can run the model
in-process (:class:`LocalExecutor`), on a pool of Ray actors
(:class:`~sprint_lab.sweeps.ray.RayExecutor`), or send prompts, stop strings and pruned heads to
a serving engine, and storing, resuming, progress and cancellation behave the same.

Executors are named in a registry of dotted paths (:data:`EXECUTORS`), imported only when a
sweep asks for one by name, so ``import sprint_lab`` never imports Ray.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

from sprint_lab.core.ablation import HeadMeans
from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.configs import Candidate
from sprint_lab.core.errors import InputError
from sprint_lab.sweeps.batch import BatchRunner, WorkItem
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.rows import config_labels, order_table
from sprint_lab.sweeps.store import SweepStore
from sprint_lab.tasks.prompts import PromptTemplate

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem

EXECUTORS: dict[str, str] = {
    "local": "sprint_lab.sweeps.executor:LocalExecutor",
    "ray": "sprint_lab.sweeps.ray:RayExecutor",
    "vllm": "sprint_lab.sweeps.vllm:VLLMExecutor",
}
"""Executor names accepted by ``sweep(executor=...)``, as ``"module:Class"`` paths."""


@dataclass
class SweepProgress:
    """Passed to a sweep's ``callback`` after every batch."""

    done: int
    total: int
    new_rows: pd.DataFrame
    result: Callable[[], SweepResult] = field(repr=False)


@dataclass
class SweepJob:
    """Everything an executor needs to know about one sweep.

    Attributes:
        model: the driver's model (an executor may load its own copies from its name).
        problems: the questions; ``WorkItem.question_index`` indexes them.
        heads: the candidates: ``Head`` objects or :class:`~sprint_lab.core.configs.Config`
            values (the baseline is implied).
        template: the prompt template.
        max_new_tokens: generation limit per answer (greedy decoding).
        grade_mode: answer extraction mode (see :mod:`sprint_lab.tasks.grading`).
        batch_size: rows per forward pass (or per shard).
        progress: show a tqdm progress bar.
        callback: called with a :class:`SweepProgress` after each group of rows.
        cancel: when set, stop handing out work; rows in flight are still stored.
        store: the Parquet store rows are appended to, or ``None``.
        meta: the sweep's settings, recorded with the result; its ``fingerprints`` (question
            id -> fingerprint, :mod:`sprint_lab.sweeps.identity`) are stamped on every row.
        placebos: unpruned configurations run as if pruned (``"none~1"``, ...).
        deterministic: batch-invariant generation (:mod:`sprint_lab.generation.invariant`).
        strategy: how pruned rows are generated (:data:`~sprint_lab.sweeps.batch.STRATEGIES`).
        reference: the reference means of ``@mean`` / ``@resample`` candidates (computed once by
            the driver, so every executor and worker uses the same values), or ``None``.
        resample_seed: pairs each question with its resample donor.
    """

    model: LabModel
    problems: Sequence[Problem]
    heads: Sequence[Candidate]
    template: PromptTemplate
    max_new_tokens: int = 256
    grade_mode: str = "flexible"
    batch_size: int = 32
    progress: bool = True
    callback: Callable[[SweepProgress], None] | None = None
    cancel: threading.Event | None = None
    store: SweepStore | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    placebos: int = 0
    deterministic: bool = True
    strategy: str = "decode"
    reference: HeadMeans | None = field(default=None, repr=False)
    resample_seed: int = 0

    @property
    def configs(self) -> list[str]:
        """Every configuration of the sweep, in run order (baseline, heads and placebos)."""
        return config_labels(self.heads, self.placebos)

    @property
    def total(self) -> int:
        """Pairs in the whole sweep: every question under every configuration."""
        return len(self.problems) * len(self.configs)

    def cancelled(self) -> bool:
        """Whether the ``cancel`` event is set."""
        return self.cancel is not None and self.cancel.is_set()

    def stamp(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with the ``fingerprint`` column of their questions (when the job has them)."""
        prints = self.meta.get("fingerprints")
        if not prints or rows.empty:
            return rows
        return rows.assign(fingerprint=rows["question_id"].map(prints))

    def stop_strings(self) -> list[str]:
        """The template's stop strings for this model (what a serving engine is sent)."""
        return list(self.template.stop_strings(self.model.tokenizer))


class RowSink:
    """Where executors deliver finished rows: the store, the progress bar, the callback.

    Args:
        job: the sweep.
        pending: how many work items the executor is given (the rest are already stored).

    Attributes:
        decorate: applied to every result this sink builds (an executor adds its counters).

    Example:
        >>> job = SweepJob(model, problems[:1], [], sl.get_template("fewshot_cot"), progress=False)
        >>> rows = BatchRunner(model, problems[:1], max_new_tokens=2).run([WorkItem("none", 0)])
        >>> with RowSink(job, pending=1) as sink:
        ...     sink.emit(rows)
        ...     print(sink.done, sink.result(True))
        1 SweepResult(1 rows: 1 questions x 1 configurations)
    """

    def __init__(self, job: SweepJob, pending: int) -> None:
        self.job = job
        self.done = job.total - pending
        self.frames: list[pd.DataFrame] = []
        self.decorate: Callable[[SweepResult], SweepResult] = lambda result: result
        self._bar: Any = None

    def __enter__(self) -> RowSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_progress(self, desc: str = "sweep") -> None:
        """Show the progress bar (when the job asks for one), starting at the stored rows."""
        if self.job.progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.job.total, initial=self.done, desc=desc, unit="answer")

    def set_postfix(self, **values: Any) -> None:
        """Extra facts shown after the bar (e.g. live workers)."""
        if self._bar is not None:
            self._bar.set_postfix(refresh=False, **values)

    def emit(self, rows: pd.DataFrame, *, tag: str = "") -> None:
        """Store one finished group of rows, advance the bar and call the callback.

        Args:
            rows: graded rows (:data:`~sprint_lab.sweeps.result.COLUMNS`).
            tag: prefix of the part file's name (e.g. ``"ray-"``).
        """
        rows = self.job.stamp(rows)
        if self.job.store is not None:
            self.job.store.append(rows, tag=tag)
        self.frames.append(rows)
        self.done += len(rows)
        if self._bar is not None:
            self._bar.update(len(rows))
        if self.job.callback is not None:
            progress = SweepProgress(self.done, self.job.total, rows, lambda: self.result(False))
            self.job.callback(progress)

    def result(self, complete: bool) -> SweepResult:
        """The result so far, in sweep order: the store's rows of this sweep's plan (with the
        expected fingerprints) if there is a store, else the emitted rows.

        ``complete`` is what the executor reports, and is ``False`` whenever a planned pair is
        missing.
        """
        if self.job.store is not None:
            prints = self.job.meta.get("fingerprints")
            table = self.job.store.read(prints, self.job.configs)
        else:
            table = pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()
        table = order_table(table, self.job.problems, self.job.heads)
        complete = complete and len(table) == self.job.total
        return self.decorate(SweepResult(table, self.job.meta, complete=complete))

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@runtime_checkable
class Executor(Protocol):
    """Runs a sweep's remaining work items and delivers their rows to a :class:`RowSink`.

    An implementation generates an answer for each (configuration, question) pair (the
    configuration's heads pruned), grades it into a row, and calls ``sink.emit(rows)`` for each
    finished group. It checks ``job.cancelled()`` between groups.
    """

    def run(self, job: SweepJob, items: Sequence[WorkItem], sink: RowSink) -> bool:
        """Run ``items``; return ``False`` when cancelled before all were done."""
        ...


@dataclass
class LocalExecutor:
    """Runs the sweep in this process, ``job.batch_size`` pairs per generation call.

    Args:
        prefix_cache_entries: how many (prefix, configuration) KV caches to keep.
        attention: attention path for generation (``"auto"``, ``"shared_prefix"``, ``"bridge"``);
            the bridge's own attention is not batch-invariant, so it needs
            ``sweep(..., deterministic=False)``.
        window: sweep batches per generation call. Above 1, with batch-invariant generation,
            ``job.batch_size`` rows decode at once and finished rows' slots are refilled from
            the window's other pairs (continuous batching, the same table); the rows of a window
            are stored, and the cancel flag read, once per window.

    Example:
        >>> sl.sweep(model, problems[:2], ["L0H1"], max_new_tokens=4, progress=False,
        ...          executor=LocalExecutor(attention="bridge"))
        SweepResult(4 rows: 2 questions x 2 configurations)
    """

    prefix_cache_entries: int = 8
    attention: str = "auto"
    window: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise InputError(f"LocalExecutor window must be an int >= 1, got {self.window!r}")

    def run(self, job: SweepJob, items: Sequence[WorkItem], sink: RowSink) -> bool:
        """Generate and grade ``items`` window by window; ``False`` when cancelled."""
        runner = BatchRunner(
            job.model, job.problems, prompt=job.template, max_new_tokens=job.max_new_tokens,
            grade_mode=job.grade_mode, prefix_cache_entries=self.prefix_cache_entries,
            attention=self.attention, deterministic=job.deterministic, strategy=job.strategy,
            reference=job.reference, resample_seed=job.resample_seed, slots=job.batch_size,
        )  # fmt: skip
        sink.open_progress("sweep")
        items = list(items)
        step = job.batch_size * self.window
        for start in range(0, len(items), step):
            if job.cancelled():
                return False
            sink.emit(runner.run(items[start : start + step]))
        return True


def register_executor(name: str, path: str) -> None:
    """Make ``sweep(executor=name)`` build the class at ``path`` (``"package.module:Class"``).

    Example:
        >>> register_executor("inline", "sprint_lab.sweeps.executor:LocalExecutor")
        >>> type(resolve_executor("inline")).__name__
        'LocalExecutor'
    """
    EXECUTORS[name] = path


@no_type_check  # validates any object a user passes as executor=, naming what it got
def resolve_executor(executor: str | Executor | None) -> Executor:
    """An executor object from a registered name (built with its defaults) or an object.

    Raises:
        ValueError: for an unknown name, or an object without a ``run`` method.

    Example:
        >>> resolve_executor("local")
        LocalExecutor(prefix_cache_entries=8, attention='auto', window=1)
    """
    if executor is None:
        return LocalExecutor()
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            names = " or ".join(repr(name) for name in EXECUTORS)
            raise ValueError(f"unknown executor {executor!r}; use {names}")
        module_name, _, class_name = EXECUTORS[executor].partition(":")
        return getattr(importlib.import_module(module_name), class_name)()
    if not isinstance(executor, Executor):
        raise ValueError(
            f"an executor needs a run(job, items, sink) method; got {type(executor).__name__}"
        )
    return executor
