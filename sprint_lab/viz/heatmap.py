"""The per-head heat map: how much accuracy moves when one attention head is zeroed.

A single-head sweep gives one accuracy delta per (layer, head) with a paired bootstrap CI and a
Benjamini-Hochberg q-value. :func:`heatmap` lays those out as a layers x heads grid (layer 0 on
top, cells never swept left blank), colours ``delta`` on a diverging RdBu scale centred on zero
with a symmetric range (other metrics on Viridis), stars the cells whose q-value passes
``alpha``, and shows accuracy, baseline, CI, p, q and n on hover. With ``by="level"`` (or
``"subject"``) it draws one facet per group, all sharing one colour scale so facets compare.

*Placebos* (configurations ``"none~1"``, ... that prune nothing but run like a head) are never
cells. Their deltas are the noise floor of the measurement -- exactly 0 with batch-invariant
generation -- and the map marks that *placebo band*: ticks on the colour bar at the placebo
deltas' minimum and maximum, a dark bar beside the colour bar spanning ``±`` their largest
``|delta|``, the range in the subtitle, and a grey veil over every cell whose ``|delta|`` does
not exceed it (a delta that batching alone could produce).

A sweep of configurations that are not one head each (head sets ``"L3H5+L7H2"``, whole layers
``"L12"``, or the same head under two ablation kinds, ``"L3H5"`` and ``"L3H5@mean"``) does not
fit a layers x heads grid (:func:`is_grid`): the map then has a *configuration axis*, one row per
configuration in the table's order and one column (with ``by``, one column per group instead of
facets), with the same colours, stars, hover and placebo band.

Example:
    >>> import pandas as pd
    >>> deltas = pd.DataFrame({"layer": [0, 0, 1], "head": [0, 1, 0], "delta": [0.1, -0.2, 0.0],
    ...                        "q_value": [0.01, 0.5, 1.0]})
    >>> fig = heatmap(deltas)
    >>> [t.type for t in fig.data], list(fig.data[0].y)
    (['heatmap'], ['L0', 'L1'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    noise_floor,
    require_columns,
    split_placebos,
)
from sprint_lab.viz.style import METRIC_LABELS, apply_style

__all__ = ["heatmap", "is_grid"]

_GROUP_HINT = " (per-group tables need by='level' or by='subject')"
_ALL = "_all"
"""The one column of a configuration-axis map without groups."""

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

_VEIL = "rgba(170,170,170,0.55)"
"""The grey veil over cells within the placebo noise floor (their colour shows through)."""
_BAND_COLOR = "#222222"
"""The bar beside the colour bar that spans the placebo band."""
_COLORBAR_X = 1.02
_COLORBAR_XPAD = 10


@dataclass(frozen=True)
class _Layout:
    """Which columns of a deltas table give the map's rows and columns, in what order, and how
    they are labelled: layers x heads for single-head sweeps, configurations x groups otherwise."""

    row_key: str
    col_key: str
    rows: list[Any]
    cols: list[Any]
    row_labels: list[str]
    col_labels: list[str]
    row_title: str
    col_title: str


def _grid_layout(df: pd.DataFrame) -> _Layout:
    layers = sorted(df["layer"].unique().tolist())
    heads = sorted(df["head"].unique().tolist())
    return _Layout(
        "layer", "head", layers, heads, [f"L{v}" for v in layers], [f"H{h}" for h in heads],
        "layer", "head",
    )  # fmt: skip


def _config_layout(df: pd.DataFrame, by: str | None, metric: str) -> _Layout:
    configs = list(dict.fromkeys(df["config"].tolist()))
    groups = sorted(df[by].unique().tolist()) if by else [metric]
    col_labels = [group_title(by, g) for g in groups] if by else [METRIC_LABELS.get(metric, metric)]
    return _Layout(
        "config", by or _ALL, configs, groups, [str(c) for c in configs], col_labels,
        "configuration", by or "",
    )  # fmt: skip


def is_grid(df: pd.DataFrame, by: str | None = None) -> bool:
    """Whether a deltas table lays out on a layers x heads grid.

    It does when every configuration is one head (no head sets, whole layers or second
    ablation kinds), so each (layer, head) (per ``by`` group) has one configuration; otherwise
    the map uses a configuration axis.

    Example:
        >>> import pandas as pd
        >>> grid = pd.DataFrame({"config": ["L0H1", "L1H0"], "layer": [0, 1], "head": [1, 0]})
        >>> sets = pd.DataFrame({"config": ["L0H1", "L0H1+L1H0"], "layer": [0, -1],
        ...                      "head": [1, -1]})
        >>> is_grid(grid), is_grid(sets)
        (True, False)
    """
    if "config" not in df.columns or df.empty:
        return True
    keys = ["layer", "head"] + ([by] if by else [])
    if (pd.to_numeric(df["layer"]) < 0).any() or (pd.to_numeric(df["head"]) < 0).any():
        return False
    labelled = df.drop_duplicates(keys + ["config"])  # repeats of one config: a per-group table
    return not labelled.duplicated(keys).any()


def _pivot(df: pd.DataFrame, column: str, layout: _Layout) -> np.ndarray:
    """Return a float [rows, cols] grid of ``column`` with NaN for missing cells."""
    if column not in df.columns:
        return np.full((len(layout.rows), len(layout.cols)), np.nan)
    grid = df.pivot(index=layout.row_key, columns=layout.col_key, values=column)
    grid = grid.reindex(index=layout.rows, columns=layout.cols)
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
    layout: _Layout,
    alpha: float,
    name: str,
    colors: dict[str, Any],
    showscale: bool,
) -> go.Heatmap:
    z = _pivot(df, metric, layout)
    q = _pivot(df, "q_value", layout)
    stars = np.where(np.isfinite(q) & (q <= alpha), "*", "")
    custom = np.dstack([_pivot(df, f, layout) for f in _HOVER_FIELDS])
    return go.Heatmap(
        z=z,
        x=layout.col_labels,
        y=layout.row_labels,
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


def _laid_out(
    df: pd.DataFrame, by: str | None, metric: str, axis: str
) -> tuple[pd.DataFrame, pd.DataFrame, _Layout]:
    """The cells, the placebo rows and the layout (a grid or a configuration axis)."""
    if axis not in ("auto", "grid", "config"):
        raise ValueError(f"axis must be 'auto', 'grid' or 'config', got {axis!r}")
    keys = ["layer", "head"] + ([by] if by else [])
    require_columns(df, keys + [metric], "deltas table")
    by_config = axis == "config" or (
        axis == "auto" and not is_grid(split_placebos(df, keep_off_grid=True)[0], by)
    )
    df, placebos = split_placebos(df, keep_off_grid=by_config)
    if by_config:
        require_columns(df, ["config"], "deltas table with a configuration axis")
        check_unique(df, ["config"] + ([by] if by else []), "deltas table")
        df = df.assign(**{_ALL: metric})
        return df, placebos, _config_layout(df, by, metric)
    check_unique(df, keys, "deltas table", _GROUP_HINT if by is None else "")
    df = df.astype({"layer": int, "head": int})
    return df, placebos, _grid_layout(df)


def heatmap(
    result: Any,
    metric: str = "delta",
    *,
    by: str | None = None,
    alpha: float = 0.05,
    title: str | None = None,
    axis: str = "auto",
) -> go.Figure:
    """Layers x heads heatmap of a per-head pruning metric, with the placebo band marked.

    Rows are the swept layers in increasing order (categorical axis labelled ``L{layer}``,
    layer 0 on top), columns the heads (``H{head}``); cells never swept stay blank. ``delta``
    (and any column containing "delta") uses a diverging RdBu scale centred on zero with a
    symmetric range; other metrics a sequential Viridis scale ([0, 1] for accuracies). Cells
    with ``q_value <= alpha`` carry a ``*``. Hover shows accuracy, baseline, delta, its CI,
    p, q and n. With ``by`` the figure has one subplot per group sharing one colour scale.
    Tables that are no layers x heads grid get a configuration axis (module docstring).

    Placebo rows (``config`` ``"none~1"``, ...; without a ``config`` column, rows at layer -1,
    head -1) are never cells, and rows at a negative layer or head are dropped from the grid.
    When the table has placebo rows, the map marks the *placebo band*, the noise floor
    ``F = max |placebo delta|`` (over all placebos, and over all groups with ``by``):

    * the subtitle states the placebo deltas' minimum, maximum and ``F`` (``"placebo Δ from
      -0.010 to +0.030: noise floor |Δ| ≤ 0.030 (grey cells lie within it)"``; with ``F = 0``
      ``"... (no batch noise)"``, or ``"... (yet up to 33.3% of answers flip: batch noise
      cancelled out)"`` when a placebo's ``discordance`` is not 0);
    * for a delta metric, the colour bar gets ticks at the placebo minimum and maximum
      (``"placebo min ..."``/``"placebo max ..."``, or one ``"placebo ..."`` tick when they
      are equal), a dark bar just left of it spans ``[-F, +F]`` (a thin line at 0 when
      ``F = 0``), the colour range widens to include ``±F``, and a second, hover-less
      ``go.Heatmap`` trace per facet (named ``"within placebo noise"``) lays a translucent grey
      veil over every cell with ``|delta| <= F`` (up to 1e-9), stars included: such a
      delta could come from batching alone. With ``F = 0`` (batch-invariant generation)
      only cells whose delta is exactly 0 turn grey;
    * ``fig.layout.meta`` holds ``placebos`` (labels), ``placebo_deltas``, ``placebo_range``
      (``[min, max]``) and ``noise_floor`` (``F``; ``None`` while no placebo has answers).
      Without placebo rows the figure is as before: one trace per facet, no meta.

    Args:
        result: A deltas DataFrame (``layer``, ``head``, ``metric`` column, optionally
            ``config``, ``accuracy``, ``baseline_accuracy``, ``ci_low``, ``ci_high``,
            ``p_value``, ``q_value``, ``n``) or an object with ``.deltas(by=...)`` (a
            SweepResult).
        metric: Column to colour by, e.g. ``"delta"`` or ``"accuracy"``.
        by: ``None``, ``"level"`` or ``"subject"`` to facet by that column.
        alpha: Significance threshold on the Benjamini-Hochberg ``q_value``.
        title: Figure title; a sensible default otherwise.
        axis: ``"auto"`` (a grid when the table fits one), ``"grid"`` or ``"config"``.

    Returns:
        The figure (one ``go.Heatmap`` trace per facet, followed by its veil trace when the
        placebo band is drawn).

    Raises:
        ValueError: Missing columns or duplicate (layer, head) rows within a facet.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"layer": [0, 2], "head": [1, 1], "delta": [0.05, -0.1],
        ...                    "q_value": [0.01, 0.2]})
        >>> fig = heatmap(df)
        >>> list(fig.data[0].y), [list(row) for row in fig.data[0].text]
        (['L0', 'L2'], [['*'], ['']])
        >>> with_placebo = pd.concat([df, pd.DataFrame({"config": ["none~1"], "layer": [-1],
        ...                           "head": [-1], "delta": [0.05], "q_value": [1.0]})])
        >>> fig = heatmap(with_placebo)
        >>> list(fig.data[0].y), fig.layout.meta["noise_floor"], fig.data[1].name
        (['L0', 'L2'], 0.05, 'within placebo noise')
        >>> sets = pd.DataFrame({"config": ["L0H1", "L0H1+L2H1", "L2@mean"], "layer": [0, -1, 2],
        ...                      "head": [1, -1, -1], "delta": [0.05, -0.1, 0.0]})
        >>> list(heatmap(sets).data[0].y)
        ['L0H1', 'L0H1+L2H1', 'L2@mean']
    """
    df, placebos, layout = _laid_out(SweepResult.deltas_of(result, by), by, metric, axis)
    by_config = layout.row_key == "config"
    diverging = "delta" in metric
    band = _placebo_band(placebos, metric if diverging else "delta")
    colors, veil, colorbar = _scale(df[metric].to_numpy(dtype=float), metric, band)
    default = _default_title(metric, diverging, by_config)
    groups = [(None, df)] if by is None or by_config else list(df.groupby(by, sort=True))
    rows, cols = grid_shape(len(groups))
    titles = [_facet_title(by, g, sub) for g, sub in groups] if by and not by_config else None
    height = max(360, rows * (28 * len(layout.rows) + 110) + 130)
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
        trace = _heatmap_trace(sub, metric, layout, alpha, name, colors, showscale=i == 0)
        trace.colorbar.update(colorbar)
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(trace, row=row, col=col)
        if veil is not None:
            fig.add_trace(_veil_trace(sub, metric, layout, veil), row=row, col=col)
    _grid_axes(fig, layout, rows)
    subtitle = f"* Benjamini-Hochberg q ≤ {alpha:g}"
    if band is not None:
        subtitle += " · " + band.text(veiled=veil is not None)
        fig.update_layout(meta=band.meta())
        if colorbar and band.floor is not None:
            fig.add_shape(_band_shape(band.floor, colors["zmax"]))
    fig.update_layout(
        title={
            "text": title or default + (f" by {by}" if by else ""),
            "subtitle": {"text": subtitle},
        },
        height=height,
        margin={"t": 125} if by else None,  # room for title, subtitle and facet titles
        plot_bgcolor="white",
    )
    return apply_style(fig)


def _default_title(metric: str, diverging: bool, by_config: bool = False) -> str:
    what = "each configuration" if by_config else "one head"
    if diverging:
        return f"Accuracy change when pruning {what}"
    return f"{METRIC_LABELS.get(metric, metric).capitalize()} with {what} pruned"


@dataclass(frozen=True)
class _PlaceboBand:
    """The placebo rows of a deltas table, reduced to what the map marks."""

    labels: list[str]
    deltas: list[float]
    flips: float | None = None  # the largest placebo discordance, when the table has it

    @property
    def floor(self) -> float | None:
        return noise_floor(self.deltas)

    @property
    def low(self) -> float | None:
        return min(self.deltas) if self.deltas else None

    @property
    def high(self) -> float | None:
        return max(self.deltas) if self.deltas else None

    def text(self, veiled: bool) -> str:
        """The subtitle's sentence about the band."""
        if self.floor is None or self.low is None or self.high is None:
            many = "s" if len(self.labels) > 1 else ""
            return f"{len(self.labels)} placebo{many}, no answers yet"
        if self.low != self.high:
            values = f"from {self.low:+.3f} to {self.high:+.3f}"
        else:
            values = f"{'all ' if len(self.deltas) > 1 else ''}{self.low:+.3f}"
        if self.floor == 0 and self.flips:
            where = f" (yet up to {self.flips:.1%} of answers flip: batch noise cancelled out)"
        elif self.floor == 0:
            where = " (no batch noise)"
        else:
            where = " (grey cells lie within it)" if veiled else ""
        return f"placebo Δ {values}: noise floor |Δ| ≤ {self.floor:.3f}{where}"

    def meta(self) -> dict[str, Any]:
        return {
            "placebos": self.labels,
            "placebo_deltas": self.deltas,
            "placebo_range": None if self.low is None else [self.low, self.high],
            "noise_floor": self.floor,
        }


