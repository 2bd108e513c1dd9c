"""The house style of every sprint_lab figure: one plotly template, fixed colours, labels.

Publication figures need legible fonts (>= 12 px), labels that are never clipped (automargins)
and colours that survive colour-blindness and greyscale printing. :data:`TEMPLATE` bundles those
choices on top of ``plotly_white`` (Arial 14 px, the Okabe-Ito colorway, outside ticks) and is
registered as ``plotly.io.templates["sprint_lab"]`` without becoming the global default;
:func:`apply_style` puts it on a figure. :data:`STRATEGY_COLORS` gives each comparison strategy
one colour so every figure agrees, and :data:`METRIC_LABELS` / :data:`STRATEGY_LABELS` hold the
human-readable axis and legend names.

Example:
    >>> import plotly.graph_objects as go
    >>> apply_style(go.Figure()).layout.template.layout.colorway[0] == OKABE_ITO[0]
    True
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

__all__ = [
    "METRIC_LABELS",
    "OKABE_ITO",
    "STRATEGY_COLORS",
    "STRATEGY_LABELS",
    "TEMPLATE",
    "apply_style",
]

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
"""Legend name per comparison strategy."""
METRIC_LABELS: dict[str, str] = {
    "pass_at_n": "pass@N",
    "majority_at_n": "majority@N",
    "accuracy": "accuracy",
    "delta": "Δ accuracy",
    "baseline_accuracy": "baseline accuracy",
}
"""Axis and colour-bar title per metric column."""

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
