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


def test_importance_vs_delta_leaves_placebos_out(deltas: pd.DataFrame) -> None:
    # Two placebo rows share layer -1, head -1; the (layer, head) join once refused them as
    # "several rows for {'layer': -1, 'head': -1}".
    placebos = pd.DataFrame(
        {"config": ["none~1", "none~2"], "layer": [-1, -1], "head": [-1, -1], "delta": [0.0, 0.01]}
    )
    with_placebos = pd.concat([deltas, placebos], ignore_index=True)
    wide = deltas.pivot(index="layer", columns="head", values="delta") * -3.0
    fig = importance_vs_delta(wide, with_placebos)
    assert fig.layout.meta["n"] == 27 and fig.layout.meta["spearman"] == pytest.approx(-1.0)
    assert "L-1H-1" not in list(fig.data[0].text)
    long = pd.DataFrame({"layer": [-1, 0, 5], "head": [-1, 0, 0], "score": [9.0, 1.0, 2.0]})
    assert importance_vs_delta(long, with_placebos).layout.meta["n"] == 2  # -1/-1 never joins