def _placebo_band(placebos: pd.DataFrame, column: str) -> _PlaceboBand | None:
    """The band of the placebo rows' ``column`` (finite values only); ``None`` without rows."""
    if placebos.empty:
        return None
    configs = placebos["config"] if "config" in placebos.columns else [None] * len(placebos)
    named = [c if isinstance(c, str) else f"placebo {i + 1}" for i, c in enumerate(configs)]
    labels = list(dict.fromkeys(named))
    values = placebos[column].to_numpy(float) if column in placebos.columns else np.array([])
    flips = noise_floor(placebos["discordance"]) if "discordance" in placebos.columns else None
    return _PlaceboBand(labels, [float(v) for v in values[np.isfinite(values)]], flips)


def _scale(
    values: np.ndarray, metric: str, band: _PlaceboBand | None
) -> tuple[dict[str, Any], float | None, dict[str, Any]]:
    """The colour range, the veil's noise floor (or ``None``) and the colour-bar settings.

    A delta metric's range widens to include the placebo band ``±F``; without a band (or for
    other metrics) there is no veil and the colour bar keeps plotly's own ticks.
    """
    diverging = "delta" in metric
    if not diverging or band is None:
        return _color_range(values, diverging, metric), None, {}
    if band.floor is not None:
        values = np.append(values, [-band.floor, band.floor])
    colors = _color_range(values, diverging, metric)
    return colors, band.floor, _band_colorbar(band, colors["zmax"])


