"""Greedy forward pruning: which heads can go together, one at a time, with statistics per step.

Michel, Levy and Neubig ("Are Sixteen Heads Really Better than One?", NeurIPS 2019) showed
that many heads can be removed *together* with little loss, and that which ones is a question
of sets, not of single heads: two heads that back each other up each look harmless alone. The
classic way to find such a set is greedy forward selection. Start from the unpruned model and
an empty set ``S``; at each step sweep every remaining candidate added to ``S`` (the head sets
``S + {h}``, :mod:`sprint_lab.core.configs`), keep the one whose set answers best, and repeat
``k`` times. Each step is an ordinary :func:`~sprint_lab.sweeps.run.sweep` of
``len(candidates) - step + 1`` configurations (so the whole path costs about ``k`` single-head
sweeps), batch-invariant and resumable like any other.

*Best* means the highest accuracy on the questions; ties (common with few questions) go to the
set whose verdicts differ from the current set's on the fewest questions (the least disruptive
removal), then to the earlier candidate, so the path is deterministic. Every step reports the
chosen set against the unpruned baseline (accuracy delta, paired bootstrap CI, exact McNemar p,
Benjamini-Hochberg q over the path's steps) and against the previous step's set
(``step_delta``, ``step_p_value``): the first says how far the model has moved, the second
whether this one removal mattered. Because the choice at each step is made on the same
questions its statistics are computed on, those p-values are optimistic (a selection effect);
confirm a path on held-out questions with one more :func:`sweep` of its sets.

Example:
    >>> path = greedy_prune(model, problems[:2], ["L0H0", "L0H1", "L1H0"], k=2,
    ...                     max_new_tokens=2, progress=False)
    >>> path.table[["step", "n_pruned"]].values.tolist()
    [[1, 1], [2, 2]]
    >>> len(path.candidates)  # 3 candidates at step 1, then the 2 left
    5
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sprint_lab.core.configs import Config, as_config
from sprint_lab.core.errors import InputError
from sprint_lab.core.heads import ABLATION_KINDS, BASELINE, Head, as_heads
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import sweep
from sprint_lab.sweeps.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem

__all__ = ["PATH_COLUMNS", "CANDIDATE_COLUMNS", "PrunePath", "greedy_prune"]

PATH_COLUMNS = [
    "step",
    "added",
    "config",
    "n_pruned",
    "n",
    "accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "step_delta",
    "step_p_value",
    "runner_up",
    "runner_up_accuracy",
    "n_candidates",
]
"""The columns of :attr:`PrunePath.table`, one row per step."""

CANDIDATE_COLUMNS = ["step", "candidate", "config", "n", "accuracy", "step_delta", "flips"]
"""The columns of :attr:`PrunePath.candidates`, one row per (step, candidate tried)."""


@dataclass
class PrunePath:
    """The result of :func:`greedy_prune`.

    Attributes:
        table: one row per step (:data:`PATH_COLUMNS`): the head added, the set's label, its
            accuracy and paired statistics against the baseline and the previous set.
        candidates: one row per (step, candidate tried) (:data:`CANDIDATE_COLUMNS`): what every
            alternative scored, for a closer look at near-ties.
        sweeps: the step sweeps, in order (their tables hold every answer).
        meta: the settings (``k``, ``kind``, ``candidates``, the step stores).
    """

    table: pd.DataFrame
    candidates: pd.DataFrame
    sweeps: list[SweepResult] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        chosen = " -> ".join(self.table["added"].astype(str)) or "(no steps)"
        return f"PrunePath({len(self.table)} steps: {chosen})"

    @property
    def heads(self) -> list[Head]:
        """The heads in the order they were pruned."""
        return list(as_heads(self.table["added"].tolist()))

    def rows(self) -> pd.DataFrame:
        """Every answer of every step (one row per step x question x configuration), with a
        ``step`` column first; round-trips through Parquet like a sweep's table."""
        frames = [s.table.assign(step=i + 1) for i, s in enumerate(self.sweeps)]
        if not frames:
            return pd.DataFrame(columns=["step"])
        table = pd.concat(frames, ignore_index=True)
        return table.loc[:, ["step", *[c for c in table.columns if c != "step"]]]


