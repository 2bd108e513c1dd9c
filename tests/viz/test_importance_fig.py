"""Tests for sprint_lab.viz.importance_fig (a proxy built to be perfectly rank-correlated)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sprint_lab.viz.importance_fig import importance_vs_delta


def test_importance_vs_delta_wide_and_long(deltas: pd.DataFrame, fake_sweep) -> None:
    wide = deltas.pivot(index="layer", columns="head", values="delta") * -3.0
    fig = importance_vs_delta(wide, deltas, proxy_name="ablation proxy")
    assert fig.layout.meta["spearman"] == pytest.approx(-1.0)
    assert fig.layout.meta["pearson"] == pytest.approx(-1.0)
    assert fig.layout.meta["n"] == 27
    assert "Spearman" in fig.layout.title.subtitle.text
    assert "Pearson" in fig.layout.title.subtitle.text
    assert fig.layout.xaxis.title.text == "ablation proxy"
    (scatter,) = fig.data
    assert len(scatter.x) == 27 and scatter.error_y.array is not None
    long = wide.stack().rename("score").rename_axis(["layer", "head"]).reset_index()
    fig_long = importance_vs_delta(long, fake_sweep)
    assert fig_long.layout.meta["spearman"] == pytest.approx(-1.0)


def test_importance_vs_delta_degenerate(deltas: pd.DataFrame) -> None:
    flat = pd.DataFrame({"layer": [0, 5], "head": [0, 0], "score": [1.0, 1.0]})
    fig = importance_vs_delta(flat, deltas)
    assert np.isnan(fig.layout.meta["spearman"]) and "n/a" in fig.layout.title.subtitle.text
    with pytest.raises(ValueError, match="both"):
        importance_vs_delta(flat.assign(layer=[98, 99]), deltas)
