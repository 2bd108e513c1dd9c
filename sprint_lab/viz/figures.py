"""Publication-ready plotly figures for single-head pruning studies (SPRINT).

Every builder returns a :class:`plotly.graph_objects.Figure` styled with :data:`TEMPLATE`
(see :func:`apply_style`) and never mutates its inputs:

* :func:`heatmap` -- per-head accuracy change on a layers x heads grid, with BH-significant
  cells starred and optional facets by level or subject.
* :func:`pass_at_n_curves` -- pass@N / majority@N per strategy versus N.
* :func:`selector_history` -- selector training curves (loss and top-1 hit rate).
* :func:`question_head_preferences` -- the selector's questions x heads score matrix.
* :func:`embedding_map` -- 2-D PCA map of question and head embeddings.
* :func:`importance_vs_delta` -- a cheap importance proxy against measured deltas.
* :func:`save_figure` -- PNG/SVG/PDF (kaleido 1.x + Chromium) and HTML export.

Example:
    >>> import pandas as pd
    >>> from sprint_lab import plots
    >>> deltas = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "delta": [0.1, -0.2, 0.0],
    ...                        "q_value": [0.01, 0.5, 1.0]})
    >>> fig = plots.heatmap(deltas)
    >>> [t.type for t in fig.data]
    ['heatmap']
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from sprint_lab.viz.browser import INSTALL_HINT, require_browser

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_SCALE",
    "DEFAULT_WIDTH",
    "OKABE_ITO",
    "STRATEGY_COLORS",
    "SUPPORTED_SUFFIXES",
    "TEMPLATE",
    "apply_style",
    "embedding_map",
    "heatmap",
    "importance_vs_delta",
    "pass_at_n_curves",
    "question_head_preferences",
    "save_figure",
    "selector_history",
]

# --------------------------------------------------------------------------- style

DEFAULT_WIDTH = 900
"""Default export width in layout pixels (used when neither the call nor the figure sets one)."""
DEFAULT_HEIGHT = 560
"""Default export height in layout pixels (used when neither the call nor the figure sets one)."""
DEFAULT_SCALE = 2.0
"""Default raster scale: a PNG is ``width * scale`` x ``height * scale`` physical pixels."""
SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf", ".html")
"""File suffixes understood by :func:`save_figure`."""

OKABE_ITO: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
"""Colour-blind-safe qualitative palette (Okabe & Ito) used as the template colorway."""

STRATEGY_COLORS: dict[str, str] = {
    "no_prune": "#4D4D4D",
    "sprint": "#D55E00",
    "random_heads": "#0072B2",
    "best_of_n": "#009E73",
    "oracle": "#CC79A7",
}
"""Fixed colour per comparison strategy so every figure agrees."""

STRATEGY_LABELS: dict[str, str] = {
    "no_prune": "no pruning",
    "sprint": "SPRINT",
    "random_heads": "random heads",
    "best_of_n": "best-of-N",
    "oracle": "oracle",
}
METRIC_LABELS: dict[str, str] = {
    "pass_at_n": "pass@N",
    "majority_at_n": "majority@N",
    "accuracy": "accuracy",
    "delta": "Δ accuracy",
    "baseline_accuracy": "baseline accuracy",
}

_FONT = "Arial, Helvetica, sans-serif"
_AXIS = {
    "automargin": True,
    "showline": True,
    "linecolor": "#333333",
    "linewidth": 1,
    "ticks": "outside",
    "tickcolor": "#333333",
    "tickfont": {"size": 13},
    "title": {"font": {"size": 15}, "standoff": 8},
    "gridcolor": "#E5E5E5",
    "zeroline": False,
}


def _build_template() -> go.layout.Template:
    template = go.layout.Template(pio.templates["plotly_white"])
    template.layout.update(
        font={"family": _FONT, "size": 14, "color": "#222222"},
        title={
            "font": {"size": 18},
            "x": 0.0,
            "xref": "paper",
            "xanchor": "left",
            "yref": "container",
            "y": 1.0,
            "yanchor": "top",
            "pad": {"t": 14},
            "automargin": True,
        },
        colorway=list(OKABE_ITO),
        margin={"l": 60, "r": 30, "t": 70, "b": 60},
        xaxis=_AXIS,
        yaxis=_AXIS,
        legend={"font": {"size": 13}, "bgcolor": "rgba(255,255,255,0.8)"},
        hoverlabel={"font": {"size": 13, "family": _FONT}},
        coloraxis={"colorbar": {"tickfont": {"size": 13}, "ticks": "outside"}},
        annotationdefaults={"font": {"size": 14}},
    )
    template.data.heatmap = [go.Heatmap(colorbar={"tickfont": {"size": 13}, "ticks": "outside"})]
    return template


TEMPLATE: go.layout.Template = _build_template()
"""The publication template (fonts >= 12 px, automargins, Okabe-Ito colorway).

