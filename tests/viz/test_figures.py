"""Tests for sprint_lab.viz.figures (figures built from synthetic inputs) and figure export."""

from __future__ import annotations

import os
import stat
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from sprint_lab.viz import browser
from sprint_lab.viz import figures as plots

LAYERS = [0, 5, 10]
HEADS = list(range(9))

requires_chromium = pytest.mark.skipif(
    browser.find_browser() is None,
    reason="static export needs Chrome/Chromium: apt-get install -y chromium (CI installs it)",
)


# --------------------------------------------------------------------------- fixtures


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


def make_selector(n_questions: int = 6) -> tuple[NS, list[NS]]:
    import torch

    heads = [NS(label=f"L{layer}H{h}", layer=layer, head=h) for layer in (0, 3) for h in (0, 1)]
    problems = [
        NS(
            id=f"q{i}",
            question=f"Question {i}: " + "compute <x> " * 20,
            level=1 + i % 3,
            subject="algebra" if i % 2 else "geometry",
        )
        for i in range(n_questions)
    ]
    # Mean score per head column: col 2 highest, then 0, 3, 1. Best head per question varies.
    scores = torch.tensor(
        [
            [0.2, 0.0, 0.9, 0.1],
            [0.8, 0.1, 0.3, 0.0],
            [0.1, 0.0, 0.7, 0.6],
            [0.9, 0.0, 0.2, 0.1],
            [0.3, 0.2, 0.95, 0.2],
            [0.1, 0.3, 0.2, 0.5],
        ][:n_questions]
    )
    rng = np.random.default_rng(0)
    qvec = torch.tensor(rng.normal(size=(n_questions, 5)), dtype=torch.float32)
    hvec = torch.tensor(rng.normal(size=(len(heads), 5)), dtype=torch.float32)
    history = pd.DataFrame(
        {
            "epoch": [3, 1, 2],
            "train_loss": [0.6, 1.0, 0.8],
            "val_loss": [0.9, 1.1, 1.0],
            "val_top1_hit": [0.3, 0.1, 0.2],
            "train_top1_hit": [0.5, 0.2, 0.3],
        }
    )
    selector = NS(
        heads=heads,
        history=history,
        head_vectors=hvec,
        scores=lambda ps: scores[: len(ps)],
        question_vectors=lambda ps: qvec[: len(ps)],
    )
    return selector, problems


# --------------------------------------------------------------------------- heatmap


def test_heatmap_grid_order_and_values(deltas: pd.DataFrame) -> None:
    fig = plots.heatmap(deltas)
    (trace,) = fig.data
    assert list(trace.y) == ["L0", "L5", "L10"]
    assert list(trace.x) == [f"H{h}" for h in HEADS]
    z = np.asarray(trace.z, dtype=float)
    assert z.shape == (3, 9)
    expected = np.array([[_delta(layer, h) for h in HEADS] for layer in LAYERS])
    np.testing.assert_allclose(z, expected)
    assert fig.layout.yaxis.type == "category"
    assert list(fig.layout.yaxis.categoryarray) == ["L0", "L5", "L10"]


def test_heatmap_diverging_scale_centred_on_zero(deltas: pd.DataFrame) -> None:
    trace = plots.heatmap(deltas).data[0]
    bound = deltas["delta"].abs().max()
    assert trace.zmid == 0
    assert trace.zmin == pytest.approx(-bound) and trace.zmax == pytest.approx(bound)
    assert trace.colorscale[0][1] != trace.colorscale[-1][1]  # RdBu, two distinct ends


def test_heatmap_sequential_for_accuracy(deltas: pd.DataFrame) -> None:
    trace = plots.heatmap(deltas, metric="accuracy").data[0]
    assert trace.zmid is None
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)


@pytest.mark.parametrize("alpha", [0.05, 0.005])
def test_heatmap_marks_exactly_significant_cells(deltas: pd.DataFrame, alpha: float) -> None:
    trace = plots.heatmap(deltas, alpha=alpha).data[0]
    marked = np.array(trace.text) == "*"
    expected = np.array(
        [[_significant(layer, h) and 0.01 <= alpha for h in HEADS] for layer in LAYERS]
    )
    np.testing.assert_array_equal(marked, expected)
    assert trace.texttemplate == "%{text}"


def test_heatmap_hover_has_ci_p_q_n(deltas: pd.DataFrame) -> None:
    trace = plots.heatmap(deltas).data[0]
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
    trace = plots.heatmap(partial).data[0]
    z = np.asarray(trace.z, dtype=float)
    assert np.isnan(z[2, 3]) and np.isfinite(np.delete(z.ravel(), 2 * 9 + 3)).all()
    assert trace.text[2][3] == ""


