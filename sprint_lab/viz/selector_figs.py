"""Figures of a trained SPRINT selector: its training curves, preferences and embedding space.

The selector scores each (question, head) pair by a dot product of a projected question
embedding with a learned head embedding. Three views show what it learned:

* :func:`selector_history` -- loss (top) and top-1 hit rate (bottom) per epoch, train and
  validation, to spot over-fitting and pick the early-stopping epoch.
* :func:`question_head_preferences` -- the questions x heads score matrix, columns ordered by
  mean score and rows grouped by their best head, so blocks show which heads the selector
  prefers for which questions.
* :func:`embedding_map` -- question and head vectors projected together by PCA (numpy SVD on
  their union, so both share one coordinate system), questions coloured by level or subject.

Example:
    >>> import pandas as pd
    >>> hist = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.7]})
    >>> [t.name for t in selector_history(hist).data]
    ['train loss']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sprint_lab.viz.frames import group_title, require_columns, to_numpy, truncate_label
from sprint_lab.viz.style import OKABE_ITO, apply_style

__all__ = ["embedding_map", "question_head_preferences", "selector_history"]


def selector_history(selector: Any, *, title: str | None = None) -> go.Figure:
    """Selector training curves: losses (top panel) and top-1 hit rates (bottom panel).

    Args:
        selector: An object with a ``.history`` DataFrame, or that DataFrame itself, with
            ``epoch`` and any of ``train_loss``, ``val_loss``, ``val_top1_hit``,
            ``train_top1_hit`` (hit rates are fractions).
        title: Figure title; defaults to ``"Selector training"``.

    Returns:
        A two-row figure sharing the epoch axis.

    Raises:
        ValueError: Empty history or no ``epoch`` column.

    Example:
        >>> import pandas as pd
        >>> hist = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8],
        ...                      "val_loss": [1.1, 0.9], "val_top1_hit": [0.2, 0.3]})
        >>> [t.name for t in selector_history(hist).data]
        ['train loss', 'val loss', 'val top-1 hit']
    """
    history = selector if isinstance(selector, pd.DataFrame) else selector.history
    require_columns(history, ["epoch"], "selector history")
    if history.empty:
        raise ValueError("selector history is empty (train the selector first)")
    history = history.sort_values("epoch")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    curves = [
        ("train_loss", "train loss", 1, OKABE_ITO[0], "circle"),
        ("val_loss", "val loss", 1, OKABE_ITO[1], "circle"),
        ("train_top1_hit", "train top-1 hit", 2, OKABE_ITO[0], "square"),
        ("val_top1_hit", "val top-1 hit", 2, OKABE_ITO[1], "square"),
    ]
    for column, name, row, color, symbol in curves:
        if column in history.columns and history[column].notna().any():
            fig.add_trace(
                go.Scatter(
                    x=history["epoch"],
                    y=history[column],
                    mode="lines+markers",
                    name=name,
                    legend="legend" if row == 1 else "legend2",
                    line={"color": color, "width": 2.5},
                    marker={"size": 7, "symbol": symbol},
                ),
                row=row,
                col=1,
            )
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="top-1 hit rate", tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    top_of_row2 = fig.layout.yaxis2.domain[1]
    fig.update_layout(
        title_text=title or "Selector training",
        height=620,
        legend={"y": 1.0, "yanchor": "top"},
        legend2={"y": top_of_row2, "yanchor": "top", "font": {"size": 13}},
    )
    return apply_style(fig)


def _order_preferences(
    scores: np.ndarray, top: int | None, sort_by: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index orders for :func:`question_head_preferences`."""
    n_rows, n_cols = scores.shape
    if sort_by not in (None, "best", "max"):
        raise ValueError(f"sort_by must be 'best', 'max' or None, got {sort_by!r}")
    by_mean = np.argsort(-np.nanmean(scores, axis=0), kind="stable")
    keep = by_mean if top is None else by_mean[:top]
    cols = keep if sort_by is not None else np.sort(keep)
    sub = scores[:, cols]
    best_val = np.nanmax(sub, axis=1)
    if sort_by == "best":
        rows = np.lexsort((-best_val, np.nanargmax(sub, axis=1)))
    elif sort_by == "max":
        rows = np.argsort(-best_val, kind="stable")
    else:
        rows = np.arange(n_rows)
    return rows, cols


