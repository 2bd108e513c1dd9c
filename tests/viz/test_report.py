"""Tests for sprint_lab.viz.report: the self-contained HTML sweep report and the top-heads table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from sprint_lab.core.heads import BASELINE
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.report import format_top_heads, top_heads_table, write_report

HOSTILE = "<script>alert('x')</script>"


def _result(complete: bool = True, meta: dict | None = None) -> SweepResult:
    """6 questions; the baseline gets 4 right; L0H0 breaks one, L1H1 fixes both, L0H1 = L1H0 = 0."""
    baseline = [True, True, True, True, False, False]
    effects = {
        "L0H0": [False, True, True, True, False, False],
        "L0H1": baseline,
        "L1H0": baseline,
        "L1H1": [True] * 6,
    }
    rows = [(f"q{i}", BASELINE, -1, -1, ok) for i, ok in enumerate(baseline)]
    for config, oks in effects.items():
        layer, head = int(config[1]), int(config[3])
        rows += [(f"q{i}", config, layer, head, ok) for i, ok in enumerate(oks)]
    table = pd.DataFrame(rows, columns=["question_id", "config", "layer", "head", "correct"])
    meta = meta if meta is not None else {"model": "tiny", "dtype": "float32", "prompt": "plain"}
    return SweepResult(table, meta, complete=complete)


@pytest.fixture()
def page(tmp_path: Path) -> str:
    meta = {"model": HOSTILE, "dtype": "float32", "prompt": "a & b", "max_new_tokens": 16}
    path = write_report(_result(meta=meta), tmp_path / "sub" / "report.html", top=3)
    return path.read_text(encoding="utf-8")


def test_top_heads_table_orders_by_delta_then_q() -> None:
    table = top_heads_table(_result(), n=3)
    assert list(table.columns) == [
        "config",
        "n",
        "baseline_accuracy",
        "accuracy",
        "delta",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
    ]
    assert table["config"].iloc[0] == "L1H1" and len(table) == 3
    assert table["delta"].iloc[0] == pytest.approx(2 / 6)
    assert table["delta"].is_monotonic_decreasing
    assert set(table["config"]) <= {"L0H0", "L0H1", "L1H0", "L1H1"}


def test_format_top_heads_text_and_empty_sweep() -> None:
    text = format_top_heads(_result(), n=2)
    lines = text.splitlines()
    assert lines[0].split() == [
        "config",
        "n",
        "baseline_accuracy",
        "accuracy",
        "delta",
        "ci",
        "p_value",
        "q_value",
    ]
    assert lines[1].split()[0] == "L1H1" and len(lines) == 3
    baseline_only = _result()
    baseline_only.table = baseline_only.table[baseline_only.table["config"] == BASELINE]
    assert format_top_heads(baseline_only) == "(no pruned heads in this sweep)"


def test_report_escapes_untrusted_settings(page: str) -> None:
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert HOSTILE not in page
    assert "a &amp; b" in page
    assert "<td>max_new_tokens</td><td>16</td>" in page


def test_report_has_summary_heatmap_and_top_heads(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and "<meta charset='utf-8'>" in page
    assert "6 questions x 4 pruned heads" in page and "(30 answers)" in page
    assert "Baseline accuracy: 0.667" in page
    assert "<h2>Accuracy delta per head</h2>" in page
    assert '"type":"heatmap"' in page and "Plotly.newPlot" in page
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js inline: offline
    assert "<h2>Top 3 heads</h2>" in page
    top = page[page.index("<h2>Top 3 heads</h2>") :]
    configs = re.findall(r"<td>(L\dH\d)</td>", top)
    assert configs == list(top_heads_table(_result(), 3)["config"])
    assert "Incomplete sweep" not in page


def test_report_marks_an_incomplete_sweep(tmp_path: Path) -> None:
    path = write_report(_result(complete=False), tmp_path / "partial.html")
    page = path.read_text(encoding="utf-8")
    banner = page.index("<b>Incomplete sweep:</b>")
    assert page.index("<h1>sprint_lab sweep report</h1>") < banner < page.index("<table>")
    assert "<h2>Top 15 heads</h2>" in page
