"""Tests for sprint_lab.viz.heatmap (built from the synthetic deltas table in conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sprint_lab.viz.heatmap import heatmap
from tests.viz.conftest import BASE, HEAD_EFFECTS


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


# --------------------------------------------------------------------------- placebos


def _cells(fig) -> tuple[list[str], list[str]]:
    trace = fig.data[0]
    return list(trace.y), list(trace.x)


@pytest.mark.parametrize("n_placebos", [1, 2, 3])
def test_heatmap_never_places_placebo_rows_as_cells(placebo_sweep, n_placebos: int) -> None:
    # Before placebos were handled, one placebo drew an "L-1"/"H-1" row and column, and two
    # raised "deltas table has several rows for {'layer': -1, 'head': -1}".
    placebos = {f"none~{i + 1}": BASE for i in range(n_placebos)}
    result = placebo_sweep({**placebos, **HEAD_EFFECTS})
    assert (result.deltas()["layer"] == -1).sum() == n_placebos
    for source in (result, result.deltas()):
        fig = heatmap(source)
        assert _cells(fig) == (["L0", "L1"], ["H0", "H1"])
        z = np.asarray(fig.data[0].z, dtype=float)
        np.testing.assert_allclose(z, [[-2 / 6, 0.0], [1 / 6, 2 / 6]])
        assert list(fig.layout.yaxis.categoryarray) == ["L0", "L1"]
        assert list(fig.layout.xaxis.categoryarray) == ["H0", "H1"]


def test_heatmap_without_config_column_reads_layer_minus_one_as_placebo(deltas) -> None:
    placebo = pd.DataFrame({"layer": [-1, -1], "head": [-1, -1], "delta": [0.01, -0.02]})
    fig = heatmap(pd.concat([deltas.drop(columns=["config"]), placebo], ignore_index=True))
    assert list(fig.data[0].y) == ["L0", "L5", "L10"] and "H-1" not in list(fig.data[0].x)
    assert fig.layout.meta["placebos"] == ["placebo 1", "placebo 2"]
    assert fig.layout.meta["noise_floor"] == pytest.approx(0.02)


def test_heatmap_marks_the_placebo_band(placebo_sweep) -> None:
    # none~1 breaks q0 (delta -1/6), none~2 matches the baseline (0): noise floor F = 1/6.
    broken = [False] + BASE[1:]
    fig = heatmap(placebo_sweep({"none~1": broken, "none~2": BASE, **HEAD_EFFECTS}))
    main, veil = fig.data
    assert fig.layout.meta["placebos"] == ["none~1", "none~2"]
    assert fig.layout.meta["placebo_range"] == pytest.approx([-1 / 6, 0.0])
    assert fig.layout.meta["noise_floor"] == pytest.approx(1 / 6)
    subtitle = fig.layout.title.subtitle.text
    assert subtitle.startswith("* Benjamini-Hochberg q ≤ 0.05 · ")
    assert "placebo Δ from -0.167 to +0.000: noise floor |Δ| ≤ 0.167" in subtitle
    assert "(grey cells lie within it)" in subtitle
    # Colour bar: ticks at the placebo minimum and maximum, and a bar beside it over [-F, F].
    bar = main.colorbar
    ticks = {round(v, 6): t for v, t in zip(bar.tickvals, bar.ticktext, strict=True)}
    # Round ticks every 0.2, minus -0.2 and 0, which would clash with the placebo ticks.
    assert ticks == {round(-1 / 6, 6): "placebo min -0.167", 0.0: "placebo max +0.000", 0.2: "+0.2"}
    assert main.zmax == pytest.approx(2 / 6) and main.zmin == pytest.approx(-2 / 6)
    (shape,) = fig.layout.shapes
    assert (shape.xref, shape.yref, shape.xsizemode) == ("paper", "paper", "pixel")
    assert shape.xanchor == main.colorbar.x and shape.x1 < main.colorbar.xpad
    assert (shape.y0, shape.y1) == (pytest.approx(0.25), pytest.approx(0.75))  # -1/6, +1/6
    assert main.colorbar.ypad == 0 and main.colorbar.len == 1  # the bar spans paper y 0..1
    # The veil: exactly the cells with |delta| <= F (L0H1 = 0, L1H0 = +1/6 at the edge).
    assert veil.type == "heatmap" and veil.name == "within placebo noise"
    assert veil.hoverinfo == "skip" and veil.showscale is False
    veiled = np.isfinite(np.asarray(veil.z, dtype=float))
    np.testing.assert_array_equal(veiled, [[False, True], [True, False]])
    assert (list(veil.x), list(veil.y)) == (list(main.x), list(main.y))


def test_heatmap_zero_placebo_band(placebo_sweep) -> None:
    fig = heatmap(placebo_sweep({"none~1": BASE, "none~2": BASE, **HEAD_EFFECTS}))
    main, veil = fig.data
    assert fig.layout.meta["noise_floor"] == 0.0
    subtitle = fig.layout.title.subtitle.text
    assert "placebo Δ all +0.000: noise floor |Δ| ≤ 0.000 (no batch noise)" in subtitle
    assert "placebo +0.000" in main.colorbar.ticktext
    assert "+0.33" not in main.colorbar.ticktext and "0" not in main.colorbar.ticktext
    veiled = np.isfinite(np.asarray(veil.z, dtype=float))
    np.testing.assert_array_equal(veiled, [[False, True], [False, False]])  # only delta == 0
    (shape,) = fig.layout.shapes
    assert shape.y0 == shape.y1 == pytest.approx(0.5)  # a line at 0


def test_heatmap_zero_placebo_deltas_whose_answers_flip(placebo_sweep) -> None:
    swapped = [False] + BASE[1:4] + [True, False]  # one flip each way: delta 0, 2 of 6 flip
    fig = heatmap(placebo_sweep({"none~1": swapped, **HEAD_EFFECTS}))
    assert fig.layout.meta["noise_floor"] == 0.0
    assert "(yet up to 33.3% of answers flip: batch noise cancelled out)" in (
        fig.layout.title.subtitle.text
    )


def test_heatmap_colour_range_covers_the_band(placebo_sweep) -> None:
    broken = [False, False, False] + BASE[3:]  # placebo delta -0.5, heads only up to +-2/6
    fig = heatmap(placebo_sweep({"none~1": broken, **HEAD_EFFECTS}))
    assert fig.data[0].zmax == pytest.approx(0.5) and fig.data[0].zmin == pytest.approx(-0.5)
    assert np.isfinite(np.asarray(fig.data[1].z, dtype=float)).all()  # every head within
    assert fig.layout.shapes[0].y0 == pytest.approx(0.0)


def test_heatmap_placebo_without_answers_yet(deltas) -> None:
    waiting = pd.DataFrame({"config": ["none~1"], "layer": [-1], "head": [-1], "delta": [np.nan]})
    fig = heatmap(pd.concat([deltas, waiting], ignore_index=True))
    assert len(fig.data) == 1 and not fig.layout.shapes
    assert fig.layout.meta["noise_floor"] is None and fig.layout.meta["placebo_range"] is None
    assert "1 placebo, no answers yet" in fig.layout.title.subtitle.text


def test_heatmap_other_metric_only_states_the_placebo_deltas(placebo_sweep) -> None:
    broken = [False] + BASE[1:]
    fig = heatmap(placebo_sweep({"none~1": broken, **HEAD_EFFECTS}), metric="accuracy")
    (trace,) = fig.data
    assert trace.colorbar.tickvals is None and not fig.layout.shapes
    assert "placebo Δ -0.167: noise floor |Δ| ≤ 0.167" in fig.layout.title.subtitle.text
    assert "grey" not in fig.layout.title.subtitle.text


def test_heatmap_facets_with_placebos(placebo_sweep) -> None:
    broken = [False] + BASE[1:]  # q0 is level 1: level 1 placebo delta -1/3, level 2 0
    fig = heatmap(placebo_sweep({"none~1": broken, **HEAD_EFFECTS}), by="level")
    assert [t.name for t in fig.data] == [
        "Level 1",
        "within placebo noise",
        "Level 2",
        "within placebo noise",
    ]
    assert [t.showscale for t in fig.data] == [True, False, False, False]
    assert fig.data[0].xaxis == fig.data[1].xaxis != fig.data[2].xaxis == fig.data[3].xaxis
    assert fig.layout.meta["noise_floor"] == pytest.approx(1 / 3)  # over all groups
    assert [a.text for a in fig.layout.annotations] == ["Level 1 (n=3)", "Level 2 (n=3)"]
    for trace in fig.data:
        assert list(trace.y) == ["L0", "L1"]


def test_heatmap_without_placebos_is_unchanged(deltas) -> None:
    fig = heatmap(deltas)
    (trace,) = fig.data
    assert fig.layout.meta is None and not fig.layout.shapes
    assert trace.colorbar.tickvals is None and trace.colorbar.x is None
    assert fig.layout.title.subtitle.text == "* Benjamini-Hochberg q ≤ 0.05"


# --------------------------------------------------------------------------- configuration axis


def test_heatmap_config_axis_for_sets_layers_and_kinds(placebo_sweep) -> None:
    effects = {
        "L0H0": HEAD_EFFECTS["L0H0"],
        "L0H0@mean": BASE,
        "L0H0+L1H1": HEAD_EFFECTS["L1H1"],
        "L1": HEAD_EFFECTS["L1H0"],
        "none~1": BASE,
    }
    result = placebo_sweep(effects)
    fig = heatmap(result)
    trace = fig.data[0]
    order = [c for c in result.deltas()["config"] if c != "none~1"]  # the table's order
    assert sorted(order) == sorted(effects.keys() - {"none~1"})
    assert list(trace.y) == order
    assert fig.layout.yaxis.title.text == "configuration"
    z = dict(zip(trace.y, np.asarray(trace.z, dtype=float)[:, 0], strict=True))
    assert z == pytest.approx({"L0H0": -2 / 6, "L0H0@mean": 0.0, "L0H0+L1H1": 2 / 6, "L1": 1 / 6})
    assert fig.layout.meta["placebos"] == ["none~1"]
    veil = dict(
        zip(trace.y, np.isfinite(np.asarray(fig.data[1].z, dtype=float)[:, 0]), strict=True)
    )
    assert [c for c, veiled in veil.items() if veiled] == ["L0H0@mean"]  # only the zero delta

    by_level = heatmap(result, by="level")
    assert len([t for t in by_level.data if t.name != "within placebo noise"]) == 1
    assert list(by_level.data[0].x) == ["Level 1", "Level 2"]
    assert np.asarray(by_level.data[0].z, dtype=float).shape == (4, 2)


def test_heatmap_axis_setting(deltas: pd.DataFrame) -> None:
    forced = heatmap(deltas, axis="config")
    assert len(forced.data[0].y) == len(deltas)
    assert list(heatmap(deltas, axis="grid").data[0].y) == ["L0", "L5", "L10"]
    with pytest.raises(ValueError, match="axis must be"):
        heatmap(deltas, axis="rows")
