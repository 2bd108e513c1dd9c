"""Synthetic inputs shared by the figure tests: a deltas table with known values, a fake sweep,
and sweeps with placebo runs built by hand."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pandas as pd
import pytest

from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.rows import config_position

#: The baseline's verdicts on six questions (4 right).
BASE = [True, True, True, True, False, False]
#: Head verdicts with known deltas: L0H0 -2/6, L0H1 0, L1H0 +1/6, L1H1 +2/6.
HEAD_EFFECTS = {
    "L0H0": [False, False, True, True, False, False],
    "L0H1": BASE,
    "L1H0": [True, True, True, True, True, False],
    "L1H1": [True] * 6,
}

LAYERS = [0, 5, 10]
HEADS = list(range(9))


def _delta(layer: int, head: int) -> float:
    return (layer - 5) / 100 + (head - 4) / 1000


def _significant(layer: int, head: int) -> bool:
    return (layer + head) % 4 == 0


def make_deltas(levels: list[int] | None = None) -> pd.DataFrame:
    """Synthetic deltas table with known values, rows deliberately shuffled."""
    rows = []
    for level in levels or [None]:
        for layer in LAYERS:
            for head in HEADS:
                d = _delta(layer, head) + (level or 0) / 1000
                row = {
                    "config": f"L{layer}H{head}",
                    "layer": layer,
                    "head": head,
                    "n": 100 + layer,
                    "accuracy": 0.5 + d,
                    "baseline_accuracy": 0.5,
                    "delta": d,
                    "ci_low": d - 0.02,
                    "ci_high": d + 0.02,
                    "p_value": 0.001 if _significant(layer, head) else 0.4,
                    "q_value": 0.01 if _significant(layer, head) else 0.6,
                }
                if level is not None:
                    row["level"] = level
                rows.append(row)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


class FakeSweep:
    """Stand-in for SweepResult: only ``.deltas(by=...)``."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def deltas(self, by: str | None = None) -> pd.DataFrame:
        self.calls.append(by)
        return make_deltas([1, 2, 3] if by == "level" else None)


@pytest.fixture()
def deltas() -> pd.DataFrame:
    return make_deltas()


@pytest.fixture()
def grid() -> NS:
    """The synthetic grid: its layers, heads, and the delta / significance of each cell."""
    return NS(layers=LAYERS, heads=HEADS, delta=_delta, significant=_significant)


@pytest.fixture(scope="session")
def deltas_table():
    """The builder of the synthetic deltas table (``levels`` adds a ``level`` column)."""
    return make_deltas


@pytest.fixture()
def fake_sweep() -> FakeSweep:
    return FakeSweep()


def make_sweep(
    configs: dict[str, list[bool]], *, complete: bool = True, meta: dict | None = None
) -> SweepResult:
    """A SweepResult with every schema column: the baseline :data:`BASE` plus ``configs``.

    Each question appears twice with levels 1 and 2 alternating (q0 level 1, q1 level 2, ...).
    """
    rows = []
    for config, oks in {"none": BASE, **configs}.items():
        layer, head = config_position(config)
        for i, ok in enumerate(oks):
            rows.append(
                {
                    "question_id": f"q{i}",
                    "config": config,
                    "layer": layer,
                    "head": head,
                    "correct": ok,
                    "n_tokens": 4,
                    "completion": f"answer {int(ok)}",
                    "extracted": str(int(ok)),
                    "finish_reason": "eos",
                    "extractor": "flexible:last_number",
                    "level": 1 + i % 2,
                }
            )
    meta = meta if meta is not None else {"model": "tiny", "dtype": "float32"}
    return SweepResult(pd.DataFrame(rows), meta, complete=complete)


@pytest.fixture(scope="session")
def placebo_sweep():
    """The builder of hand-made sweeps (:func:`make_sweep`)."""
    return make_sweep
