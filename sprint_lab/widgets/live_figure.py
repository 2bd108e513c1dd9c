"""Live plotly figures inside ipywidgets: build a ``FigureWidget``, redraw it in place.

A panel redraws its figure many times (after every sweep batch, every training epoch).
Replacing the widget's traces each time would drop the click handlers attached to them and
make the browser re-create the plot; :func:`sync_figure` instead updates traces in place when
their number and types are unchanged (one message per redraw) and only replaces them otherwise.
Layout keys the new figure does not set (a placeholder's annotation, say) are removed.
:func:`placeholder_figure` is the empty, styled figure a panel shows before it has data.

Example:
    >>> import plotly.graph_objects as go
    >>> w = figure_widget(placeholder_figure("nothing yet"))
    >>> sync_figure(w, go.Figure(go.Bar(y=[1, 2])))
    >>> [t.type for t in w.data], w.layout.annotations
    (['bar'], ())
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from sprint_lab.viz.style import apply_style

__all__ = ["figure_widget", "placeholder_figure", "sync_figure"]


def figure_widget(fig: go.Figure | None = None) -> go.FigureWidget:
    """A ``plotly.graph_objects.FigureWidget`` (needs ``anywidget`` with plotly >= 6).

    Raises:
        ImportError: naming the missing package when plotly cannot build a widget.
    """
    try:
        return go.FigureWidget(fig) if fig is not None else go.FigureWidget()
    except ImportError as err:  # plotly >= 6 builds FigureWidget on anywidget
        raise ImportError(f"{err}. The interactive figures need it: pip install anywidget") from err


def _trace_json(trace: Any) -> dict[str, Any]:
    data = trace.to_plotly_json()
    data.pop("uid", None)
    return data


def sync_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Make ``widget`` show ``fig``, updating traces in place when their types match.

    In-place updates keep click handlers attached to the widget's traces and send one message
    per redraw; otherwise the traces are replaced. Layout keys that ``fig`` does not set (say a
    placeholder's annotation) are removed, in Python and in the browser.

    Example:
        >>> w = figure_widget(go.Figure(go.Heatmap(z=[[1.0]])))
        >>> sync_figure(w, go.Figure(go.Heatmap(z=[[2.0, 3.0]])))
        >>> [list(row) for row in w.data[0].z]
        [[2.0, 3.0]]
    """
    same = len(widget.data) == len(fig.data) and all(
        old.type == new.type for old, new in zip(widget.data, fig.data, strict=True)
    )
    layout = fig.layout.to_plotly_json()
    stale = {key: None for key in widget.layout.to_plotly_json() if key not in layout}
    if not same:
        widget.data = ()
        if fig.data:
            widget.add_traces([trace.to_plotly_json() for trace in fig.data])
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fig.data, strict=True):
                old.update(_trace_json(new), overwrite=True)
        widget.layout.update({**stale, **layout}, overwrite=True)


def placeholder_figure(text: str) -> go.Figure:
    """An empty styled figure (no axes) showing ``text``, for a panel without data yet."""
    fig = go.Figure()
    fig.update_layout(
        height=260,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": text, "showarrow": False, "font": {"size": 15}}],
    )
    return apply_style(fig)
