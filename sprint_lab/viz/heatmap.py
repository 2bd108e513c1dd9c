"""The per-head heat map: how much accuracy moves when one attention head is zeroed.

A single-head sweep gives one accuracy delta per (layer, head) with a paired bootstrap CI and a
Benjamini-Hochberg q-value. :func:`heatmap` lays those out as a layers x heads grid (layer 0 on
top, cells never swept left blank), colours ``delta`` on a diverging RdBu scale centred on zero
with a symmetric range (other metrics on Viridis), stars the cells whose q-value passes
``alpha``, and shows accuracy, baseline, CI, p, q and n on hover. With ``by="level"`` (or
``"subject"``) it draws one facet per group, all sharing one colour scale so facets compare.

Example:
    >>> import pandas as pd
    >>> deltas = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "delta": [0.1, -0.2, 0.0],
    ...                        "q_value": [0.01, 0.5, 1.0]})
    >>> fig = heatmap(deltas)
    >>> [t.type for t in fig.data], list(fig.data[0].y)
    (['heatmap'], ['L0', 'L1'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.frames import (
    check_unique,
    grid_shape,
    group_title,
    require_columns,
)
from sprint_lab.viz.style import METRIC_LABELS, apply_style

__all__ = ["heatmap"]

_GROUP_HINT = " (per-group tables need by='level' or by='subject')"

_HOVER_FIELDS: tuple[str, ...] = (
    "accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "n",
)
_HEATMAP_HOVER = (
    "<b>%{y} %{x}</b><br>"
    "accuracy %{customdata[0]:.3f} (baseline %{customdata[1]:.3f})<br>"
    "Δ %{customdata[2]:+.3f}, 95% CI [%{customdata[3]:+.3f}, %{customdata[4]:+.3f}]<br>"
    "p = %{customdata[5]:.3g}, q = %{customdata[6]:.3g}<br>"
    "n = %{customdata[7]:d}"
    "<extra>%{fullData.name}</extra>"
)


def _pivot(df: pd.DataFrame, column: str, layers: list[int], heads: list[int]) -> np.ndarray:
    """Return a float [layers, heads] grid of ``column`` with NaN for missing cells."""
    if column not in df.columns:
        return np.full((len(layers), len(heads)), np.nan)
    grid = df.pivot(index="layer", columns="head", values=column)
    grid = grid.reindex(index=layers, columns=heads)
    return grid.to_numpy(dtype=float, na_value=np.nan)


def _color_range(values: np.ndarray, diverging: bool, metric: str) -> dict[str, Any]:
    """Colour-scale settings shared by all facets."""
    finite = values[np.isfinite(values)]
    if diverging:
        bound = float(np.abs(finite).max()) if finite.size else 0.0
        bound = bound if bound > 0 else 1e-6
        return {"colorscale": "RdBu", "zmid": 0.0, "zmin": -bound, "zmax": bound}
    if "accuracy" in metric:
        return {"colorscale": "Viridis", "zmin": 0.0, "zmax": 1.0}
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return {"colorscale": "Viridis", "zmin": lo, "zmax": hi if hi > lo else lo + 1e-6}


def _heatmap_trace(
    df: pd.DataFrame,
    metric: str,
    layers: list[int],
    heads: list[int],
    alpha: float,
    name: str,
    colors: dict[str, Any],
    showscale: bool,
) -> go.Heatmap:
    z = _pivot(df, metric, layers, heads)
    q = _pivot(df, "q_value", layers, heads)
    stars = np.where(np.isfinite(q) & (q <= alpha), "*", "")
    custom = np.dstack([_pivot(df, f, layers, heads) for f in _HOVER_FIELDS])
    return go.Heatmap(
        z=z,
        x=[f"H{h}" for h in heads],
        y=[f"L{layer}" for layer in layers],
        text=stars.tolist(),
        texttemplate="%{text}",
        textfont={"size": 16},
        customdata=custom.tolist(),
        hovertemplate=_HEATMAP_HOVER,
        hoverongaps=False,
        xgap=1,
        ygap=1,
        name=name,
        showscale=showscale,
        colorbar={"title": {"text": METRIC_LABELS.get(metric, metric), "side": "right"}},
        **colors,
    )


def heatmap(
    result: Any,
    metric: str = "delta",
    *,
    by: str | None = None,
    alpha: float = 0.05,
    title: str | None = None,
) -> go.Figure:
    """Layers x heads heatmap of a per-head pruning metric.

    Rows are the swept layers in increasing order (categorical axis labelled ``L{layer}``,
    layer 0 on top), columns the heads (``H{head}``); cells never swept stay blank. ``delta``
    (and any column containing "delta") uses a diverging RdBu scale centred on zero with a
    symmetric range; other metrics a sequential Viridis scale ([0, 1] for accuracies). Cells
    with ``q_value <= alpha`` carry a ``*``. Hover shows accuracy, baseline, delta, its CI,
    p, q and n. With ``by`` the figure has one subplot per group sharing one colour scale.

    Args:
        result: A deltas DataFrame (``layer``, ``head``, ``metric`` column, optionally
            ``accuracy``, ``baseline_accuracy``, ``ci_low``, ``ci_high``, ``p_value``,
            ``q_value``, ``n``) or an object with ``.deltas(by=...)`` (a SweepResult).
        metric: Column to colour by, e.g. ``"delta"`` or ``"accuracy"``.
        by: ``None``, ``"level"`` or ``"subject"`` to facet by that column.
        alpha: Significance threshold on the Benjamini-Hochberg ``q_value``.
        title: Figure title; a sensible default otherwise.

    Returns:
        The figure (one ``go.Heatmap`` trace per facet).

    Raises:
        ValueError: Missing columns or duplicate (layer, head) rows within a facet.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"layer": [0, 2], "head": [1, 1], "delta": [0.05, -0.1],
        ...                    "q_value": [0.01, 0.2]})
        >>> fig = heatmap(df)
        >>> list(fig.data[0].y), [list(row) for row in fig.data[0].text]
        (['L0', 'L2'], [['*'], ['']])
    """
    df = SweepResult.deltas_of(result, by)
    keys = ["layer", "head"] + ([by] if by else [])
    require_columns(df, keys + [metric], "deltas table")
    check_unique(df, keys, "deltas table", _GROUP_HINT if by is None else "")
    df = df.astype({"layer": int, "head": int})
    layers = sorted(df["layer"].unique().tolist())
    heads = sorted(df["head"].unique().tolist())
    diverging = "delta" in metric
    colors = _color_range(df[metric].to_numpy(dtype=float), diverging, metric)
    default = (
        "Accuracy change when pruning one head"
        if diverging
        else (f"{METRIC_LABELS.get(metric, metric).capitalize()} with one head pruned")
    )
    groups = [(None, df)] if by is None else list(df.groupby(by, sort=True))
    rows, cols = grid_shape(len(groups))
    titles = [_facet_title(by, g, sub) for g, sub in groups] if by else None
    height = max(360, rows * (28 * len(layers) + 110) + 130)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        shared_yaxes=True,
        horizontal_spacing=0.03,
        vertical_spacing=min(0.3, 90 / height) if rows > 1 else 0.0,
    )
    for i, (group, sub) in enumerate(groups):
        name = metric if group is None else group_title(by or "", group)
        trace = _heatmap_trace(sub, metric, layers, heads, alpha, name, colors, showscale=i == 0)
        fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    _grid_axes(fig, layers, heads, rows)
    fig.update_layout(
        title={
            "text": title or default + (f" by {by}" if by else ""),
            "subtitle": {"text": f"* Benjamini-Hochberg q ≤ {alpha:g}"},
        },
        height=height,
        margin={"t": 125} if by else None,  # room for title, subtitle and facet titles
        plot_bgcolor="white",
    )
    return apply_style(fig)


def _grid_axes(fig: go.Figure, layers: list[int], heads: list[int], rows: int) -> None:
    """Categorical axes in sweep order on every facet: layers top-down, heads left-right."""
    fig.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=[f"L{layer}" for layer in layers],
        autorange="reversed",
        showgrid=False,
    )
    fig.update_xaxes(
        type="category",
        categoryorder="array",
        categoryarray=[f"H{h}" for h in heads],
        showgrid=False,
        tickangle=0,
    )
    fig.update_xaxes(title_text="head", row=rows)
    fig.update_yaxes(title_text="layer", col=1)


def _facet_title(by: str, group: Any, sub: pd.DataFrame) -> str:
    label = group_title(by, group)
    if "n" in sub.columns and sub["n"].notna().any():
        label += f" (n={int(sub['n'].max())})"
    return label
