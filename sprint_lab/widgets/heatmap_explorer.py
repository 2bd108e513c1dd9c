"""HeatmapExplorer: click a head in the heat map to see what pruning it did to each question.

A delta says *how much* accuracy moved; the explorer shows *where*: selecting a cell (a click,
or :meth:`HeatmapExplorer.select`) fills a table of that head's per-question outcomes (baseline
correct, pruned correct, both extracted answers), questions whose correctness changed first,
and shows one question's unpruned and pruned completions side by side as a word diff. Placebo
runs of the sweep are no cells; the map marks their noise floor (see
:func:`~sprint_lab.viz.heatmap.heatmap`) and the header says whether the selected head's delta
lies within it.

Example:
    >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
    ...                   "layer": [-1, 0], "head": [-1, 1], "correct": [True, False],
    ...                   "extracted": ["4", "5"], "completion": ["is 4", "is 5"]})
    >>> explorer = HeatmapExplorer(sl.SweepResult(t))
    >>> explorer.select(0, 1)["changed"].tolist()
    [True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd

from sprint_lab.core.heads import BASELINE, Head
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.tasks.problems import Problem
from sprint_lab.viz.frames import noise_floor, split_placebos
from sprint_lab.viz.heatmap import heatmap
from sprint_lab.widgets.html import (
    frame_html,
    message_html,
    word_diff_html,
)
from sprint_lab.widgets.live_figure import figure_widget

__all__ = ["HeatmapExplorer"]


class HeatmapExplorer(widgets.VBox):
    """Click a head in the heat map to see what pruning it did to each question.

    The heat map is :func:`sprint_lab.viz.heatmap.heatmap` of the sweep's deltas. Selecting a cell
    (a click, or :meth:`select`) fills a table of that head's per-question outcomes (baseline
    correct, pruned correct, both extracted answers) and shows, for one question (chosen in the
    dropdown; questions whose correctness changed come first), the unpruned and the pruned
    completions side by side with their word-level differences highlighted.

    Args:
        result: a :class:`~sprint_lab.sweeps.result.SweepResult`.
        problems: optional problems, for question texts and gold answers.
        metric: the deltas column to colour by.
        alpha: the q-value threshold for the heat map's stars.

    Attributes:
        figure: the heat map ``FigureWidget``; its trace's ``on_click`` calls :meth:`select`.
        selected: the selected :class:`~sprint_lab.core.heads.Head` (or ``None``).
        table: that head's outcome table (:meth:`~sprint_lab.sweeps.result.SweepResult.outcomes`).
        question_box, table_html, diff_html: the widgets below the map.

    Example:
        >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
        ...                   "layer": [-1, 0], "head": [-1, 1], "correct": [True, False],
        ...                   "extracted": ["4", "5"], "completion": ["it is 4", "it is 5"]})
        >>> explorer = HeatmapExplorer(sl.SweepResult(t))
        >>> _ = explorer.select(0, 1)
        >>> "5</ins>" in explorer.show_question("a")
        True
    """

    def __init__(
        self,
        result: SweepResult,
        problems: Sequence[Problem] | None = None,
        *,
        metric: str = "delta",
        alpha: float = 0.05,
    ) -> None:
        self.result = result
        self.problems = list(problems or [])
        self.selected: Head | None = None
        self.table = pd.DataFrame()
        self.figure = figure_widget(heatmap(result, metric, alpha=alpha))
        self.figure.add_class("sprint-lab-explorer-heatmap")
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        self.header = widgets.HTML(
            message_html("info", "Click a cell of the heat map to inspect it.")
        )
        self.table_html = widgets.HTML()
        self.question_box = widgets.Dropdown(options=[], description="question")
        self._filling = False
        self.question_box.observe(self._on_question, names="value")
        self.diff_html = widgets.HTML()
        super().__init__(
            [self.figure, self.header, self.table_html, self.question_box, self.diff_html]
        )
        self.add_class("sprint-lab-heatmap-explorer")

    def _on_click(self, trace: Any, points: Any, state: Any = None) -> None:
        if not points.xs or not points.ys:
            return
        layer = int(str(points.ys[0]).lstrip("Ll"))
        head = int(str(points.xs[0]).lstrip("Hh"))
        self.select(layer, head)

    def select(self, layer: int, head: int) -> pd.DataFrame:
        """Show head ``L{layer}H{head}``: its outcome table and the first question's diff.

        Returns:
            The outcome table (also in :attr:`table`).

        Raises:
            ValueError: when the sweep has no rows for that head.
        """
        chosen = Head(int(layer), int(head))
        table = SweepResult.coerce(self.result).outcomes(chosen, self.problems)
        self.selected, self.table = chosen, table
        deltas, placebos = split_placebos(self.result.deltas())
        row = deltas[deltas["config"] == chosen.label].iloc[0]
        changed = int(table["changed"].sum())
        self.header.value = (
            f"<b>{chosen.label}</b>: accuracy {row['accuracy']:.3f} vs baseline "
            f"{row['baseline_accuracy']:.3f} (Δ {row['delta']:+.3f}, 95% CI "
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], q = {row['q_value']:.3g}); "
            f"{changed} of {len(table)} questions changed correctness."
            f"{_noise_note(float(row['delta']), noise_floor(placebos['delta']))}"
        )
        shown = table.drop(columns=["changed"])
        if shown["question"].isna().all():
            shown = shown.drop(columns=["question", "gold"])
        self.table_html.value = frame_html(shown)
        order = table.sort_values("changed", ascending=False, kind="stable")["question_id"]
        options = [str(q) for q in order]
        self._filling = True
        try:
            self.question_box.options = options
            self.question_box.value = options[0] if options else None
        finally:
            self._filling = False
        if options:
            self.show_question(options[0])
        return table

    def _on_question(self, change: dict[str, Any]) -> None:
        if not self._filling:
            self.show_question(change["new"])

    def show_question(self, question_id: str | None) -> str:
        """Diff the unpruned and the selected head's completion of one question; return the HTML."""
        if question_id is None or self.selected is None:
            return ""
        table = self.result.table
        rows = table[table["question_id"].astype(str) == str(question_id)]
        by_config = rows.set_index("config")
        base = _text_of(by_config, BASELINE)
        pruned = _text_of(by_config, self.selected.label)
        self.diff_html.value = word_diff_html(
            base, pruned, labels=("unpruned", self.selected.label)
        )
        return self.diff_html.value


def _noise_note(delta: float, floor: float | None) -> str:
    """Where a head's delta lies against the placebo noise floor ("" without placebos).

    Example:
        >>> _noise_note(0.01, 0.02), _noise_note(0.05, None)
        (' Within the placebo noise floor (|Δ| ≤ 0.020).', '')
    """
    if floor is None or delta != delta:
        return ""
    side = "Within" if abs(delta) <= floor + 1e-9 else "Above"
    return f" {side} the placebo noise floor (|Δ| ≤ {floor:.3f})."


def _text_of(rows: pd.DataFrame, config: str) -> str:
    if config not in rows.index or "completion" not in rows.columns:
        return ""
    value = rows.at[config, "completion"]
    return "" if pd.isna(value) else str(value)
