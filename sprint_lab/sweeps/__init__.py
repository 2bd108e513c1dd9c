"""Sweeps: every configuration x every question, graded, stored, resumable, with paired statistics."""

from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import SweepProgress, sweep
from sprint_lab.sweeps.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci

__all__ = [
    "SweepProgress",
    "SweepResult",
    "benjamini_hochberg",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "sweep",
]
