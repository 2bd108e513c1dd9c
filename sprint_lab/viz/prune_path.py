"""The greedy pruning path: accuracy as heads are removed one after another.

:func:`~sprint_lab.sweeps.greedy.greedy_prune` removes one head per step, each time the one
whose removal leaves the model answering best. :func:`prune_path` draws the path: the number of
pruned heads on the x axis (each tick names the head added at that step), the chosen set's
accuracy with its paired 95% interval (the baseline's accuracy plus the CI of the delta), the
unpruned baseline as a dashed line, the runner-up of each step as a hollow marker (how close
the choice was), and a star on the steps whose q-value against the baseline passes ``alpha``.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"step": [1, 2], "added": ["L0H1", "L2H0"],
    ...     "config": ["L0H1", "L0H1+L2H0"], "n_pruned": [1, 2], "n": [10, 10],
    ...     "accuracy": [0.6, 0.4], "baseline_accuracy": [0.5, 0.5], "delta": [0.1, -0.1],
    ...     "ci_low": [0.0, -0.3], "ci_high": [0.2, 0.0], "q_value": [0.5, 0.04],
    ...     "runner_up": ["L1H1", None], "runner_up_accuracy": [0.5, float("nan")]})
    >>> fig = prune_path(table)
    >>> [t.name for t in fig.data], list(fig.data[0].text)
    (['pruned set', 'runner-up', 'q ≤ 0.05'], ['L0H1', '+L2H0'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sprint_lab.viz.frames import require_columns
from sprint_lab.viz.style import OKABE_ITO, apply_style

__all__ = ["prune_path"]

_NEEDED = ("step", "added", "accuracy", "baseline_accuracy", "ci_low", "ci_high", "q_value")


def _path_table(path: Any) -> pd.DataFrame:
    table = path if isinstance(path, pd.DataFrame) else getattr(path, "table", None)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            f"expected a PrunePath (greedy_prune) or its table, got {type(path).__name__}"
        )
    require_columns(table, _NEEDED, "pruning path table")
    return table.sort_values("step", kind="stable")


def prune_path(path: Any, *, alpha: float = 0.05, title: str | None = None) -> go.Figure:
    """Accuracy along a greedy pruning path, with CIs, runner-ups and the baseline.

    Args:
        path: a :class:`~sprint_lab.sweeps.greedy.PrunePath` or its ``table``.
        alpha: the q-value (BH over the path's steps) a step's star needs.
        title: the figure title; a default otherwise.

    Returns:
        The figure: the traces ``"pruned set"`` (markers with error bars, text = the head
        added), ``"runner-up"`` and ``"q ≤ alpha"``; the baseline is a dashed line.

    Raises:
        TypeError: for something that is not a path or its table.
        ValueError: for a table missing a column.
    """
    table = _path_table(path)
    steps = table["step"].to_numpy(int)
    accuracy = table["accuracy"].to_numpy(float)
    base = table["baseline_accuracy"].to_numpy(float)
    upper = base + table["ci_high"].to_numpy(float) - accuracy
    lower = accuracy - base - table["ci_low"].to_numpy(float)
    labels = [str(a) if i == 0 else f"+{a}" for i, a in enumerate(table["added"])]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=steps, y=accuracy, mode="lines+markers+text", name="pruned set", text=labels,
            textposition="top center", line={"color": OKABE_ITO[0]},
            error_y={"type": "data", "array": np.clip(upper, 0, None),
                     "arrayminus": np.clip(lower, 0, None), "visible": True},
            customdata=np.stack([table.get("config", table["added"]).astype(str),
                                 table["q_value"].to_numpy(float)], axis=-1),
            hovertemplate="step %{x}: %{customdata[0]}<br>accuracy %{y:.3f}"
                          "<br>q = %{customdata[1]:.3g}<extra></extra>",
        )
    )  # fmt: skip
    runner = table.get("runner_up_accuracy", pd.Series(np.nan, index=table.index))
    fig.add_trace(
        go.Scatter(
            x=steps, y=runner.to_numpy(float), mode="markers", name="runner-up",
            marker={"symbol": "circle-open", "size": 9, "color": OKABE_ITO[1]},
            text=table.get("runner_up", pd.Series("", index=table.index)).astype(str),
            hovertemplate="step %{x} runner-up %{text}: %{y:.3f}<extra></extra>",
        )
    )  # fmt: skip
    significant = table["q_value"].to_numpy(float) <= alpha
    fig.add_trace(
        go.Scatter(
            x=steps[significant], y=accuracy[significant], mode="markers", name=f"q ≤ {alpha:g}",
            marker={"symbol": "star", "size": 14, "color": OKABE_ITO[5]}, hoverinfo="skip",
        )
    )  # fmt: skip
    if len(base):
        fig.add_hline(
            y=float(base[0]), line_dash="dash", line_color="grey", annotation_text="baseline"
        )
    fig.update_xaxes(title_text="heads pruned", tickmode="array", tickvals=steps)
    fig.update_yaxes(title_text="accuracy")
    fig.update_layout(title={"text": title or "Greedy pruning path"})
    return apply_style(fig)
