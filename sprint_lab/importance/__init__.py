"""Cheap head-importance proxies (gate gradients, teacher-forced log-probs) and their agreement
with sweeps."""

from sprint_lab.importance.correlate import correlate, rank_correlation
from sprint_lab.importance.proxies import ImportanceResult, head_importance
from sprint_lab.tasks.answers import gold_target

__all__ = [
    "ImportanceResult",
    "correlate",
    "gold_target",
    "head_importance",
    "rank_correlation",
]