def _nice_ticks(bound: float) -> list[tuple[float, str]]:
    """About five round ticks on ``[-bound, bound]``, 0 included, with their labels."""
    raw = 2 * bound / 4
    scale = 10 ** math.floor(math.log10(raw))
    mantissa = next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * scale * (1 + 1e-9))
    step = mantissa * scale
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (mantissa == 2.5)
    n = math.floor(bound / step + 1e-9)
    ticks = [k * step for k in range(-n, n + 1)]
    return [(t, "0" if abs(t) < step / 2 else f"{t:+.{decimals}f}") for t in ticks]


def _clear_of(tick: float, marks: dict[float, str], bound: float) -> bool:
    """Whether a round tick is far enough from every placebo tick for the labels not to clash."""
    return all(abs(tick - mark) >= 0.15 * bound for mark in marks)


def _band_colorbar(band: _PlaceboBand, bound: float) -> dict[str, Any]:
    """Colour-bar settings: round ticks plus ticks at the placebo minimum and maximum."""
    position = {
        "x": _COLORBAR_X,
        "xanchor": "left",
        "xpad": _COLORBAR_XPAD,
        "y": 0.5,
        "yanchor": "middle",
        "len": 1.0,
        "lenmode": "fraction",
        "ypad": 0,
    }
    if band.low is None or band.high is None:
        return position
    if band.low == band.high:
        marks = {band.low: f"placebo {band.low:+.3f}"}
    else:
        marks = {
            band.low: f"placebo min {band.low:+.3f}",
            band.high: f"placebo max {band.high:+.3f}",
        }
    regular = [] if bound <= 1e-6 else _nice_ticks(bound)  # all deltas 0: the placebo tick
    regular = [(t, text) for t, text in regular if _clear_of(t, marks, bound)]
    ticks = sorted(regular + list(marks.items()))
    return {
        **position,
        "tickmode": "array",
        "tickvals": [t for t, _ in ticks],
        "ticktext": [text for _, text in ticks],
    }


