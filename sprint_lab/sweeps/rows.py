"""The row schema of a sweep: one row per (question, configuration), whichever executor ran it.

Every executor builds its rows with :func:`make_row` (so the local loop, Ray actors and any
serving engine produce the same :data:`COLUMNS`), and :func:`order_table` puts a table in sweep
order (baseline first, then heads; questions in problem order) with one dtype per column, so a
table reads the same whatever batches, shards or part files its rows came from.
:class:`~sprint_lab.sweeps.result.SweepResult` is the table's view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

from sprint_lab.core.heads import (
    BASELINE,
    is_baseline,
    is_placebo,
    normalise_label,
    parse_config,
    placebo_label,
    split_kind,
)

if TYPE_CHECKING:
    from sprint_lab.tasks.problems import Problem

__all__ = [
    "COLUMNS",
    "DELTA_COLUMNS",
    "GROUP_COLUMNS",
    "OUTCOME_COLUMNS",
    "REQUIRED_COLUMNS",
    "CompletionLike",
    "VerdictLike",
    "config_labels",
    "config_position",
    "group_columns",
    "make_row",
    "order_table",
]

COLUMNS = [
    "question_id",
    "config",
    "layer",
    "head",
    "completion",
    "extracted",
    "correct",
    "n_tokens",
    "finish_reason",
    "extractor",
    "diverged_at",
]
"""The columns of every sweep row (then :data:`GROUP_COLUMNS` when the problems have them).