def question_head_preferences(
    selector: Any,
    problems: Sequence[Any],
    *,
    top: int | None = None,
    sort_by: str | None = "best",
    max_chars: int = 80,
    title: str | None = None,
) -> go.Figure:
    """Heatmap of selector scores, questions (rows) x heads (columns).

    Sorting (``sort_by``): ``"best"`` orders columns by mean score (descending) and groups
    rows by their best head in that column order, best score first -- the block structure
    shows which heads the selector prefers for which questions; ``"max"`` orders columns the
    same way and rows by their best score; ``None`` keeps the input order.

    Args:
        selector: Object with ``.scores(problems)`` ([n_questions, n_heads] Tensor/array) and
            ``.heads`` (objects with ``.label``).
        problems: Problems with ``.id`` and ``.question`` (``.level``/``.subject`` optional).
        top: Keep only the ``top`` heads with the highest mean score.
        sort_by: ``"best"``, ``"max"`` or ``None`` (see above).
        max_chars: Hover question text is truncated to this many characters.
        title: Figure title; defaults to ``"Selector head preferences"``.

    Returns:
        A figure with one ``go.Heatmap`` whose hover shows the (truncated) question.

    Raises:
        ValueError: Score matrix shape does not match problems x heads, or bad ``sort_by``.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> import numpy as np
        >>> sel = NS(heads=[NS(label="L0H0"), NS(label="L0H1")],
        ...          scores=lambda ps: np.array([[0.1, 0.9], [0.8, 0.2]]))
        >>> probs = [NS(id="q1", question="1+1?"), NS(id="q2", question="2+2?")]
        >>> list(question_head_preferences(sel, probs).data[0].x)
        ['L0H1', 'L0H0']
    """
    scores = to_numpy(selector.scores(problems))
    labels = [str(h.label) for h in selector.heads]
    if scores.shape != (len(problems), len(labels)):
        raise ValueError(
            f"scores have shape {scores.shape}, expected ({len(problems)}, {len(labels)})"
        )
    rows, cols = _order_preferences(scores, top, sort_by)
    ids = [str(problems[i].id) for i in rows]
    texts = [truncate_label(getattr(problems[i], "question", ""), max_chars) for i in rows]
    custom = [[text] * len(cols) for text in texts]
    fig = go.Figure(
        go.Heatmap(
            z=scores[np.ix_(rows, cols)],
            x=[labels[j] for j in cols],
            y=ids,
            customdata=custom,
            colorscale="Viridis",
            colorbar={"title": {"text": "score", "side": "right"}},
            hovertemplate="<b>%{y}</b> · %{x}<br>score %{z:.3f}<br>%{customdata}<extra></extra>",
        )
    )
    many = len(ids) > 60
    fig.update_yaxes(
        type="category",
        autorange="reversed",
        title_text="question",
        showticklabels=not many,
        showgrid=False,
    )
    fig.update_xaxes(type="category", title_text="head", tickangle=-45, showgrid=False)
    fig.update_layout(
        title_text=title or "Selector head preferences",
        height=int(min(1400, max(420, 16 * len(ids) + 220))),
    )
    return apply_style(fig)