def _check_settings(candidates: Sequence[Head], k: int, kind: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a whole number >= 1, got {k!r}")
    if k > len(candidates):
        raise InputError(f"k={k} is more than the {len(candidates)} candidate heads")
    if kind not in ABLATION_KINDS:
        raise InputError(f"unknown ablation kind {kind!r}; use one of {ABLATION_KINDS}")
    if len(set(candidates)) != len(candidates):
        raise InputError("a candidate head is listed twice")


def _set_config(model: LabModel, heads: Sequence[Head], kind: str) -> Config:
    return as_config(model, list(heads), kind=kind)


def _score_candidates(
    result: SweepResult, step: int, options: dict[str, Config], current: str
) -> pd.DataFrame:
    """Each option's accuracy, change against the current set, and flips, on common questions."""
    labels = [current, *(c.label for c in options.values())]
    correct = result.correctness(list(dict.fromkeys(labels)))
    before = correct[current].to_numpy(bool)
    rows = []
    for head, config in options.items():
        after = correct[config.label].to_numpy(bool)
        rows.append(
            {
                "step": step,
                "candidate": head,
                "config": config.label,
                "n": len(after),
                "accuracy": float(after.mean()) if len(after) else float("nan"),
                "step_delta": float(after.mean() - before.mean()) if len(after) else float("nan"),
                "flips": int((after != before).sum()),
            }
        )
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def _best(scores: pd.DataFrame) -> int:
    """Row position of the best option: highest accuracy, then fewest flips, then first."""
    order = np.lexsort(
        (np.arange(len(scores)), scores["flips"].to_numpy(), -scores["accuracy"].to_numpy())
    )
    return int(order[0])


def _step_row(
    result: SweepResult, scores: pd.DataFrame, chosen: int, current: str, seed: int
) -> dict[str, Any]:
    """The path's row for one step: the chosen set against the baseline and the previous set."""
    pick = scores.iloc[chosen]
    correct = result.correctness(list(dict.fromkeys([BASELINE, current, pick["config"]])))
    base = correct[BASELINE].to_numpy(bool)
    before = correct[current].to_numpy(bool)
    after = correct[pick["config"]].to_numpy(bool)
    low, high = paired_bootstrap_ci(base, after, seed=seed)
    others = scores.drop(scores.index[chosen])
    runner = others.iloc[_best(others)] if len(others) else None
    return {
        "step": int(pick["step"]),
        "added": pick["candidate"],
        "config": pick["config"],
        "n_pruned": int(pick["step"]),
        "n": len(after),
        "accuracy": float(after.mean()),
        "baseline_accuracy": float(base.mean()),
        "delta": float(after.mean() - base.mean()),
        "ci_low": low,
        "ci_high": high,
        "p_value": mcnemar_exact(base, after),
        "step_delta": float(after.mean() - before.mean()),
        "step_p_value": mcnemar_exact(before, after),
        "runner_up": None if runner is None else runner["candidate"],
        "runner_up_accuracy": float("nan") if runner is None else float(runner["accuracy"]),
        "n_candidates": len(scores),
    }


def greedy_prune(
    model: LabModel,
    problems: Sequence[Problem],
    candidates: Iterable[Head | str | tuple[int, int]],
    k: int,
    *,
    kind: str = "zero",
    out: str | Path | None = None,
    seed: int = 0,
    **sweep_options: Any,
) -> PrunePath:
    """Greedy forward selection of ``k`` heads to prune together (Michel et al.).

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: the questions every set is scored on.
        candidates: the heads that may be pruned (``"L3H5"``, ``Head`` or ``(layer, head)``).
        k: how many heads to add, one per step.
        kind: how the set is ablated (``"zero"``, ``"mean"`` or ``"resample"``).
        out: the store every step sweeps into (a temporary folder when ``None``): the
            baseline and the current set are generated once, and an interrupted path resumes
            where it stopped.
        seed: bootstrap seed of the step CIs.
        **sweep_options: passed to every step's :func:`~sprint_lab.sweeps.run.sweep`
            (``max_new_tokens``, ``prompt``, ``batch_size``, ``executor``, ``progress``, ...).

    Returns:
        A :class:`PrunePath`; ``sl.viz.prune_path(path)`` draws it.

    Raises:
        InputError: for ``k`` outside ``1..len(candidates)``, an unknown kind, a repeated
            candidate, or a sweep option that would change the candidates (``heads``,
            ``configs``, ``out``).
    """
    heads = list(as_heads(candidates))
    _check_settings(heads, k, kind)
    clash = sorted({"heads", "configs", "out", "resume", "seed"} & set(sweep_options))
    if clash:
        raise InputError(f"greedy_prune chooses {clash} itself; remove them from its options")
    sweep_options.setdefault("progress", False)
    with contextlib.ExitStack() as stack:
        store = (
            Path(out)
            if out is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        return _walk(model, problems, heads, k, kind, store, seed, out, sweep_options)


def _walk(
    model: LabModel,
    problems: Sequence[Problem],
    heads: list[Head],
    k: int,
    kind: str,
    store: Path,
    seed: int,
    out: str | Path | None,
    sweep_options: dict[str, Any],
) -> PrunePath:
    """The greedy steps, all sweeping into one store, so the baseline and the current set,
    answered at an earlier step, are read back instead of generated again."""
    chosen: list[Head] = []
    steps: list[dict[str, Any]] = []
    tried: list[pd.DataFrame] = []
    results: list[SweepResult] = []
    for step in range(1, k + 1):
        options = {
            h.label: _set_config(model, [*chosen, h], kind) for h in heads if h not in chosen
        }
        current = _set_config(model, chosen, kind) if chosen else None
        configs = ([current] if current is not None else []) + list(options.values())
        with warnings.catch_warnings():  # the earlier steps' other options stay in the store
            warnings.filterwarnings("ignore", message=".*outside this sweep's plan")
            result = sweep(model, problems, configs=configs, out=store, **sweep_options)
        if not result.complete:
            raise InputError(f"greedy_prune step {step} did not finish (the sweep was cancelled)")
        label = BASELINE if current is None else current.label
        scores = _score_candidates(result, step, options, label)
        best = _best(scores)
        steps.append(_step_row(result, scores, best, label, seed))
        chosen.append(Head.parse(str(scores.iloc[best]["candidate"])))
        tried.append(scores)
        results.append(result)
    table = pd.DataFrame(steps, columns=PATH_COLUMNS)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy(float))
    meta = {"k": int(k), "kind": kind, "candidates": [h.label for h in heads], "out": out}
    return PrunePath(table, pd.concat(tried, ignore_index=True), results, meta)