def test_heatmap_from_sweep_object_and_facets() -> None:
    sweep = FakeSweep()
    fig = plots.heatmap(sweep, by="level")
    assert sweep.calls == ["level"]
    assert len(fig.data) == 3
    assert len({t.xaxis for t in fig.data}) == 3
    assert [t.showscale for t in fig.data] == [True, False, False]
    assert len({(t.zmin, t.zmax) for t in fig.data}) == 1  # shared colour scale
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Level 1 (n=110)", "Level 2 (n=110)", "Level 3 (n=110)"]
    for trace in fig.data:
        assert list(trace.y) == ["L0", "L5", "L10"]


def test_heatmap_rejects_duplicates_and_missing_columns() -> None:
    per_level = make_deltas([1, 2])
    with pytest.raises(ValueError, match="by='level'"):
        plots.heatmap(per_level)
    with pytest.raises(ValueError, match="missing column"):
        plots.heatmap(per_level, by="subject")


# --------------------------------------------------------------------------- curves


def test_pass_at_n_curves_traces() -> None:
    fig = plots.pass_at_n_curves(make_comparison())
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
    fig = plots.pass_at_n_curves(make_comparison(), metric="majority_at_n")
    assert [t.legendgroup for t in fig.data] == ["no_prune", "sprint"]
    with pytest.raises(ValueError, match="available"):
        plots.pass_at_n_curves(make_comparison(), metric="nope")


def test_pass_at_n_curves_aggregates_seed_rows() -> None:
    seeds = pd.DataFrame(
        {
            "strategy": "random_heads",
            "n": [2, 2, 4, 4],
            "metric": "pass_at_n",
            "value": [0.4, 0.6, 0.5, 0.7],
        }
    )
    (band, line) = plots.pass_at_n_curves(seeds).data
    assert list(line.y) == pytest.approx([0.5, 0.6])
    assert list(line.error_y.array) == pytest.approx([np.std([0.4, 0.6], ddof=1)] * 2)
    assert band.fill == "toself"


# --------------------------------------------------------------------------- selector


def test_selector_history_two_panels() -> None:
    selector, _ = make_selector()
    fig = plots.selector_history(selector)
    names = {t.name: t for t in fig.data}
    assert set(names) == {"train loss", "val loss", "train top-1 hit", "val top-1 hit"}
    assert names["val loss"].yaxis == "y" and names["val top-1 hit"].yaxis == "y2"
    assert list(names["train loss"].x) == [1, 2, 3]  # sorted by epoch
    assert fig.layout.yaxis2.tickformat == ".0%"
    partial = selector.history[["epoch", "val_loss"]]
    assert [t.name for t in plots.selector_history(partial).data] == ["val loss"]
    with pytest.raises(ValueError, match="empty"):
        plots.selector_history(selector.history.iloc[:0])


def test_question_head_preferences_sorting_and_hover() -> None:
    selector, problems = make_selector()
    fig = plots.question_head_preferences(selector, problems, max_chars=40)
    (trace,) = fig.data
    assert list(trace.x) == ["L3H0", "L0H0", "L3H1", "L0H1"]  # by mean score
    # rows grouped by best head (in column order), best score first within a group
    assert list(trace.y) == ["q4", "q0", "q2", "q3", "q1", "q5"]
    z = np.asarray(trace.z)
    assert z.shape == (6, 4) and z[0, 0] == pytest.approx(0.95)
    hover = trace.customdata[0][0]
    assert hover.startswith("Question 4:") and hover.endswith("…") and len(hover) < 60
    assert "&lt;x&gt;" in hover  # escaped for the hover label
    assert "%{customdata}" in trace.hovertemplate


def test_question_head_preferences_top_and_unsorted() -> None:
    selector, problems = make_selector()
    top = plots.question_head_preferences(selector, problems, top=2).data[0]
    assert list(top.x) == ["L3H0", "L0H0"]
    raw = plots.question_head_preferences(selector, problems, sort_by=None).data[0]
    assert list(raw.x) == ["L0H0", "L0H1", "L3H0", "L3H1"]
    assert list(raw.y) == [p.id for p in problems]
    with pytest.raises(ValueError, match="sort_by"):
        plots.question_head_preferences(selector, problems, sort_by="alpha")
    with pytest.raises(ValueError, match="shape"):
        plots.question_head_preferences(selector, problems[:3] + problems)


def test_embedding_map_pca_and_groups() -> None:
    selector, problems = make_selector()
    fig = plots.embedding_map(selector, problems)
    assert [t.name for t in fig.data] == ["Level 1", "Level 2", "Level 3", "heads"]
    heads = fig.data[-1]
    assert list(heads.text) == ["L0H0", "L0H1", "L3H0", "L3H1"]
    assert heads.marker.symbol == "diamond"
    points = np.vstack([np.column_stack([t.x, t.y]) for t in fig.data])
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-9)  # PCA on the union
    assert sum(len(t.x) for t in fig.data[:-1]) == len(problems)
    assert "PC1" in fig.layout.xaxis.title.text