def _pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of ``x`` onto their first two principal components (numpy SVD).

    Returns:
        (coords [n, 2], explained variance ratio [2]); missing components are zero.
    """
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = centred @ vt[:k].T
    var = s**2
    ratio = np.zeros(2)
    if var.sum() > 0:
        ratio[:k] = var[:k] / var.sum()
    return coords, ratio


def _question_groups(problems: Sequence[Any], color_by: str | None) -> tuple[str | None, list]:
    """Pick the attribute to colour questions by and return (attribute, values)."""
    candidates = ("level", "subject") if color_by == "auto" else (color_by,) if color_by else ()
    for attr in candidates:
        values = [getattr(p, attr, None) for p in problems]
        if any(v is not None for v in values):
            return attr, ["unknown" if v is None else v for v in values]
    return None, [None] * len(problems)


def _heads_trace(coords: np.ndarray, labels: list[str]) -> go.Scatter:
    """Head embeddings as labelled diamonds (text labels only up to 60 heads)."""
    return go.Scatter(
        x=coords[:, 0],
        y=coords[:, 1],
        mode="markers+text" if len(labels) <= 60 else "markers",
        name="heads",
        text=labels,
        textposition="top center",
        textfont={"size": 12},
        marker={
            "symbol": "diamond",
            "size": 11,
            "color": "#222222",
            "line": {"color": "white", "width": 1},
        },
        hovertemplate="head %{text}<extra></extra>",
    )


def embedding_map(
    selector: Any,
    problems: Sequence[Any],
    *,
    method: str = "pca",
    color_by: str | None = "auto",
    max_chars: int = 80,
    title: str | None = None,
) -> go.Figure:
    """2-D map of the selector's question embeddings and head embeddings.

    The projection is PCA (numpy SVD) fitted on the union of question and head vectors, so
    both live in the same coordinates. Questions are coloured by ``level`` (else ``subject``)
    when available; heads are diamond markers labelled with their ``label`` (text labels are
    shown for up to 60 heads, hover always).

    Args:
        selector: Object with ``.question_vectors(problems)`` ([n_q, dim]), ``.head_vectors``
            ([n_heads, dim]) and ``.heads`` (objects with ``.label``).
        problems: Problems with ``.id``, ``.question`` and optionally ``.level``/``.subject``.
        method: Only ``"pca"`` is supported.
        color_by: ``"auto"``, ``"level"``, ``"subject"`` or ``None`` (single colour).
        max_chars: Hover question text is truncated to this many characters.
        title: Figure title; defaults to ``"Question and head embeddings (PCA)"``.

    Returns:
        A figure with one scatter trace per question group plus one ``heads`` trace.

    Raises:
        ValueError: Unknown ``method`` or mismatched dimensions.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> import numpy as np
        >>> sel = NS(heads=[NS(label="L0H0")], head_vectors=np.ones((1, 3)),
        ...          question_vectors=lambda ps: np.eye(3)[: len(ps)])
        >>> probs = [NS(id=1, question="a", level=1), NS(id=2, question="b", level=2)]
        >>> [t.name for t in embedding_map(sel, probs).data]
        ['Level 1', 'Level 2', 'heads']
    """
    if method != "pca":
        raise ValueError(f"method must be 'pca', got {method!r}")
    q = to_numpy(selector.question_vectors(problems))
    h = to_numpy(selector.head_vectors)
    if q.ndim != 2 or h.ndim != 2 or q.shape[1] != h.shape[1] or len(q) != len(problems):
        raise ValueError(f"incompatible vectors: questions {q.shape}, heads {h.shape}")
    coords, ratio = _pca_2d(np.vstack([q, h]))
    qc, hc = coords[: len(q)], coords[len(q) :]
    attr, groups = _question_groups(problems, color_by)
    fig = go.Figure()
    for k, group in enumerate(sorted(set(groups), key=str)):
        idx = [i for i, g in enumerate(groups) if g == group]
        name = "questions" if attr is None else group_title(attr, group)
        fig.add_trace(
            go.Scatter(
                x=qc[idx, 0],
                y=qc[idx, 1],
                mode="markers",
                name=name,
                legendgroup="questions",
                marker={"size": 7, "opacity": 0.75, "color": OKABE_ITO[k % len(OKABE_ITO)]},
                customdata=[
                    [str(problems[i].id), truncate_label(problems[i].question, max_chars)]
                    for i in idx
                ],
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>%{fullData.name}"
                "</extra>",
            )
        )
    fig.add_trace(_heads_trace(hc, [str(head.label) for head in selector.heads]))
    fig.update_xaxes(title_text=f"PC1 ({ratio[0]:.0%} var.)")
    fig.update_yaxes(title_text=f"PC2 ({ratio[1]:.0%} var.)")
    fig.update_layout(title_text=title or "Question and head embeddings (PCA)", height=620)
    return apply_style(fig)
