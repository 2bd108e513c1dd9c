"""Sweeps: every configuration x every question, graded, stored, resumable, with statistics.

:func:`sweep` plans the (configuration, question) pairs and hands them to an executor
(:class:`LocalExecutor`, :class:`RayExecutor`, or any :class:`Executor`); the rows land in a
:class:`SweepResult` with paired statistics.
"""

from sprint_lab.sweeps.executor import Executor, LocalExecutor, SweepProgress
from sprint_lab.sweeps.ray import RayExecutor
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import sweep
from sprint_lab.sweeps.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SweepProgress",
    "SweepResult",
    "benjamini_hochberg",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "sweep",
]
