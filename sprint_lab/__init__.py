"""sprint_lab: study how pruning single attention heads changes a language model's reasoning.

Zero one attention head's output (just before ``o_proj``, at every position and decoding step),
measure how accuracy on math word problems moves, and learn per question which head to prune
(SPRINT). The public API is re-exported here; each submodule holds one concept.
"""

from sprint_lab.arith import generate_arith
from sprint_lab.encoders import MiniLMEncoder, ResidualEncoder, get_encoder
from sprint_lab.gate import HeadGate, ablate, head_mask, hook_z_name, mask_for, masks_for
from sprint_lab.generation import Completion, PrefixCache, generate
from sprint_lab.grading import Verdict, extract_answer, grade, is_correct
from sprint_lab.heads import Head, all_heads
from sprint_lab.importance import ImportanceResult, correlate, gold_target, head_importance
from sprint_lab.model import LabModel, load_model
from sprint_lab.problems import (
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    load_problems,
    problems_to_frame,
)
from sprint_lab.prompts import PromptTemplate, get_template
from sprint_lab.result import SweepResult
from sprint_lab.selector import SprintSelector
from sprint_lab.shared_prefix import bridge_only_hooks, shared_prefix_supported
from sprint_lab.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci
from sprint_lab.strategies import compare_strategies
from sprint_lab.sweep import SweepProgress, sweep

_WIDGETS = frozenset({"SweepPanel", "HeatmapExplorer", "SelectorTrainer", "QuestionInspector"})


def __getattr__(name: str):
    """Widgets load lazily, so ``import sprint_lab`` does not import ipywidgets."""
    if name in _WIDGETS:
        from sprint_lab import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'sprint_lab' has no attribute {name!r}")


__all__ = [
    "Completion",
    "DatasetUnavailableError",
    "Head",
    "HeadGate",
    "HeatmapExplorer",
    "ImportanceResult",
    "LabModel",
    "MiniLMEncoder",
    "PrefixCache",
    "Problem",
    "ProblemFormatError",
    "PromptTemplate",
    "QuestionInspector",
    "ResidualEncoder",
    "SelectorTrainer",
    "SprintSelector",
    "SweepPanel",
    "SweepProgress",
    "SweepResult",
    "Verdict",
    "ablate",
    "all_heads",
    "benjamini_hochberg",
    "bridge_only_hooks",
    "compare_strategies",
    "correlate",
    "extract_answer",
    "generate",
    "generate_arith",
    "get_encoder",
    "get_template",
    "gold_target",
    "grade",
    "head_importance",
    "head_mask",
    "hook_z_name",
    "is_correct",
    "load_model",
    "load_problems",
    "mask_for",
    "masks_for",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "problems_to_frame",
    "shared_prefix_supported",
    "sweep",
]