def test_embedding_map_subject_fallback_and_bad_method() -> None:
    selector, problems = make_selector()
    no_level = [NS(id=p.id, question=p.question, subject=p.subject) for p in problems]
    fig = plots.embedding_map(selector, no_level)
    assert [t.name for t in fig.data] == ["algebra", "geometry", "heads"]
    plain = plots.embedding_map(selector, problems, color_by=None)
    assert [t.name for t in plain.data] == ["questions", "heads"]
    with pytest.raises(ValueError, match="pca"):
        plots.embedding_map(selector, problems, method="tsne")


# --------------------------------------------------------------------------- importance


def test_importance_vs_delta_wide_and_long(deltas: pd.DataFrame) -> None:
    wide = deltas.pivot(index="layer", columns="head", values="delta") * -3.0
    fig = plots.importance_vs_delta(wide, deltas, proxy_name="ablation proxy")
    assert fig.layout.meta["spearman"] == pytest.approx(-1.0)
    assert fig.layout.meta["pearson"] == pytest.approx(-1.0)
    assert fig.layout.meta["n"] == 27
    assert "Spearman" in fig.layout.title.subtitle.text
    assert "Pearson" in fig.layout.title.subtitle.text
    assert fig.layout.xaxis.title.text == "ablation proxy"
    (scatter,) = fig.data
    assert len(scatter.x) == 27 and scatter.error_y.array is not None
    long = wide.stack().rename("score").rename_axis(["layer", "head"]).reset_index()
    fig_long = plots.importance_vs_delta(long, FakeSweep())
    assert fig_long.layout.meta["spearman"] == pytest.approx(-1.0)


def test_importance_vs_delta_degenerate(deltas: pd.DataFrame) -> None:
    flat = pd.DataFrame({"layer": [0, 5], "head": [0, 0], "score": [1.0, 1.0]})
    fig = plots.importance_vs_delta(flat, deltas)
    assert np.isnan(fig.layout.meta["spearman"]) and "n/a" in fig.layout.title.subtitle.text
    with pytest.raises(ValueError, match="both"):
        plots.importance_vs_delta(flat.assign(layer=[98, 99]), deltas)


# --------------------------------------------------------------------------- style & export


def test_template_is_publication_ready() -> None:
    layout = plots.TEMPLATE.layout
    assert layout.font.size >= 12 and layout.xaxis.tickfont.size >= 12
    assert layout.xaxis.automargin and layout.yaxis.automargin
    fig = plots.apply_style(go.Figure())
    assert fig.layout.template.layout.font.size == layout.font.size


def test_save_figure_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf, \.html"):
        plots.save_figure(go.Figure(), tmp_path / "fig.jpeg")


def test_save_figure_html(tmp_path: Path, deltas: pd.DataFrame) -> None:
    fig = plots.heatmap(deltas)
    before = fig.to_plotly_json()
    inline = plots.save_figure(fig, tmp_path / "sub" / "fig.html")
    text = inline.read_text(encoding="utf-8")
    assert inline.exists() and "<html" in text and len(text) > 1_000_000  # plotly.js inline
    cdn = plots.save_figure(fig, tmp_path / "cdn.html", include_plotlyjs="cdn")
    cdn_text = cdn.read_text(encoding="utf-8")
    assert "cdn.plot.ly" in cdn_text and len(cdn_text) < 200_000
    assert fig.to_plotly_json() == before  # input not mutated
    with pytest.raises(ValueError, match="include_plotlyjs"):
        plots.save_figure(fig, tmp_path / "x.html", include_plotlyjs=False)


def test_missing_browser_gives_install_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_browser, "find_browser", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        plots.save_figure(go.Figure(), tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def test_find_browser_order(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert browser.find_browser() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_browser, "_choreographer_download", lambda: None)
    assert browser.find_browser() is None
    with pytest.raises(RuntimeError, match="BROWSER_PATH"):
        browser.require_browser()
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "chromium", 0o755)
    assert browser.find_browser() == str(tmp_path / "chromium")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Export one small figure to every static format (one kaleido launch each)."""
    out = tmp_path_factory.mktemp("export")
    fig = plots.heatmap(make_deltas(), title="export test")
    return {
        suffix: plots.save_figure(fig, out / f"fig{suffix}", width=400, height=300, scale=2)
        for suffix in (".png", ".svg", ".pdf")
    }


@requires_chromium
def test_export_png_dimensions(exported: dict[str, Path]) -> None:
    data = exported[".png"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (400 * 2, 300 * 2)


@requires_chromium
def test_export_svg_is_xml(exported: dict[str, Path]) -> None:
    root = ET.fromstring(exported[".svg"].read_bytes())
    assert root.tag.endswith("svg")
    assert "export test" in exported[".svg"].read_text(encoding="utf-8")


@requires_chromium
def test_export_pdf(exported: dict[str, Path]) -> None:
    data = exported[".pdf"].read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 1000