It is also registered as ``plotly.io.templates["sprint_lab"]`` (not made the global default).
"""
pio.templates["sprint_lab"] = TEMPLATE


def apply_style(fig: go.Figure) -> go.Figure:
    """Apply :data:`TEMPLATE` to ``fig`` in place and return it.

    Args:
        fig: Any plotly figure.

    Returns:
        The same figure, for chaining.

    Example:
        >>> import plotly.graph_objects as go
        >>> fig = apply_style(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
        >>> fig.layout.template.layout.font.size
        14
    """
    fig.update_layout(template=TEMPLATE)
    return fig


# --------------------------------------------------------------------------- helpers


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; got {list(df.columns)}")


def _to_numpy(values: Any) -> np.ndarray:
    """Convert a torch Tensor, array or nested list to a float numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=float)


def _truncate(text: Any, max_chars: int) -> str:
    """Collapse whitespace, truncate with an ellipsis and HTML-escape for hover labels."""
    flat = " ".join(str(text).split())
    if len(flat) > max_chars:
        flat = flat[: max(max_chars - 1, 0)].rstrip() + "…"
    return html.escape(flat)


def _deltas_frame(result: Any, by: str | None) -> pd.DataFrame:
    """Return the deltas table from a DataFrame or an object with ``.deltas(by=...)``."""
    if isinstance(result, pd.DataFrame):
        df = result
    elif hasattr(result, "deltas"):
        df = result.deltas(by=by)
    else:
        raise TypeError("expected a deltas DataFrame or an object with a .deltas(by=...) method")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f".deltas() returned {type(df).__name__}, expected a DataFrame")
    return df


def _check_unique(df: pd.DataFrame, keys: list[str], what: str, hint: str = "") -> None:
    dup = df.duplicated(keys)
    if dup.any():
        example = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"{what} has several rows for {example}; one row per {tuple(keys)} is expected{hint}"
        )


_GROUP_HINT = " (per-group tables need by='level' or by='subject')"


def _group_title(by: str, value: Any) -> str:
    if by == "level" and isinstance(value, int | float | np.integer | np.floating):
        return f"Level {int(value)}"
    return str(value)


def _grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n_panels, max_cols)
    return math.ceil(n_panels / cols), cols


# --------------------------------------------------------------------------- heatmap

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
    df = _deltas_frame(result, by)
    keys = ["layer", "head"] + ([by] if by else [])
    _require_columns(df, keys + [metric], "deltas table")
    _check_unique(df, keys, "deltas table", _GROUP_HINT if by is None else "")
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
    rows, cols = _grid_shape(len(groups))
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
        name = metric if group is None else _group_title(by or "", group)
        trace = _heatmap_trace(sub, metric, layers, heads, alpha, name, colors, showscale=i == 0)
        fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    ylabels = [f"L{layer}" for layer in layers]
    fig.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=ylabels,
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


def _facet_title(by: str, group: Any, sub: pd.DataFrame) -> str:
    label = _group_title(by, group)
    if "n" in sub.columns and sub["n"].notna().any():
        label += f" (n={int(sub['n'].max())})"
    return label


# --------------------------------------------------------------------------- pass@N curves


def _strategy_order(strategies: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(strategies))
    known = [s for s in STRATEGY_COLORS if s in present]
    return known + [s for s in present if s not in STRATEGY_COLORS]


