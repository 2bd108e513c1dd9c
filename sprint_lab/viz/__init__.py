"""Figures (plotly, one house style), static export, and the HTML sweep report."""

from sprint_lab.viz.figures import (
    apply_style,
    embedding_map,
    heatmap,
    importance_vs_delta,
    pass_at_n_curves,
    question_head_preferences,
    save_figure,
    selector_history,
)
from sprint_lab.viz.report import write_report

__all__ = [
    "apply_style",
    "embedding_map",
    "heatmap",
    "importance_vs_delta",
    "pass_at_n_curves",
    "question_head_preferences",
    "save_figure",
    "selector_history",
    "write_report",
]
