"""Tests for sprint_lab.viz.heatmap (built from the synthetic deltas table in conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sprint_lab.viz.heatmap import heatmap


def test_heatmap_grid_order_and_values(deltas: pd.DataFrame, grid) -> None:
    fig = heatmap(deltas)
    (trace,) = fig.data
    assert list(trace.y) == ["L0", "L5", "L10"]
    assert list(trace.x) == [f"H{h}" for h in grid.heads]
    z = np.asarray(trace.z, dtype=float)
    assert z.shape == (3, 9)
    expected = np.array([[grid.delta(layer, h) for h in grid.heads] for layer in grid.layers])
    np.testing.assert_allclose(z, expected)
    assert fig.layout.yaxis.type == "category"
    assert list(fig.layout.yaxis.categoryarray) == ["L0", "L5", "L10"]


def test_heatmap_diverging_scale_centred_on_zero(deltas: pd.DataFrame) -> None:
    trace = heatmap(deltas).data[0]
    bound = deltas["delta"].abs().max()
    assert trace.zmid == 0
    assert trace.zmin == pytest.approx(-bound) and trace.zmax == pytest.approx(bound)
    assert trace.colorscale[0][1] != trace.colorscale[-1][1]  # RdBu, two distinct ends


def test_heatmap_sequential_for_accuracy(deltas: pd.DataFrame) -> None:
    trace = heatmap(deltas, metric="accuracy").data[0]
    assert trace.zmid is None
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)


@pytest.mark.parametrize("alpha", [0.05, 0.005])
def test_heatmap_marks_exactly_significant_cells(deltas: pd.DataFrame, grid, alpha: float) -> None:
    trace = heatmap(deltas, alpha=alpha).data[0]
    marked = np.array(trace.text) == "*"
    expected = np.array(
        [
            [grid.significant(layer, h) and 0.01 <= alpha for h in grid.heads]
            for layer in grid.layers
        ]
    )
    np.testing.assert_array_equal(marked, expected)
    assert trace.texttemplate == "%{text}"


def test_heatmap_hover_has_ci_p_q_n(deltas: pd.DataFrame) -> None:
    trace = heatmap(deltas).data[0]
    for token in ("accuracy", "baseline", "CI", "p =", "q =", "n ="):
        assert token in trace.hovertemplate
    custom = np.asarray(trace.customdata, dtype=float)
    assert custom.shape == (3, 9, 8)
    row = deltas[(deltas["layer"] == 5) & (deltas["head"] == 2)].iloc[0]
    fields = [
        "accuracy",
        "baseline_accuracy",
        "delta",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
        "n",
    ]
    np.testing.assert_allclose(custom[1, 2], row[fields].to_numpy(float))


def test_heatmap_missing_cells_blank(deltas: pd.DataFrame) -> None:
    partial = deltas[~((deltas["layer"] == 10) & (deltas["head"] == 3))]
    trace = heatmap(partial).data[0]
    z = np.asarray(trace.z, dtype=float)
    assert np.isnan(z[2, 3]) and np.isfinite(np.delete(z.ravel(), 2 * 9 + 3)).all()
    assert trace.text[2][3] == ""


def test_heatmap_from_sweep_object_and_facets(fake_sweep) -> None:
    sweep = fake_sweep
    fig = heatmap(sweep, by="level")
    assert sweep.calls == ["level"]
    assert len(fig.data) == 3
    assert len({t.xaxis for t in fig.data}) == 3
    assert [t.showscale for t in fig.data] == [True, False, False]
    assert len({(t.zmin, t.zmax) for t in fig.data}) == 1  # shared colour scale
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Level 1 (n=110)", "Level 2 (n=110)", "Level 3 (n=110)"]
    for trace in fig.data:
        assert list(trace.y) == ["L0", "L5", "L10"]


def test_heatmap_rejects_duplicates_and_missing_columns(deltas_table) -> None:
    per_level = deltas_table([1, 2])
    with pytest.raises(ValueError, match="by='level'"):
        heatmap(per_level)
    with pytest.raises(ValueError, match="missing column"):
        heatmap(per_level, by="subject")
