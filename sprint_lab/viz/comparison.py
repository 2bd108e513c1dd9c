"""pass@N / majority@N curves: how each selection strategy scales with the number of samples.

:func:`~sprint_lab.selection.strategies.compare_strategies` scores every strategy (SPRINT, random
heads, best-of-N, the oracle) at several N. :func:`pass_at_n_curves` draws one line per strategy
on a log2-spaced N axis with ticks exactly at the Ns present, in fixed colours
(:data:`~sprint_lab.viz.style.STRATEGY_COLORS`); the oracle is dashed, the unpruned model is a
dotted reference line, and strategies measured over several seeds get error bars and a shaded
±1 std band (from a ``std`` column, or from the spread of repeated rows per N).

Example:
    >>> import pandas as pd
    >>> cmp = pd.DataFrame({"strategy": ["no_prune", "sprint", "sprint"], "n": [1, 1, 4],
    ...                     "metric": ["accuracy", "pass_at_n", "pass_at_n"],
    ...                     "value": [0.4, 0.5, 0.7]})
    >>> [t.legendgroup for t in pass_at_n_curves(cmp).data]
    ['no_prune', 'sprint']
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sprint_lab.viz.frames import require_columns
from sprint_lab.viz.style import METRIC_LABELS, STRATEGY_COLORS, STRATEGY_LABELS, apply_style

__all__ = ["pass_at_n_curves"]


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


def _reference_trace(ns: list, level: float) -> go.Scatter:
    """The unpruned model's level as a dotted horizontal line across the Ns."""
    return go.Scatter(
        x=[ns[0], ns[-1]],
        y=[level, level],
        mode="lines",
        name=STRATEGY_LABELS["no_prune"],
        legendgroup="no_prune",
        line={"color": STRATEGY_COLORS["no_prune"], "dash": "dot"},
        hovertemplate="no pruning: %{y:.1%}<extra></extra>",
    )


def _strategy_trace(
    x: np.ndarray, y: np.ndarray, std: np.ndarray, strategy: str, has_std: bool
) -> go.Scatter:
    """One strategy's curve (dashed for the oracle), with error bars when it has a std."""
    label = STRATEGY_LABELS.get(strategy, strategy)
    return go.Scatter(
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
    require_columns(comparison, ["strategy", "n", "metric", "value"], "comparison table")
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
        fig.add_trace(_reference_trace(ns, level))
    for strategy in _strategy_order(agg["strategy"]):
        rows = agg[agg["strategy"] == strategy].sort_values("n")
        x, y, std = (rows[c].to_numpy(dtype=float) for c in ("n", "value", "std"))
        has_std = bool(np.isfinite(std).any())
        if has_std:
            fig.add_trace(_band_trace(x, y, np.nan_to_num(std), strategy))
        fig.add_trace(_strategy_trace(x, y, std, strategy, has_std))
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