def _band_shape(floor: float, bound: float) -> dict[str, Any]:
    """A dark bar just left of the colour bar spanning ``[-floor, +floor]`` (a line at 0)."""
    low, high = ((v + bound) / (2 * bound) for v in (-floor, floor))
    return {
        "type": "rect",
        "xref": "paper",
        "yref": "paper",
        "xsizemode": "pixel",
        "xanchor": _COLORBAR_X,
        "x0": _COLORBAR_XPAD - 7,
        "x1": _COLORBAR_XPAD - 2,
        "y0": low,
        "y1": high,
        "fillcolor": _BAND_COLOR,
        "line": {"color": _BAND_COLOR, "width": 1.5},
        "layer": "above",
        "name": "placebo band",
    }


def _veil_trace(df: pd.DataFrame, metric: str, layout: _Layout, floor: float) -> go.Heatmap:
    """A grey, hover-less layer over the cells whose ``|metric|`` is within the noise floor."""
    z = _pivot(df, metric, layout)
    within = np.isfinite(z) & (np.abs(z) <= floor + 1e-9)
    return go.Heatmap(
        z=np.where(within, 1.0, np.nan),
        x=layout.col_labels,
        y=layout.row_labels,
        colorscale=[[0.0, _VEIL], [1.0, _VEIL]],
        zmin=0.0,
        zmax=1.0,
        showscale=False,
        hoverinfo="skip",
        hoverongaps=False,
        xgap=1,
        ygap=1,
        name="within placebo noise",
    )


def _grid_axes(fig: go.Figure, layout: _Layout, rows: int) -> None:
    """Categorical axes in sweep order on every facet: layers (or configurations) top-down,
    heads (or groups) left-right."""
    fig.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=layout.row_labels,
        autorange="reversed",
        showgrid=False,
    )
    fig.update_xaxes(
        type="category",
        categoryorder="array",
        categoryarray=layout.col_labels,
        showgrid=False,
        tickangle=0,
    )
    fig.update_xaxes(title_text=layout.col_title, row=rows)
    fig.update_yaxes(title_text=layout.row_title, col=1)


def _facet_title(by: str, group: Any, sub: pd.DataFrame) -> str:
    label = group_title(by, group)
    if "n" in sub.columns and sub["n"].notna().any():
        label += f" (n={int(sub['n'].max())})"
    return label
