"""Synthetic inputs shared by the figure tests: a deltas table with known values, a fake sweep."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pandas as pd
import pytest

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
