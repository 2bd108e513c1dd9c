"""A cheap importance proxy against the measured effect of pruning each head.

A full single-head sweep costs one generation per (question, head); proxies such as gradient
attribution or teacher-forced log-prob drops
(:func:`~sprint_lab.importance.proxies.head_importance`) cost one forward/backward pass.
:func:`importance_vs_delta` joins a proxy's per-head scores with a sweep's deltas on
(layer, head) and draws one point per head, coloured by layer, with the delta's CI as error
bars; placebo rows of the deltas (unpruned runs at layer -1, head -1) are left out.
Spearman's rho (rank agreement: does the proxy order heads correctly?) and Pearson's r
(:func:`~sprint_lab.importance.correlate.rank_correlation`) are reported in the subtitle and
stored in ``fig.layout.meta``.

Example:
    >>> import pandas as pd
    >>> imp = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "score": [0.1, 0.2, 0.3]})
    >>> d = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "delta": [0.0, -0.1, -0.2]})
    >>> int(importance_vs_delta(imp, d).layout.meta["n"])
    3
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sprint_lab.importance.correlate import rank_correlation
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.frames import check_unique, require_columns, split_placebos
from sprint_lab.viz.style import METRIC_LABELS, apply_style

__all__ = ["importance_vs_delta"]


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
    check_unique(long, ["layer", "head"], "importance table")
    return long


def _fmt_corr(value: float, p: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f} (p={p:.2g})"


def _matched_heads(long: pd.DataFrame, deltas: Any, metric: str) -> pd.DataFrame:
    """Inner join of the proxy scores with the deltas on (layer, head), NaNs dropped."""
    dframe = SweepResult.deltas_of(deltas, None)
    require_columns(dframe, ["layer", "head", metric], "deltas table")
    dframe, _ = split_placebos(dframe)  # placebos (layer -1, head -1) are no heads
    check_unique(dframe, ["layer", "head"], "deltas table", " (pass the by=None table)")
    merged = long.merge(dframe.astype({"layer": int, "head": int}), on=["layer", "head"])
    merged = merged.dropna(subset=["score", metric])
    if merged.empty:
        raise ValueError("no (layer, head) appears in both the importance and deltas tables")
    return merged


def _heads_scatter(
    merged: pd.DataFrame, x: np.ndarray, y: np.ndarray, proxy_name: str, with_ci: bool
) -> go.Scatter:
    """One point per head, coloured by layer, with asymmetric CI error bars when asked."""
    configs = [f"L{a}H{b}" for a, b in zip(merged["layer"], merged["head"], strict=True)]
    error_y = None
    if with_ci:
        error_y = {
            "type": "data",
            "symmetric": False,
            "array": merged["ci_high"] - y,
            "arrayminus": y - merged["ci_low"],
            "thickness": 0.8,
            "width": 0,
            "color": "rgba(80,80,80,0.45)",
        }
    return go.Scatter(
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
    merged = _matched_heads(_importance_long(importance), deltas, metric)
    x, y = merged["score"].to_numpy(float), merged[metric].to_numpy(float)
    corr = rank_correlation(x, y)
    with_ci = show_ci and {"ci_low", "ci_high"} <= set(merged.columns)
    fig = go.Figure(_heads_scatter(merged, x, y, proxy_name, with_ci))
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
