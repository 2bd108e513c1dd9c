"""Cheap head-importance proxies (gate gradients, teacher-forced log-probs) and their agreement
with sweeps, and group-knockout screening of all heads."""

from sprint_lab.importance.correlate import correlate, rank_correlation
from sprint_lab.importance.proxies import ImportanceResult, head_importance
from sprint_lab.importance.screen import ScreenResult, recover_effects, screen
from sprint_lab.tasks.answers import gold_target

__all__ = [
    "ImportanceResult",
    "ScreenResult",
    "correlate",
    "gold_target",
    "head_importance",
    "rank_correlation",
    "recover_effects",
    "screen",
]
