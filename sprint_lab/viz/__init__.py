"""Figures (plotly, one house style), static export, and the HTML sweep report.

One module per figure family, all styled by :mod:`sprint_lab.viz.style`:

    style           the template, palette and labels (:func:`apply_style`)
    heatmap         per-head accuracy deltas on a layers x heads grid (or a configuration axis)
    prune_path      accuracy along a greedy pruning path
    comparison      pass@N / majority@N curves per selection strategy
    selector_figs   selector training curves, head preferences, embedding map
    importance_fig  an importance proxy against measured deltas
    export          :func:`save_figure` (PNG/SVG/PDF via kaleido + Chromium, or HTML)
    browser         locating the Chromium that kaleido drives
    report          the self-contained HTML sweep report (placebo check, power statement)
"""

from sprint_lab.viz.comparison import pass_at_n_curves
from sprint_lab.viz.export import DEFAULT_HEIGHT, DEFAULT_SCALE, DEFAULT_WIDTH, save_figure
from sprint_lab.viz.heatmap import heatmap, is_grid
from sprint_lab.viz.importance_fig import importance_vs_delta
from sprint_lab.viz.prune_path import prune_path
from sprint_lab.viz.report import (
    format_top_heads,
    placebo_table,
    placebo_verdict,
    power_statement,
    top_heads_table,
    write_report,
)
from sprint_lab.viz.selector_figs import embedding_map, question_head_preferences, selector_history
from sprint_lab.viz.style import (
    METRIC_LABELS,
    OKABE_ITO,
    STRATEGY_COLORS,
    STRATEGY_LABELS,
    TEMPLATE,
    apply_style,
)

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_SCALE",
    "DEFAULT_WIDTH",
    "METRIC_LABELS",
    "OKABE_ITO",
    "STRATEGY_COLORS",
    "STRATEGY_LABELS",
    "TEMPLATE",
    "apply_style",
    "embedding_map",
    "format_top_heads",
    "heatmap",
    "importance_vs_delta",
    "is_grid",
    "pass_at_n_curves",
    "placebo_table",
    "placebo_verdict",
    "power_statement",
    "prune_path",
    "question_head_preferences",
    "save_figure",
    "selector_history",
    "top_heads_table",
    "write_report",
]
