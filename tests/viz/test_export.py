"""Tests for sprint_lab.viz.style, sprint_lab.viz.export and sprint_lab.viz.browser."""

from __future__ import annotations

import os
import stat
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

import sprint_lab.viz.browser as browser
from sprint_lab.viz.export import save_figure
from sprint_lab.viz.heatmap import heatmap
from sprint_lab.viz.style import TEMPLATE, apply_style

requires_chromium = pytest.mark.skipif(
    browser.find_browser() is None,
    reason="static export needs Chrome/Chromium: apt-get install -y chromium (CI installs it)",
)


def test_template_is_publication_ready() -> None:
    layout = TEMPLATE.layout
    assert layout.font.size >= 12 and layout.xaxis.tickfont.size >= 12
    assert layout.xaxis.automargin and layout.yaxis.automargin
    fig = apply_style(go.Figure())
    assert fig.layout.template.layout.font.size == layout.font.size


def test_save_figure_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf, \.html"):
        save_figure(go.Figure(), tmp_path / "fig.jpeg")


def test_save_figure_html(tmp_path: Path, deltas: pd.DataFrame) -> None:
    fig = heatmap(deltas)
    before = fig.to_plotly_json()
    inline = save_figure(fig, tmp_path / "sub" / "fig.html")
    text = inline.read_text(encoding="utf-8")
    assert inline.exists() and "<html" in text and len(text) > 1_000_000  # plotly.js inline
    cdn = save_figure(fig, tmp_path / "cdn.html", include_plotlyjs="cdn")
    cdn_text = cdn.read_text(encoding="utf-8")
    assert "cdn.plot.ly" in cdn_text and len(cdn_text) < 200_000
    assert fig.to_plotly_json() == before  # input not mutated
    with pytest.raises(ValueError, match="include_plotlyjs"):
        save_figure(fig, tmp_path / "x.html", include_plotlyjs=False)


def test_missing_browser_gives_install_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(browser, "find_browser", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        save_figure(go.Figure(), tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def test_find_browser_order(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert browser.find_browser() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(browser, "downloaded_chrome", lambda: None)
    assert browser.find_browser() is None
    with pytest.raises(RuntimeError, match="BROWSER_PATH"):
        browser.require_browser()
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "chromium", 0o755)
    assert browser.find_browser() == str(tmp_path / "chromium")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, deltas_table) -> dict[str, Path]:
    """Export one small figure to every static format (one kaleido launch each)."""
    out = tmp_path_factory.mktemp("export")
    fig = heatmap(deltas_table(), title="export test")
    return {
        suffix: save_figure(fig, out / f"fig{suffix}", width=400, height=300, scale=2)
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


@requires_chromium
def test_export_svg_of_a_placebo_heatmap(tmp_path: Path, deltas: pd.DataFrame) -> None:
    placebos = pd.DataFrame(
        {
            "config": ["none~1", "none~2"],
            "layer": [-1, -1],
            "head": [-1, -1],
            "delta": [-0.01, 0.02],
        }
    )
    fig = heatmap(pd.concat([deltas, placebos], ignore_index=True))
    svg = save_figure(fig, tmp_path / "placebo.svg", width=700, height=400)
    text = svg.read_text(encoding="utf-8")
    ET.fromstring(text.encode())
    assert "placebo min -0.010" in text and "placebo max +0.020" in text
    assert "noise floor |Δ| ≤ 0.020" in text
    assert text.count('class="hm"') == 2  # the heat map and its veil
