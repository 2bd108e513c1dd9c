"""ipywidgets panels: run a sweep, explore the heat map, train a selector, inspect a question.

One module per panel, over shared plumbing::

    sweep_panel         SweepPanel: run a sweep, watch its heat map fill in
    heatmap_explorer    HeatmapExplorer: click a head, see what pruning it changed
    selector_trainer    SelectorTrainer: train a SPRINT selector with a live curve
    question_inspector  QuestionInspector: rank heads for a question, generate pruned answers
    jobs                background threads and the per-model lock the panels share
    live_figure         plotly FigureWidgets redrawn in place
    html                word diffs, tables and status lines as (escaped) HTML
"""

from sprint_lab.widgets.heatmap_explorer import HeatmapExplorer
from sprint_lab.widgets.html import word_diff_html
from sprint_lab.widgets.question_inspector import QuestionInspector
from sprint_lab.widgets.selector_trainer import SelectorTrainer
from sprint_lab.widgets.sweep_panel import SweepPanel

__all__ = [
    "HeatmapExplorer",
    "QuestionInspector",
    "SelectorTrainer",
    "SweepPanel",
    "word_diff_html",
]
