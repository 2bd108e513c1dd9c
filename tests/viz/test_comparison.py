"""Tests for sprint_lab.viz.comparison (pass@N curves from a synthetic comparison table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sprint_lab.viz.comparison import pass_at_n_curves


def make_comparison() -> pd.DataFrame:
    ns = [1, 2, 4, 8]
    rows = [{"strategy": "no_prune", "n": 1, "metric": "accuracy", "value": 0.40}]
    for i, n in enumerate(ns):
        rows += [
            {"strategy": "sprint", "n": n, "metric": "pass_at_n", "value": 0.45 + 0.05 * i},
            {
                "strategy": "random_heads",
                "n": n,
                "metric": "pass_at_n",
                "value": 0.42 + 0.04 * i,
                "std": 0.01 * (i + 1),
            },
            {"strategy": "best_of_n", "n": n, "metric": "pass_at_n", "value": 0.43 + 0.04 * i},
            {"strategy": "oracle", "n": n, "metric": "pass_at_n", "value": 0.5 + 0.1 * i},
            {"strategy": "sprint", "n": n, "metric": "majority_at_n", "value": 0.44 + 0.01 * i},
        ]
    return pd.DataFrame(rows)


def test_pass_at_n_curves_traces() -> None:
    fig = pass_at_n_curves(make_comparison())
    groups = [t.legendgroup for t in fig.data if t.showlegend is not False]
    assert groups == ["no_prune", "sprint", "random_heads", "best_of_n", "oracle"]
    by_group = {t.legendgroup: t for t in fig.data if t.showlegend is not False}
    assert by_group["oracle"].line.dash == "dash"
    assert by_group["sprint"].line.dash == "solid"
    flat = by_group["no_prune"]
    assert list(flat.y) == [0.40, 0.40] and list(flat.x) == [1, 8]
    rnd = by_group["random_heads"]
    assert rnd.error_y.visible and list(rnd.error_y.array) == pytest.approx(
        [0.01, 0.02, 0.03, 0.04]
    )
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and band[0].legendgroup == "random_heads"
    assert not by_group["sprint"].error_y.visible
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8]
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "4", "8"]


def test_pass_at_n_curves_other_metric_and_errors() -> None:
    fig = pass_at_n_curves(make_comparison(), metric="majority_at_n")
    assert [t.legendgroup for t in fig.data] == ["no_prune", "sprint"]
    with pytest.raises(ValueError, match="available"):
        pass_at_n_curves(make_comparison(), metric="nope")


def test_pass_at_n_curves_aggregates_seed_rows() -> None:
    seeds = pd.DataFrame(
        {
            "strategy": "random_heads",
            "n": [2, 2, 4, 4],
            "metric": "pass_at_n",
            "value": [0.4, 0.6, 0.5, 0.7],
        }
    )
    (band, line) = pass_at_n_curves(seeds).data
    assert list(line.y) == pytest.approx([0.5, 0.6])
    assert list(line.error_y.array) == pytest.approx([np.std([0.4, 0.6], ddof=1)] * 2)
    assert band.fill == "toself"
