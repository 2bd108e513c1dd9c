"""Sweeps: every configuration x every question, graded, stored, resumable, with statistics.

:func:`sweep` plans the (configuration, question) pairs and hands them to an executor
(:class:`LocalExecutor`, :class:`RayExecutor`, or any :class:`Executor`); the rows land in a
:class:`SweepResult` with paired statistics; :func:`greedy_prune` chains sweeps of growing head
sets into a pruning path. With ``out=`` they are appended to a
:class:`SweepStore`: fingerprinted rows (:mod:`~sprint_lab.sweeps.identity`), one locked writer
(:mod:`~sprint_lab.sweeps.lock`), checksummed parts and :meth:`SweepStore.repair`.
"""

from sprint_lab.sweeps.executor import Executor, LocalExecutor, SweepProgress
from sprint_lab.sweeps.greedy import PrunePath, greedy_prune
from sprint_lab.sweeps.lock import StoreLockedError
from sprint_lab.sweeps.ray import RayExecutor
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import sweep
from sprint_lab.sweeps.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci
from sprint_lab.sweeps.store import (
    CorruptStoreError,
    RepairReport,
    StaleRowsError,
    SweepExistsError,
    SweepStore,
)
from sprint_lab.sweeps.vllm import VLLMExecutor

__all__ = [
    "CorruptStoreError",
    "Executor",
    "LocalExecutor",
    "PrunePath",
    "RayExecutor",
    "RepairReport",
    "StaleRowsError",
    "StoreLockedError",
    "SweepExistsError",
    "SweepProgress",
    "SweepResult",
    "SweepStore",
    "VLLMExecutor",
    "benjamini_hochberg",
    "greedy_prune",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "sweep",
]
