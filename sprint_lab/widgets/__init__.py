"""ipywidgets panels for notebooks: run a sweep, explore the heat map, train a selector, inspect a question."""

from sprint_lab.widgets.panels import (
    HeatmapExplorer,
    QuestionInspector,
    SelectorTrainer,
    SweepPanel,
)

__all__ = [
    "HeatmapExplorer",
    "QuestionInspector",
    "SelectorTrainer",
    "SweepPanel",
]
