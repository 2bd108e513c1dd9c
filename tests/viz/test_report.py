"""Tests for sprint_lab.viz.report: the self-contained HTML sweep report and the top-heads table."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sprint_lab.core.heads import BASELINE
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.report import (
    PLACEBO_COLUMNS,
    format_top_heads,
    placebo_table,
    placebo_verdict,
    power_statement,
    top_heads_table,
    write_report,
)
from tests.viz.conftest import BASE, HEAD_EFFECTS

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
        "mde",
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


# --------------------------------------------------------------------------- placebos and power


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}</h2>")
    return page[start : page.index("<h2>", start + 1)]


def test_placebo_table_and_verdicts(placebo_sweep) -> None:
    broken = [False] + BASE[1:]
    result = placebo_sweep({"none~1": BASE, "none~2": broken, **HEAD_EFFECTS})
    table = placebo_table(result)
    assert list(table.columns) == PLACEBO_COLUMNS
    assert table["config"].tolist() == ["none~1", "none~2"]
    assert table["delta"].tolist() == pytest.approx([0.0, -1 / 6])
    assert table["discordance"].tolist() == pytest.approx([0.0, 1 / 6])
    assert table["p_value"].tolist() == pytest.approx([1.0, 1.0])
    assert placebo_verdict(table) == (
        "Placebo deltas up to 0.167: head deltas of size 0.167 or less are within batch noise."
    )
    exact = placebo_table(placebo_sweep({"none~1": BASE, "none~2": BASE, **HEAD_EFFECTS}))
    assert placebo_verdict(exact) == "All placebo deltas are 0: batch noise does not contribute."
    swapped = [False] + BASE[1:4] + [True, False]  # one flip each way: delta 0, 2 of 6 flip
    cancelled = placebo_table(placebo_sweep({"none~1": swapped, **HEAD_EFFECTS}))
    assert cancelled["delta"].tolist() == [0.0]
    assert placebo_verdict(cancelled).startswith(
        "All placebo deltas are 0, but up to 33.3% of the answers flip against the baseline"
    )
    none = placebo_table(placebo_sweep(HEAD_EFFECTS))
    assert none.empty and list(none.columns) == PLACEBO_COLUMNS
    assert placebo_verdict(none).startswith("No placebo runs: pass placebos=k to sl.sweep")
    waiting = pd.DataFrame({"config": ["none~1"], "delta": [np.nan], "discordance": [np.nan]})
    assert placebo_verdict(waiting) == "The placebo runs have no answers yet."


def test_top_heads_never_lists_placebos(placebo_sweep) -> None:
    helps = [True] * 6  # a placebo that "helps" more than any head must not be listed
    result = placebo_sweep({"none~1": helps, "none~2": helps, **HEAD_EFFECTS})
    table = top_heads_table(result, n=10)
    assert table["config"].tolist() == ["L1H1", "L1H0", "L0H1", "L0H0"]
    assert "mde" in table.columns
    assert "none~" not in format_top_heads(result, n=10)


def test_power_statement_reads_result_power(placebo_sweep) -> None:
    result = placebo_sweep({"none~1": BASE, **HEAD_EFFECTS})
    power = result.power(0.05)
    text = power_statement(result)
    assert text.startswith("With 6 questions and 4 heads this sweep detects no gain with 80% power")
    assert f"at discordance {power['discordance']:.3f}" in text
    assert f"a 5-point gain has power {power['power']:.2f}" in text
    assert f"finding it needs {int(power['required_questions']):,} questions." in text
    # Many questions: a finite MDE, stated in accuracy and points.
    ids = [f"q{i}" for i in range(400)]
    big = SweepResult.coerce(
        pd.DataFrame(
            {
                "question_id": ids * 2,
                "config": ["none"] * 400 + ["L0H1"] * 400,
                "correct": [i % 3 == 0 for i in range(400)] + [i % 5 == 0 for i in range(400)],
            }
        )
    )
    mde = big.power(0.05)["mde"]
    assert f"detects a gain of {mde:.3f} ({mde * 100:.1f} points) or more" in power_statement(big)
    # A baseline at 100%: no 5-point gain exists, said so instead of a number.
    perfect = SweepResult.coerce(big.table.assign(correct=True))
    assert "no sweep size finds it" in power_statement(perfect)


def test_report_placebo_and_power_sections(tmp_path: Path, placebo_sweep) -> None:
    broken = [False] + BASE[1:]
    meta = {"model": HOSTILE, "dtype": "float32"}
    result = placebo_sweep({"none~1": BASE, "none~2": broken, **HEAD_EFFECTS}, meta=meta)
    page = write_report(result, tmp_path / "report.html", top=10).read_text(encoding="utf-8")
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert "6 questions x 4 pruned heads + the unpruned baseline + 2 placebo runs" in page
    assert "(42 answers)" in page and "Grey cells:" in page
    heads = page.index("<h2>Accuracy delta per head</h2>")
    placebo = page.index("<h2>Placebo check</h2>")
    power = page.index("<h2>Power</h2>")
    assert heads < placebo < power < page.index("<h2>Top 10 heads</h2>")
    section = _section(page, "Placebo check")
    assert re.findall(r"<td>(none~\d)</td>", section) == ["none~1", "none~2"]
    assert "<th>discordance</th>" in section and "<th>p_value</th>" in section
    assert "<td>-0.167</td>" in section and "<td>0.167</td>" in section
    assert "<b>Placebo deltas up to 0.167: head deltas of size 0.167 or less" in section
    statement = html.escape(power_statement(result))
    assert f"<p>{statement}</p>" in _section(page, "Power")
    top = page[page.index("<h2>Top 10 heads</h2>") :]
    assert "none~" not in top and "<th>mde</th>" in top
    assert re.findall(r"<td>(L\dH\d)</td>", top) == ["L1H1", "L1H0", "L0H1", "L0H0"]
    assert "placebo Δ from -0.167 to +0.000" in page  # the heat map's subtitle
    assert "Incomplete sweep" not in page


def test_report_without_placebos_says_how_to_add_them(page: str) -> None:
    section = _section(page, "Placebo check")
    assert "No placebo runs: pass placebos=k to sl.sweep" in section
    assert "<table" not in section and "placebo run" not in page.split("<table>")[0]
    assert "<h2>Power</h2>" in page and "Grey cells" not in page


def test_report_incomplete_sweep_with_placebos(tmp_path: Path, placebo_sweep) -> None:
    result = placebo_sweep({"none~1": BASE, **HEAD_EFFECTS}, complete=False)
    page = write_report(result, tmp_path / "partial.html").read_text(encoding="utf-8")
    banner = page.index("<b>Incomplete sweep:</b>")
    assert page.index("<h1>sprint_lab sweep report</h1>") < banner < page.index("<table>")
    assert "All placebo deltas are 0: batch noise does not contribute." in page


def test_report_of_a_real_sweep_with_placebos(tiny_models, tmp_path: Path) -> None:
    from sprint_lab import load_model, load_problems, sweep

    tiny = load_model(tiny_models["llama"], dtype="float32")
    problems = load_problems("arith", limit=4, seed=5)
    result = sweep(
        tiny, problems, ["L0H1"], placebos=1, max_new_tokens=4, batch_size=2, progress=False
    )
    assert result.placebos == ["none~1"]
    page = write_report(result, tmp_path / "real.html").read_text(encoding="utf-8")
    section = _section(page, "Placebo check")
    assert re.findall(r"<td>(none~\d)</td>", section) == ["none~1"]
    assert placebo_verdict(placebo_table(result)) in html.unescape(section)
    assert "With 4 questions and 1 head this sweep" in page
    top = page[page.index("<h2>Top 15 heads</h2>") :]
    assert re.findall(r"<td>(L\dH\d|none~\d)</td>", top) == ["L0H1"]
