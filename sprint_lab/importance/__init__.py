"""Cheap head-importance proxies (gate gradients, teacher-forced log-probs) and their agreement with sweeps."""

from sprint_lab.importance.proxies import ImportanceResult, correlate, gold_target, head_importance

__all__ = [
    "ImportanceResult",
    "correlate",
    "gold_target",
    "head_importance",
]
