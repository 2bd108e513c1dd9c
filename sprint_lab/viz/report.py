"""A self-contained HTML report of a sweep: the heat map, the top heads, the settings.

The page embeds plotly.js, so it opens offline and can be attached to a lab notebook or an
issue as a single file. It shows the sweep's settings, the baseline accuracy, the per-head
delta heat map (:func:`~sprint_lab.viz.heatmap.heatmap`) and a table of the heads whose pruning
helps most (:meth:`~sprint_lab.sweeps.result.SweepResult.top_heads`) with their CI, p and q. A
cancelled sweep gets an *incomplete* banner. Every value taken from the sweep's settings is
HTML-escaped, so a model name or prompt cannot inject markup.

Example:
    >>> t = pd.DataFrame({"question_id": ["a", "a", "b", "b"], "config": ["none", "L0H1"] * 2,
    ...                   "layer": [-1, 0, -1, 0], "head": [-1, 1, -1, 1],
    ...                   "correct": [True, False, True, True]})
    >>> top_heads_table(SweepResult(t))[["config", "n", "delta"]].values.tolist()
    [['L0H1', 2, -0.5]]
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from sprint_lab.core.heads import BASELINE
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.viz.heatmap import heatmap

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
        ``ci_high``, ``p_value``, ``q_value``; largest delta first (ties: smallest q).
    """
    top = result.top_heads(n)
    if top.empty:
        return top
    return top[
        [
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
    ].reset_index(drop=True)


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
    body = [
        "<h1>sprint_lab sweep report</h1>",
        f"<p>{n_questions} questions x {len(result.heads)} pruned heads + the unpruned baseline"
        f" ({len(result.table)} answers). Baseline accuracy: {base.mean():.3f}.</p>",
        f"<table>{settings}</table>",
        "<h2>Accuracy delta per head</h2>",
        figure.to_html(full_html=False, include_plotlyjs=True),
        "<p class='note'>Delta = pruned minus unpruned accuracy on the same questions; "
        "* marks heads whose Benjamini-Hochberg q-value is at most 0.05 (exact McNemar test). "
        "CIs are paired bootstrap 95% intervals.</p>",
        f"<h2>Top {top} heads</h2>",
        top_heads_table(result, top).to_html(index=False, float_format=lambda v: f"{v:.3f}"),
    ]
    if not result.complete:
        body.insert(1, "<p><b>Incomplete sweep:</b> some answers are still missing.</p>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sprint_lab report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
