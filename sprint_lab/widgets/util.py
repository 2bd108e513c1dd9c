"""Pure helpers behind the notebook widgets: parsing, per-head outcome tables, word diffs.

Nothing here imports ipywidgets, so every function is usable (and tested) without a kernel:

* :func:`parse_indices` -- ``"0,5,10"`` / ``"0-3"`` / ``"all"`` to a list of ints.
* :func:`planned_deltas` -- a sweep's per-head deltas with a row for *every* planned head (NaN
  where nothing is computed yet), so a live heat map keeps its shape while batches arrive.
* :func:`head_outcomes` -- one row per question: baseline vs pruned correctness and answers.
* :func:`word_diff` / :func:`diff_sides` / :func:`word_diff_html` -- a word-level
  :mod:`difflib` comparison of two completions, rendered as HTML with ``<del>``/``<ins>``.
* :func:`frame_html` -- an escaped HTML table for an ``ipywidgets.HTML`` value.
* :func:`pick_problems` -- a seeded, level-stratified subset, optionally of the easier levels
  only (the notebooks' smoke runs use it so a tiny model gets some questions right).

Example:
    >>> parse_indices("0, 5-7")
    [0, 5, 6, 7]
    >>> [op for op, _, _ in word_diff("the answer is 4", "the answer is 5")]
    ['equal', 'replace']
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sprint_lab.core.heads import Head
from sprint_lab.sweeps.result import BASELINE, DELTA_COLUMNS
from sprint_lab.tasks.problems import Problem, load_problems, stratified_subset

__all__ = [
    "DEL_STYLE",
    "INS_STYLE",
    "OUTCOME_COLUMNS",
    "PRE_STYLE",
    "columns_html",
    "diff_sides",
    "frame_html",
    "head_outcomes",
    "parse_indices",
    "pick_problems",
    "planned_deltas",
    "word_diff",
    "word_diff_html",
]

OUTCOME_COLUMNS = [
    "question_id", "question", "gold", "baseline_correct", "pruned_correct", "baseline_extracted",
    "pruned_extracted", "changed",
]  # fmt: skip
"""Columns of :func:`head_outcomes`."""

DEL_STYLE = "background:#ffd7d5;color:#82071e;text-decoration:line-through"
"""Inline style of removed words (inline styles survive JupyterLab's HTML sanitizer)."""
INS_STYLE = "background:#ccffd8;color:#055d20;text-decoration:none"
"""Inline style of added words."""
PRE_STYLE = (
    "white-space:pre-wrap;word-break:break-word;margin:0;padding:6px;border:1px solid #ddd;"
    "border-radius:4px;background:#fafafa;font-family:monospace;font-size:13px"
)
"""Inline style of one completion's box."""

_TOKEN = re.compile(r"\s+|[^\s]+")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_indices(text: str | Iterable[int] | None) -> list[int] | None:
    """Read layer or head indices: ``"0,5,10"``, ``"0-3"``, ``"2 4"``; ``"all"``/empty -> None.

    Args:
        text: the text typed in a widget, or already a list of ints.

    Returns:
        The indices in the given order (duplicates removed), or ``None`` for "all".

    Raises:
        ValueError: for anything that is not a non-negative integer or an ``a-b`` range.

    Example:
        >>> parse_indices("0,5,10"), parse_indices("all"), parse_indices([3, 1])
        ([0, 5, 10], None, [3, 1])
    """
    if text is None:
        return None
    if not isinstance(text, str):
        return list(dict.fromkeys(int(i) for i in text))
    cleaned = text.strip().lower()
    if cleaned in ("", "all", "*"):
        return None
    out: list[int] = []
    for part in re.split(r"[,\s;]+", cleaned.strip(",; ")):
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f"empty range {part!r}: write low-high, e.g. 0-3")
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"cannot read {part!r} as an index; use e.g. '0,5,10', '0-3' or 'all'")
    return list(dict.fromkeys(out))


