"""A self-contained HTML report of a sweep: the heat map, the top heads, the settings.

The page embeds plotly.js, so it opens offline and can be attached to a lab notebook or an
issue as a single file. It shows the sweep's settings, the baseline accuracy, the per-head
delta heat map (:func:`~sprint_lab.viz.heatmap.heatmap`) and a table of the heads whose pruning
helps most (:meth:`~sprint_lab.sweeps.result.SweepResult.top_heads`, placebos left out) with
their CI, p, q and minimum detectable effect. A cancelled sweep gets an *incomplete* banner.

Two sections say how far the numbers can be trusted. *Placebo check* lists every placebo run
(``"none~1"``, ...: unpruned, but batched like a head; :func:`placebo_table`) with its delta,
discordance and p-value, and one verdict (:func:`placebo_verdict`): all placebo deltas 0 means
batch noise does not contribute; otherwise heads whose ``|delta|`` is no larger than the
largest placebo ``|delta|`` are within batch noise. *Power* is one sentence
(:func:`power_statement`, from :meth:`~sprint_lab.sweeps.result.SweepResult.power`): the smallest
gain the sweep detects with 80% power after Benjamini-Hochberg, the power for a 5-point gain
and the questions that gain needs. Every value taken from the sweep (settings, labels) is
HTML-escaped, so a model name, prompt or dataset text cannot inject markup.

Example:
    >>> t = pd.DataFrame({"question_id": ["a", "a", "b", "b"], "config": ["none", "L0H1"] * 2,
    ...                   "layer": [-1, 0, -1, 0], "head": [-1, 1, -1, 1],
    ...                   "correct": [True, False, True, True]})
    >>> top_heads_table(SweepResult(t))[["config", "n", "delta"]].values.tolist()
    [['L0H1', 2, -0.5]]
    >>> placebo_verdict(placebo_table(SweepResult(t)))
    'No placebo runs: pass placebos=k to sl.sweep to measure the noise floor of batching.'
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import pandas as pd

from sprint_lab.core.heads import BASELINE, is_placebo
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.frames import noise_floor
from sprint_lab.viz.heatmap import heatmap

__all__ = [
    "PLACEBO_COLUMNS",
    "format_top_heads",
    "placebo_table",
    "placebo_verdict",
    "power_statement",
    "top_heads_table",
    "write_report",
]

PLACEBO_COLUMNS = ["config", "n", "delta", "discordance", "p_value"]
"""Columns of :func:`placebo_table`."""

_STYLE = """
body { font-family: Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1100px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 13px; }
"""


def top_heads_table(result: SweepResult, n: int = 10) -> pd.DataFrame:
    """The ``n`` heads with the largest accuracy delta, with CI, p and q, ready to print.

    Args:
        result: the sweep.
        n: how many heads.

    Returns:
        Columns ``config``, ``n``, ``baseline_accuracy``, ``accuracy``, ``delta``, ``ci_low``,
        ``ci_high``, ``p_value``, ``q_value``, ``mde`` (the smallest gain detectable with 80%
        power after BH, when the deltas table has it); largest delta first (ties: smallest
        q). Placebos are never listed.
    """
    top = result.top_heads(n)
    if top.empty:
        return top
    columns = [
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
    columns += [c for c in ("mde",) if c in top.columns]
    return top[columns].reset_index(drop=True)


def placebo_table(result: SweepResult) -> pd.DataFrame:
    """One row per placebo run: its delta, discordance and McNemar p-value against the baseline.

    Args:
        result: the sweep.

    Returns:
        Columns :data:`PLACEBO_COLUMNS`, in the order of ``result.deltas()``; empty when the
        sweep has no placebo rows (or no baseline yet).

    Example:
        >>> t = pd.DataFrame({"question_id": ["a", "a", "a"], "config": ["none", "none~1", "L0H1"],
        ...                   "correct": [True, True, False]})
        >>> placebo_table(SweepResult.coerce(t)).values.tolist()
        [['none~1', 1, 0.0, 0.0, 1.0]]
    """
    if not result.placebos or not (result.table["config"] == BASELINE).any():
        return pd.DataFrame(columns=PLACEBO_COLUMNS)
    deltas = result.deltas(n_boot=1)
    rows = deltas[deltas["config"].map(is_placebo).astype(bool)]
    return rows.reindex(columns=PLACEBO_COLUMNS).reset_index(drop=True)


def placebo_verdict(placebos: pd.DataFrame) -> str:
    """One sentence on what the placebo runs say about batch noise.

    Args:
        placebos: :func:`placebo_table` (columns ``delta`` and ``discordance``).

    Returns:
        ``"All placebo deltas are 0: batch noise does not contribute."`` when every placebo
        matches the baseline on every question; a warning that answers flip when the deltas
        are 0 but some discordance is not; ``"Placebo deltas up to X: ..."`` (``X`` the largest
        ``|delta|``) otherwise; a hint when there are no placebos or no answers yet.

    Example:
        >>> placebo_verdict(pd.DataFrame({"delta": [0.0, -0.02], "discordance": [0.0, 0.04]}))
        'Placebo deltas up to 0.020: head deltas of size 0.020 or less are within batch noise.'
    """
    if placebos.empty:
        return (
            "No placebo runs: pass placebos=k to sl.sweep to measure the noise floor of batching."
        )
    floor = noise_floor(placebos["delta"])
    if floor is None:
        return "The placebo runs have no answers yet."
    if floor > 0:
        return (
            f"Placebo deltas up to {floor:.3f}: head deltas of size {floor:.3f} or less are "
            "within batch noise."
        )
    flips = noise_floor(placebos["discordance"]) if "discordance" in placebos else None
    if flips:
        return (
            f"All placebo deltas are 0, but up to {flips:.1%} of the answers flip against the "
            "baseline: batch noise changes single answers (their effects cancelled out here)."
        )
    return "All placebo deltas are 0: batch noise does not contribute."


def power_statement(result: SweepResult, delta: float = 0.05) -> str:
    """One sentence on what this sweep can detect (:meth:`SweepResult.power`).

    Args:
        result: the sweep.
        delta: the gain to state the power and the needed questions for (0.05 = 5 points).

    Returns:
        ``"With N questions and M heads this sweep detects a gain of MDE or more with 80%
        power (after BH); a 5-point gain has power P; finding it needs R questions."``, with
        the discordance used; the parts that cannot be computed are said so.

    Example:
        >>> ids = [f"q{i}" for i in range(40)]
        >>> t = pd.DataFrame({"question_id": ids * 2, "config": ["none"] * 40 + ["L0H1"] * 40,
        ...                   "correct": [i % 3 == 0 for i in range(80)]})
        >>> print(power_statement(SweepResult.coerce(t)))  # doctest: +NORMALIZE_WHITESPACE
        With 40 questions and 1 head this sweep detects a gain of 0.373 (37.3 points) or more
        with 80% power (after BH, at discordance 0.675); a 5-point gain has power 0.04;
        finding it needs 2,156 questions.
    """
    power = result.power(delta)
    n, m = int(power["n_questions"]), int(power["n_heads"])
    mde, needed = float(power["mde"]), float(power["required_questions"])
    start = f"With {n} question{'s' * (n != 1)} and {m} head{'s' * (m != 1)}"
    where = f"(after BH, at discordance {float(power['discordance']):.3f})"
    if math.isfinite(mde):
        gain_of = f"a gain of {mde:.3f} ({mde * 100:.1f} points)"
        detects = f"this sweep detects {gain_of} or more with 80% power {where}"
    else:
        detects = f"this sweep detects no gain with 80% power {where}"
    points = f"{delta * 100:g}-point"
    gain = f"a {points} gain has power {float(power['power']):.2f}"
    if math.isfinite(needed):
        size = f"finding it needs {int(needed):,} questions"
    else:
        size = (
            "no sweep size finds it (more than 1,000,000 questions, or no such gain from "
            f"baseline accuracy {float(power['baseline_accuracy']):.3f})"
        )
    return f"{start} {detects}; {gain}; {size}."


def format_top_heads(result: SweepResult, n: int = 10) -> str:
    """The top heads as aligned text, for the terminal.

    Example:
        >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
        ...                   "layer": [-1, 0], "head": [-1, 1], "correct": [True, True]})
        >>> format_top_heads(SweepResult(t)).split()[:3]
        ['config', 'n', 'baseline_accuracy']
    """
    table = top_heads_table(result, n)
    if table.empty:
        return "(no pruned heads in this sweep)"
    shown = table.assign(
        ci=[f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(table.ci_low, table.ci_high, strict=True)]
    )[["config", "n", "baseline_accuracy", "accuracy", "delta", "ci", "p_value", "q_value"]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def write_report(result: SweepResult, path: str | os.PathLike, *, top: int = 15) -> Path:
    """Write the HTML report and return its path.

    Args:
        result: the sweep (complete or not).
        path: the HTML file to write; parent folders are created.
        top: how many heads the top-heads table lists.

    Returns:
        The written path.

    Example:
        >>> import os, tempfile
        >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
        ...                   "layer": [-1, 0], "head": [-1, 1], "correct": [True, False]})
        >>> out = write_report(SweepResult(t), os.path.join(tempfile.mkdtemp(), "report.html"))
        >>> "Top 15 heads" in out.read_text(encoding="utf-8")
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = heatmap(result)
    meta = result.meta
    settings = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(meta[k]))}</td></tr>"
        for k in ("model", "dtype", "prompt", "max_new_tokens", "grade_mode")
        if k in meta
    )
    base = result.table[result.table["config"] == BASELINE]["correct"]
    n_questions = result.table["question_id"].nunique()
    n_placebos = len(result.placebos)
    placebo_runs = f" + {n_placebos} placebo run{'s' * (n_placebos != 1)}" if n_placebos else ""
    grey = (
        " Grey cells: |delta| no larger than the largest placebo |delta| (within batch noise)."
        if n_placebos
        else ""
    )
    body = [
        "<h1>sprint_lab sweep report</h1>",
        f"<p>{n_questions} questions x {len(result.heads)} pruned heads + the unpruned baseline"
        f"{placebo_runs} ({len(result.table)} answers). Baseline accuracy: {base.mean():.3f}.</p>",
        f"<table>{settings}</table>",
        "<h2>Accuracy delta per head</h2>",
        figure.to_html(full_html=False, include_plotlyjs=True),
        "<p class='note'>Delta = pruned minus unpruned accuracy on the same questions; "
        "* marks heads whose Benjamini-Hochberg q-value is at most 0.05 (exact McNemar test). "
        f"CIs are paired bootstrap 95% intervals.{grey}</p>",
        *_placebo_section(result),
        *_power_section(result),
        f"<h2>Top {top} heads</h2>",
        _table_html(top_heads_table(result, top)),
    ]
    if not result.complete:
        body.insert(1, "<p><b>Incomplete sweep:</b> some answers are still missing.</p>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sprint_lab report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def _table_html(table: pd.DataFrame) -> str:
    """``table`` as an HTML table, every cell escaped (labels come from the sweep's data)."""
    return table.to_html(index=False, float_format=lambda v: f"{v:.3f}", escape=True)


def _placebo_section(result: SweepResult) -> list[str]:
    """The *Placebo check* heading, the placebo table (when any) and the verdict."""
    table = placebo_table(result)
    verdict = f"<p class='verdict'><b>{html.escape(placebo_verdict(table))}</b></p>"
    if table.empty:
        return ["<h2>Placebo check</h2>", verdict]
    note = (
        "<p class='note'>A placebo prunes nothing but runs in its own rows of the batches, as "
        "a head does; its delta against the baseline is the noise floor of the measurement "
        "(exactly 0 with batch-invariant generation). Discordance: share of questions whose "
        "verdict differs from the baseline's.</p>"
    )
    return ["<h2>Placebo check</h2>", verdict, _table_html(table), note]


def _power_section(result: SweepResult) -> list[str]:
    """The *Power* heading and :func:`power_statement` (nothing without pruned heads)."""
    if not result.heads or not (result.table["config"] == BASELINE).any():
        return []
    return ["<h2>Power</h2>", f"<p>{html.escape(power_statement(result))}</p>"]