``diverged_at`` is the first token of the answer where a configuration's answer departs from
the baseline's (``<NA>`` when identical, and for the baseline itself): a per-(question, head)
measure of how much the head matters even when the verdict does not change.
"""

GROUP_COLUMNS = ("level", "subject")
"""Optional problem attributes copied into the rows when any problem has them."""

REQUIRED_COLUMNS = ("question_id", "config", "correct")
"""What a table needs to be read as a sweep (:meth:`SweepResult.coerce`)."""

DELTA_COLUMNS = [
    "config",
    "layer",
    "head",
    "n",
    "accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "discordance",
    "mde",
]
"""Columns of :meth:`SweepResult.deltas`."""

OUTCOME_COLUMNS = [
    "question_id", "question", "gold", "baseline_correct", "pruned_correct", "baseline_extracted",
    "pruned_extracted", "changed",
]  # fmt: skip
"""Columns of :meth:`SweepResult.outcomes`."""


@runtime_checkable
class CompletionLike(Protocol):
    """What :func:`make_row` reads from a generated answer (any executor's completion)."""

    @property
    def text(self) -> str: ...

    @property
    def n_tokens(self) -> int: ...

    @property
    def finish_reason(self) -> str: ...


@runtime_checkable
class VerdictLike(Protocol):
    """What :func:`make_row` reads from a grading verdict."""

    @property
    def correct(self) -> bool: ...

    @property
    def extracted(self) -> Any: ...

    @property
    def extractor(self) -> str: ...


def config_labels(heads: Sequence[Any], placebos: int = 0) -> list[str]:
    """The configurations of a sweep in run order: the baseline, then the candidates (``Head``
    or :class:`~sprint_lab.core.configs.Config`, anything with a ``label``).

    ``placebos`` unpruned configurations (``"none~1"``, ...) are spread evenly between the heads,
    so each runs in the mixed batches of a different part of the sweep.

    Example:
        >>> config_labels([sl.Head(0, 1)])
        ['none', 'L0H1']
        >>> config_labels([sl.Head(0, 0), sl.Head(0, 1), sl.Head(0, 2), sl.Head(0, 3)], placebos=1)
        ['none', 'L0H0', 'L0H1', 'none~1', 'L0H2', 'L0H3']
    """
    if isinstance(placebos, bool) or int(placebos) != placebos or placebos < 0:
        raise ValueError(f"placebos must be a whole number >= 0, got {placebos!r}")
    labels = [head.label for head in heads]
    for index in range(int(placebos), 0, -1):
        labels.insert(round(index * len(heads) / (placebos + 1)), placebo_label(index))
    return [BASELINE, *labels]


def config_position(config: str) -> tuple[int, int]:
    """The ``(layer, head)`` columns of a configuration.

    ``(-1, -1)`` for the baseline and placebos; a single head (of any ablation kind) gives its
    layer and head; a set within one layer (or a whole layer) gives ``(layer, -1)``; a set
    across layers ``(-1, -1)``.

    Example:
        >>> config_position("none"), config_position("L3H5"), config_position("none~1")
        ((-1, -1), (3, 5), (-1, -1))
        >>> config_position("L3H5@mean"), config_position("L12"), config_position("L1H0+L2H0")
        ((3, 5), (12, -1), (-1, -1))
    """
    if is_baseline(config) or is_placebo(config):
        return -1, -1
    text, _ = split_kind(normalise_label(config))
    heads = parse_config(text, n_heads=1)  # one head stands for each whole-layer part
    if len(heads) == 1 and heads[0].label == text:
        return heads[0].layer, heads[0].head
    layers = {head.layer for head in heads}
    return (layers.pop(), -1) if len(layers) == 1 else (-1, -1)


def group_columns(problems: Sequence[Problem]) -> list[str]:
    """The :data:`GROUP_COLUMNS` that at least one problem has a value for.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> group_columns([NS(level=1), NS(level=None, subject=None)])
        ['level']
    """
    return [c for c in GROUP_COLUMNS if any(getattr(p, c, None) is not None for p in problems)]


def make_row(
    problem: Problem,
    config: str,
    completion: CompletionLike,
    verdict: VerdictLike,
    groups: Sequence[str] = (),
) -> dict[str, Any]:
    """One sweep row: ``problem`` answered under ``config``, graded.

    Args:
        problem: the question (``.id`` and the ``groups`` attributes are read).
        config: the configuration label (``"none"`` or ``"L3H5"``).
        completion: the generated answer (``.text``, ``.n_tokens``, ``.finish_reason``).
        verdict: its grade (``.correct``, ``.extracted``, ``.extractor``).
        groups: the :data:`GROUP_COLUMNS` to copy (see :func:`group_columns`).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> row = make_row(problems[0], "L0H1", NS(text="4", n_tokens=2, finish_reason="stop"),
        ...                NS(correct=True, extracted="4", extractor="last_number"), ["level"])
        >>> row["layer"], row["head"], row["correct"], list(row)[-1]
        (0, 1, True, 'level')
    """
    layer, head = config_position(config)
    row = {
        "question_id": problem.id,
        "config": config,
        "layer": layer,
        "head": head,
        "completion": completion.text,
        "extracted": verdict.extracted,
        "correct": bool(verdict.correct),
        "n_tokens": completion.n_tokens,
        "finish_reason": completion.finish_reason,
        "extractor": verdict.extractor,
        "diverged_at": getattr(completion, "diverged_at", None),
    }
    for column in groups:
        row[column] = getattr(problem, column, None)
    return row


def order_table(
    table: pd.DataFrame, problems: Sequence[Any] | None = None, heads: Sequence[Any] | None = None
) -> pd.DataFrame:
    """Sort rows by configuration (baseline first, then the candidates ``heads``, anything with a
    ``label``) and question order."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    table = table.copy()
    if heads is not None:
        config_rank = {label: i for i, label in enumerate([BASELINE] + [h.label for h in heads])}
    else:
        config_rank = {BASELINE: -1}
    config_rank = {label: float(rank) for label, rank in config_rank.items()}
    for config in table["config"].unique():  # placebos: right after the baseline, in number order
        if is_placebo(config):
            config_rank[config] = config_rank[BASELINE] + int(str(config).split("~")[1]) / 1e6
    if problems is not None:
        question_rank = {p.id: i for i, p in enumerate(problems)}
    else:
        question_rank = {q: i for i, q in enumerate(sorted(table["question_id"].unique()))}
    table["_c"] = [
        config_rank.get(c, len(config_rank) + layer * 10_000 + head)
        for c, layer, head in zip(table["config"], table["layer"], table["head"], strict=True)
    ]
    table["_q"] = table["question_id"].map(question_rank.get).fillna(len(question_rank))
    table = table.sort_values(["_c", "_q", "question_id"], kind="stable")
    table = table.drop(columns=["_c", "_q"]).reset_index(drop=True)
    table["layer"] = table["layer"].astype("int64")
    table["head"] = table["head"].astype("int64")
    table["n_tokens"] = table["n_tokens"].astype("int64")
    table["correct"] = table["correct"].astype(bool)
    if "diverged_at" in table.columns:  # (absent from tables written before it existed)
        table["diverged_at"] = table["diverged_at"].astype("Int64")
    for column in table.columns:  # text columns: one dtype whichever batches the rows came from
        if table[column].dtype == object:
            table[column] = table[column].infer_objects()
    return table