def planned_deltas(result: Any, heads: Sequence[Head | str], **deltas_kwargs: Any) -> pd.DataFrame:
    """Per-head deltas with one row per planned head, NaN where the sweep has no rows yet.

    A partial sweep (a run in progress, or one cancelled) covers some heads on some questions;
    its deltas are computed on the questions done so far (``n`` says how many). Heads that have
    no rows, or a sweep whose baseline has not started, keep their row with NaN values so a
    heat map drawn from this table always has the full layers x heads grid.

    Args:
        result: a :class:`~sprint_lab.sweeps.result.SweepResult` (possibly partial) or ``None``.
        heads: every head the sweep will cover.
        **deltas_kwargs: passed to :meth:`SweepResult.deltas` (e.g. ``n_boot``).

    Returns:
        A DataFrame with the columns of ``SweepResult.deltas()``, in ``heads`` order.

    Example:
        >>> planned_deltas(None, ["L0H1", "L2H0"])[["config", "layer", "head", "n"]].to_dict("list")
        {'config': ['L0H1', 'L2H0'], 'layer': [0, 2], 'head': [1, 0], 'n': [0, 0]}
    """
    heads = [Head.parse(h) for h in heads]
    plan = pd.DataFrame(
        {
            "config": [h.label for h in heads],
            "layer": [h.layer for h in heads],
            "head": [h.head for h in heads],
        }
    )
    table = getattr(result, "table", None)
    deltas = pd.DataFrame(columns=DELTA_COLUMNS)
    if table is not None and len(table) and (table["config"] == BASELINE).any():
        deltas = result.deltas(**deltas_kwargs)
    values = deltas.drop(columns=["layer", "head"]).set_index("config")
    merged = plan.join(values, on="config")
    merged["n"] = merged["n"].fillna(0).astype(int)
    for column in DELTA_COLUMNS:
        if column not in ("config", "layer", "head", "n"):
            merged[column] = merged[column].astype(float)
    return merged[DELTA_COLUMNS].reset_index(drop=True)


def head_outcomes(
    result: Any, head: Head | str, problems: Sequence[Any] | None = None
) -> pd.DataFrame:
    """One row per question: did the unpruned and the pruned model get it right, and what did
    each answer?

    Args:
        result: a :class:`~sprint_lab.sweeps.result.SweepResult` (or its tidy table).
        head: the pruned head (``Head`` or ``"L3H5"``).
        problems: optional problems (``.id``, ``.question``, ``.answer``) for the question text
            and gold answer.

    Returns:
        Columns :data:`OUTCOME_COLUMNS`; ``changed`` is True where correctness differs. Questions
        follow the sweep's order; a question missing one side has NaN there.

    Raises:
        ValueError: when the sweep has no rows for ``head``.

    Example:
        >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
        ...                   "correct": [True, False], "extracted": ["4", "5"]})
        >>> out = head_outcomes(t, "L0H1")
        >>> out[["baseline_correct", "pruned_correct", "changed"]].values.tolist()
        [[True, False, True]]
    """
    table = getattr(result, "table", result)
    label = Head.parse(head).label
    pruned = table[table["config"] == label]
    if pruned.empty:
        raise ValueError(f"the sweep has no rows for {label}")
    base = table[table["config"] == BASELINE].set_index("question_id")
    by_id = {str(p.id): p for p in problems or ()}
    rows = []
    for _, row in pruned.iterrows():
        qid = row["question_id"]
        has_base = qid in base.index
        problem = by_id.get(str(qid))
        base_ok = bool(base.at[qid, "correct"]) if has_base else np.nan
        rows.append(
            {
                "question_id": qid,
                "question": getattr(problem, "question", None),
                "gold": getattr(problem, "answer", None),
                "baseline_correct": base_ok,
                "pruned_correct": bool(row["correct"]),
                "baseline_extracted": base.at[qid, "extracted"] if has_base else None,
                "pruned_extracted": row.get("extracted"),
                "changed": has_base and base_ok != bool(row["correct"]),
            }
        )
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def word_diff(old: str, new: str) -> list[tuple[str, str, str]]:
    """Word-level diff of two texts (whitespace kept as its own tokens).

    Returns:
        ``(op, old_part, new_part)`` triples with ``op`` in ``"equal"``, ``"delete"``,
        ``"insert"``, ``"replace"``; joining the old parts gives ``old`` back, and the new
        parts give ``new``.

    Example:
        >>> word_diff("2 + 2 = 4", "2 + 2 = 5")[-1]
        ('replace', '4', '5')
    """
    a, b = _tokens(old), _tokens(new)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [
        (op, "".join(a[i1:i2]), "".join(b[j1:j2])) for op, i1, i2, j1, j2 in matcher.get_opcodes()
    ]