def _aggregate_comparison(data: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, n): mean value, std (given, or across repeated rows)."""
    has_std = "std" in data.columns

    def summarise(group: pd.DataFrame) -> pd.Series:
        values = group["value"].astype(float)
        if has_std and len(group) == 1:
            std = float(group["std"].iloc[0])
        else:
            std = float(values.std(ddof=1)) if len(group) > 1 else np.nan
        return pd.Series({"value": float(values.mean()), "std": std})

    rows = [
        {"strategy": s, "n": n, **summarise(g).to_dict()}
        for (s, n), g in data.groupby(["strategy", "n"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["strategy", "n", "value", "std"])


def _no_prune_level(comparison: pd.DataFrame, metric: str) -> float | None:
    rows = comparison[comparison["strategy"] == "no_prune"]
    for wanted in (metric, "accuracy"):
        chosen = rows[rows["metric"] == wanted]
        if not chosen.empty:
            return float(chosen["value"].astype(float).mean())
    return float(rows["value"].astype(float).mean()) if not rows.empty else None


def _band_trace(x: np.ndarray, y: np.ndarray, std: np.ndarray, strategy: str) -> go.Scatter:
    color = STRATEGY_COLORS.get(strategy, "#777777").lstrip("#")
    rgba = f"rgba({int(color[0:2], 16)},{int(color[2:4], 16)},{int(color[4:6], 16)},0.18)"
    return go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([y + std, (y - std)[::-1]]),
        fill="toself",
        fillcolor=rgba,
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=strategy,
        name=f"{STRATEGY_LABELS.get(strategy, strategy)} ± std",
    )


def pass_at_n_curves(
    comparison: pd.DataFrame,
    metric: str = "pass_at_n",
    *,
    title: str | None = None,
) -> go.Figure:
    """Plot a metric per strategy against the number of samples N (log2-spaced x axis).

    One line per strategy (fixed colours, see :data:`STRATEGY_COLORS`); ``oracle`` is dashed;
    strategies with a ``std`` (``random_heads`` across seeds) -- or with repeated rows per N --
    get error bars and a shaded ±1 std band; ``no_prune`` is a horizontal dotted reference line
    (its ``metric`` rows, else its ``accuracy`` rows). X ticks sit exactly at the Ns present.

    Args:
        comparison: Table with ``strategy``, ``n``, ``metric``, ``value`` (optionally ``std``).
        metric: Which metric rows to plot (``"pass_at_n"``, ``"majority_at_n"``, ...).
        title: Figure title; defaults to ``"<metric> vs N"``.

    Returns:
        The figure. Each trace's ``legendgroup`` is its strategy key.

    Raises:
        ValueError: Missing columns, no rows for ``metric``, or N <= 0.

    Example:
        >>> import pandas as pd
        >>> cmp = pd.DataFrame({"strategy": ["sprint", "sprint"], "n": [1, 4],
        ...                     "metric": "pass_at_n", "value": [0.5, 0.7]})
        >>> [t.legendgroup for t in pass_at_n_curves(cmp).data]
        ['sprint']
    """
    _require_columns(comparison, ["strategy", "n", "metric", "value"], "comparison table")
    data = comparison[(comparison["metric"] == metric) & (comparison["strategy"] != "no_prune")]
    if data.empty:
        raise ValueError(
            f"no rows with metric={metric!r}; available: {sorted(comparison['metric'].unique())}"
        )
    if (data["n"].astype(float) <= 0).any():
        raise ValueError("N must be positive for a log2 axis")
    agg = _aggregate_comparison(data)
    ns = sorted(agg["n"].unique().tolist())
    fig = go.Figure()
    level = _no_prune_level(comparison, metric)
    if level is not None:
        fig.add_trace(
            go.Scatter(
                x=[ns[0], ns[-1]],
                y=[level, level],
                mode="lines",
                name=STRATEGY_LABELS["no_prune"],
                legendgroup="no_prune",
                line={"color": STRATEGY_COLORS["no_prune"], "dash": "dot"},
                hovertemplate="no pruning: %{y:.1%}<extra></extra>",
            )
        )
    for strategy in _strategy_order(agg["strategy"]):
        rows = agg[agg["strategy"] == strategy].sort_values("n")
        x, y, std = (rows[c].to_numpy(dtype=float) for c in ("n", "value", "std"))
        has_std = bool(np.isfinite(std).any())
        if has_std:
            fig.add_trace(_band_trace(x, y, np.nan_to_num(std), strategy))
        label = STRATEGY_LABELS.get(strategy, strategy)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=label,
                legendgroup=strategy,
                line={
                    "color": STRATEGY_COLORS.get(strategy),
                    "dash": "dash" if strategy == "oracle" else "solid",
                    "width": 2.5,
                },
                marker={"size": 8},
                error_y={
                    "type": "data",
                    "array": np.nan_to_num(std),
                    "visible": has_std,
                    "thickness": 1.2,
                    "width": 4,
                    "color": STRATEGY_COLORS.get(strategy),
                },
                hovertemplate=f"{label}<br>N = %{{x}}<br>%{{y:.1%}}<extra></extra>",
            )
        )
    pad = 2**0.25
    fig.update_xaxes(
        type="log",
        tickvals=ns,
        ticktext=[str(int(n)) for n in ns],
        range=[math.log10(ns[0] / pad), math.log10(ns[-1] * pad)],
        title_text="N (samples per question)",
        minor={"showgrid": False},
    )
    label = METRIC_LABELS.get(metric, metric)
    fig.update_yaxes(title_text=label, tickformat=".0%")
    fig.update_layout(
        title_text=title or f"{label} vs N",
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0.0},
    )
    return apply_style(fig)


# --------------------------------------------------------------------------- selector


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
    _require_columns(history, ["epoch"], "selector history")
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
    scores = _to_numpy(selector.scores(problems))
    labels = [str(h.label) for h in selector.heads]
    if scores.shape != (len(problems), len(labels)):
        raise ValueError(
            f"scores have shape {scores.shape}, expected ({len(problems)}, {len(labels)})"
        )
    rows, cols = _order_preferences(scores, top, sort_by)
    ids = [str(problems[i].id) for i in rows]
    texts = [_truncate(getattr(problems[i], "question", ""), max_chars) for i in rows]
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
    q = _to_numpy(selector.question_vectors(problems))
    h = _to_numpy(selector.head_vectors)
    if q.ndim != 2 or h.ndim != 2 or q.shape[1] != h.shape[1] or len(q) != len(problems):
        raise ValueError(f"incompatible vectors: questions {q.shape}, heads {h.shape}")
    coords, ratio = _pca_2d(np.vstack([q, h]))
    qc, hc = coords[: len(q)], coords[len(q) :]
    attr, groups = _question_groups(problems, color_by)
    fig = go.Figure()
    for k, group in enumerate(sorted(set(groups), key=str)):
        idx = [i for i, g in enumerate(groups) if g == group]
        name = "questions" if attr is None else _group_title(attr, group)
        fig.add_trace(
            go.Scatter(
                x=qc[idx, 0],
                y=qc[idx, 1],
                mode="markers",
                name=name,
                legendgroup="questions",
                marker={"size": 7, "opacity": 0.75, "color": OKABE_ITO[k % len(OKABE_ITO)]},
                customdata=[
                    [str(problems[i].id), _truncate(problems[i].question, max_chars)] for i in idx
                ],
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>%{fullData.name}"
                "</extra>",
            )
        )
    labels = [str(head.label) for head in selector.heads]
    fig.add_trace(
        go.Scatter(
            x=hc[:, 0],
            y=hc[:, 1],
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
    )
    fig.update_xaxes(title_text=f"PC1 ({ratio[0]:.0%} var.)")
    fig.update_yaxes(title_text=f"PC2 ({ratio[1]:.0%} var.)")
    fig.update_layout(title_text=title or "Question and head embeddings (PCA)", height=620)
    return apply_style(fig)


# --------------------------------------------------------------------------- importance


def _importance_long(importance: pd.DataFrame) -> pd.DataFrame:
    """Normalise a wide [layer x head] or long (layer, head, score) table to long form."""
    if {"layer", "head", "score"} <= set(importance.columns):
        long = importance[["layer", "head", "score"]]
    else:
        wide = importance.copy()
        wide.columns = [int(str(c).lstrip("Hh")) for c in wide.columns]
        wide.index = [int(str(i).lstrip("Ll")) for i in wide.index]
        long = wide.rename_axis(index="layer", columns="head").stack().rename("score").reset_index()
    long = long.dropna(subset=["score"]).astype({"layer": int, "head": int, "score": float})
    _check_unique(long, ["layer", "head"], "importance table")
    return long


def _correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlations (NaN when undefined) with p-values."""
    from scipy import stats

    out = {
        "n": float(len(x)),
        "spearman": np.nan,
        "spearman_p": np.nan,
        "pearson": np.nan,
        "pearson_p": np.nan,
    }
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rho = stats.spearmanr(x, y)
    r = stats.pearsonr(x, y)
    out.update(
        spearman=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        pearson=float(r.statistic),
        pearson_p=float(r.pvalue),
    )
    return out


