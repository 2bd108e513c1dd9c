"""SPRINT's per-question head selector, its question encoders, and the strategies it is compared
with."""

from sprint_lab.selection.encoders import get_encoder
from sprint_lab.selection.minilm import MiniLMEncoder
from sprint_lab.selection.residual import ResidualEncoder
from sprint_lab.selection.selector import SprintSelector
from sprint_lab.selection.strategies import compare_strategies

__all__ = [
    "MiniLMEncoder",
    "ResidualEncoder",
    "SprintSelector",
    "compare_strategies",
    "get_encoder",
]