def diff_sides(old: str, new: str) -> tuple[str, str]:
    """HTML for both sides of a word diff: removed words in ``<del>``, added ones in ``<ins>``.

    Example:
        >>> left, right = diff_sides("is 4", "is 5")
        >>> left.endswith(">4</del>"), right.startswith("is <ins ")
        (True, True)
    """
    left, right = [], []
    for op, a, b in word_diff(old, new):
        if op == "equal":
            left.append(html.escape(a))
            right.append(html.escape(b))
            continue
        if a:
            left.append(f'<del style="{DEL_STYLE}">{html.escape(a)}</del>')
        if b:
            right.append(f'<ins style="{INS_STYLE}">{html.escape(b)}</ins>')
    return "".join(left), "".join(right)


def columns_html(columns: Sequence[tuple[str, str]], *, per_row: int = 4) -> str:
    """Texts side by side: each column is ``(header_html, body_html)``, the body in a box.

    Args:
        columns: the columns, left to right; bodies are shown as preformatted text (escape
            them first, or pass the output of :func:`diff_sides`).
        per_row: at most this many columns per row (more wrap to the next row).

    Example:
        >>> "grid-template-columns:repeat(2, 1fr)" in columns_html([("a", "x"), ("b", "y")])
        True
    """
    n = max(1, min(len(columns), per_row))
    cells = "".join(
        f'<div style="min-width:0">{header}<pre style="{PRE_STYLE}">{body}</pre></div>'
        for header, body in columns
    )
    return (
        f'<div class="sl-diff" style="display:grid;grid-template-columns:repeat({n}, 1fr);'
        f'gap:8px;font-size:13px">{cells}</div>'
    )


def word_diff_html(old: str, new: str, *, labels: tuple[str, str] = ("unpruned", "pruned")) -> str:
    """Two completions side by side with their word-level differences highlighted.

    Args:
        old: the reference text (left column, removed words struck through in red).
        new: the compared text (right column, added words in green).
        labels: the two column headings.

    Example:
        >>> ">5</ins>" in word_diff_html("is 4", "is 5")
        True
    """
    left, right = diff_sides(old, new)
    head = '<div style="font-weight:bold;margin:2px 0 4px 0">{}</div>'
    return columns_html(
        [(head.format(html.escape(labels[0])), left), (head.format(html.escape(labels[1])), right)]
    )


def frame_html(frame: pd.DataFrame, *, max_rows: int = 50, float_format: str = "{:.3f}") -> str:
    """An escaped, compact HTML table of ``frame`` (booleans as ✓/✗) for an ``HTML`` widget.

    Example:
        >>> "✓" in frame_html(pd.DataFrame({"ok": [True]}))
        True
    """
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if shown[column].dtype == bool or shown[column].map(type).eq(bool).all():
            shown[column] = shown[column].map({True: "✓", False: "✗"}).fillna("")
    table = shown.to_html(
        index=False,
        escape=True,
        na_rep="",
        border=0,
        float_format=float_format.format,
        classes="sl-table",
    )
    style = (
        "<style>.sl-table{border-collapse:collapse;font-size:13px}"
        ".sl-table th,.sl-table td{padding:2px 8px;border-bottom:1px solid #e5e5e5;"
        "text-align:left;vertical-align:top;max-width:480px}</style>"
    )
    more = f"<div><i>{len(frame) - max_rows} more rows</i></div>" if len(frame) > max_rows else ""
    return style + table + more


def pick_problems(
    dataset: str,
    split: str = "test",
    n: int | None = None,
    *,
    max_level: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> list[Problem]:
    """A seeded subset of a dataset split, stratified by level, optionally easy levels only.

    Args:
        dataset: a name for :func:`~sprint_lab.tasks.problems.load_problems` (``"arith"``, ...).
        split: ``"train"`` or ``"test"``.
        n: how many problems (``None``: all that pass the level filter).
        max_level: keep only problems with ``level <= max_level`` (problems without a level
            are kept); ``None`` keeps every level.
        seed: seed of the subset draw.
        data_dir: folder with local benchmark files.

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