def _fmt_corr(value: float, p: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f} (p={p:.2g})"


def importance_vs_delta(
    importance: pd.DataFrame,
    deltas: Any,
    *,
    proxy_name: str = "importance proxy",
    metric: str = "delta",
    show_ci: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Scatter of a per-head importance proxy against the measured pruning effect.

    The title reports Spearman's rho and Pearson's r (scipy) with p-values and the number of
    heads matched; the values are also stored in ``fig.layout.meta`` (keys ``spearman``,
    ``pearson``, their ``*_p`` and ``n``). Points are coloured by layer; a dotted line marks
    zero effect; CI error bars are drawn when ``ci_low``/``ci_high`` exist.

    Args:
        importance: ``head_importance`` output (index = layer, columns = head) or a long table
            with ``layer``, ``head`` and ``score`` columns.
        deltas: Deltas DataFrame (``layer``, ``head``, ``metric``) or an object with
            ``.deltas(by=None)``.
        proxy_name: X-axis label naming the proxy (e.g. ``"attention entropy"``).
        metric: Deltas column on the y axis.
        show_ci: Draw the delta CI as error bars when available.
        title: Figure title; defaults to ``"<proxy_name> vs measured effect"``.

    Returns:
        The figure (one scatter trace plus a zero line).

    Raises:
        ValueError: Missing columns or no head present in both tables.

    Example:
        >>> import pandas as pd
        >>> imp = pd.DataFrame([[0.1, 0.5], [0.9, 0.3]], index=[0, 1], columns=[0, 1])
        >>> d = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        ...                   "delta": [0.0, -0.1, -0.3, -0.05]})
        >>> round(importance_vs_delta(imp, d).layout.meta["spearman"], 2)
        -1.0
    """
    long = _importance_long(importance)
    dframe = _deltas_frame(deltas, None)
    _require_columns(dframe, ["layer", "head", metric], "deltas table")
    _check_unique(dframe, ["layer", "head"], "deltas table", " (pass the by=None table)")
    merged = long.merge(dframe.astype({"layer": int, "head": int}), on=["layer", "head"])
    merged = merged.dropna(subset=["score", metric])
    if merged.empty:
        raise ValueError("no (layer, head) appears in both the importance and deltas tables")
    x, y = merged["score"].to_numpy(float), merged[metric].to_numpy(float)
    corr = _correlations(x, y)
    configs = [f"L{a}H{b}" for a, b in zip(merged["layer"], merged["head"], strict=True)]
    error_y = None
    if show_ci and {"ci_low", "ci_high"} <= set(merged.columns):
        error_y = {
            "type": "data",
            "symmetric": False,
            "array": merged["ci_high"] - y,
            "arrayminus": y - merged["ci_low"],
            "thickness": 0.8,
            "width": 0,
            "color": "rgba(80,80,80,0.45)",
        }
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            name="heads",
            text=configs,
            error_y=error_y,
            marker={
                "size": 9,
                "color": merged["layer"],
                "colorscale": "Cividis",
                "line": {"color": "white", "width": 0.5},
                "colorbar": {"title": {"text": "layer", "side": "right"}},
            },
            hovertemplate="%{text}<br>" + proxy_name + " %{x:.3g}<br>Δ %{y:+.3f}<extra></extra>",
        )
    )
    fig.add_hline(y=0, line={"color": "#888888", "dash": "dot", "width": 1})
    label = METRIC_LABELS.get(metric, metric)
    fig.update_xaxes(title_text=proxy_name)
    fig.update_yaxes(title_text=f"measured {label}")
    stats_line = (
        f"Spearman ρ = {_fmt_corr(corr['spearman'], corr['spearman_p'])}, "
        f"Pearson r = {_fmt_corr(corr['pearson'], corr['pearson_p'])}, "
        f"n = {int(corr['n'])} heads"
    )
    fig.update_layout(
        title={
            "text": title or f"{proxy_name} vs measured effect",
            "subtitle": {"text": stats_line},
        },
        meta=corr,
        height=560,
    )
    return apply_style(fig)


# --------------------------------------------------------------------------- export


def _export_size(fig: go.Figure, width: int | None, height: int | None) -> tuple[int, int]:
    w = width or fig.layout.width or DEFAULT_WIDTH
    h = height or fig.layout.height or DEFAULT_HEIGHT
    return int(w), int(h)


def _static_bytes(
    fig: go.Figure, fmt: str, width: int, height: int, scale: float, mathjax: bool
) -> bytes:
    """Render ``fig`` with kaleido 1.x using an explicitly located Chromium."""
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    executable = require_browser()
    kopts: dict[str, Any] = {"path": executable}
    if not mathjax:
        kopts["mathjax"] = False  # no CDN fetch: works offline
    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    server = getattr(kaleido, "_global_server", None)
    if server is not None and server.is_running():  # kaleido.start_sync_server() was called
        data = kaleido.calc_fig_sync(fig.to_dict(), opts=opts)
        return data.encode() if isinstance(data, str) else bytes(data)
    try:
        data = kaleido.calc_fig_sync(fig.to_dict(), opts=opts, kopts=kopts)
    except ChromeNotFoundError as err:
        raise RuntimeError(f"kaleido could not start {executable!r}. {INSTALL_HINT}") from err
    return data.encode() if isinstance(data, str) else bytes(data)


def save_figure(
    fig: go.Figure,
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = DEFAULT_SCALE,
    include_plotlyjs: bool | str = True,
    style: bool = True,
    mathjax: bool = False,
) -> Path:
    """Write a figure as PNG, SVG, PDF or HTML, chosen by the file suffix.

    Size: ``width``/``height`` in layout pixels, else the figure's own layout size, else
    :data:`DEFAULT_WIDTH` x :data:`DEFAULT_HEIGHT` (900 x 560). PNG output is
    ``width * scale`` x ``height * scale`` pixels (``scale`` defaults to 2.0); SVG and PDF
    are vector. Static formats use kaleido 1.x driving a Chrome/Chromium found by
    :func:`sprint_lab.viz.browser.find_browser` (``BROWSER_PATH`` env var, then ``chromium``,
    ``chromium-browser``, ``google-chrome`` on ``PATH``); kaleido runs it headless with
    ``--no-sandbox``, so it works as root in containers. HTML is self-contained (plotly.js
    inline, ~4 MB) unless ``include_plotlyjs="cdn"``, and needs no browser.

    Args:
        fig: The figure; it is not modified (styling is applied to a copy).
        path: Output file; parent folders are created. Suffix: .png, .svg, .pdf or .html.
        width: Width in layout pixels.
        height: Height in layout pixels.
        scale: Raster scale factor for PNG.
        include_plotlyjs: HTML only: ``True`` (inline, offline) or ``"cdn"``.
        style: Apply :data:`TEMPLATE` to the copy before writing.
        mathjax: Load MathJax from its CDN for LaTeX labels (needs network; off by default).

    Returns:
        The written path.

    Raises:
        ValueError: Unsupported suffix or ``include_plotlyjs`` value.
        RuntimeError: Static export without an installed Chrome/Chromium; the message says
            ``apt-get install -y chromium``.

    Example:
        >>> import plotly.graph_objects as go, tempfile, os
        >>> out = save_figure(go.Figure(go.Bar(y=[1, 2])), os.path.join(tempfile.mkdtemp(),
        ...                   "bars.html"), include_plotlyjs="cdn")
        >>> out.suffix
        '.html'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"unsupported file suffix {path.suffix!r} for {str(path)!r}; "
            f"supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if include_plotlyjs not in (True, "cdn"):
        raise ValueError(f"include_plotlyjs must be True or 'cdn', got {include_plotlyjs!r}")
    out = go.Figure(fig)
    if style:
        apply_style(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        if width or height:
            out.update_layout(width=width, height=height)
        config = {"displaylogo": False, "toImageButtonOptions": {"scale": scale}}
        out.write_html(path, include_plotlyjs=include_plotlyjs, full_html=True, config=config)
        return path
    w, h = _export_size(out, width, height)
    path.write_bytes(_static_bytes(out, suffix.lstrip("."), w, h, scale, mathjax))
    return path
