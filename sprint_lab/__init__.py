"""sprint_lab: study how pruning attention heads changes a language model's reasoning.

Zero one attention head's output (just before ``o_proj``, at every position and decoding step),
measure how accuracy on math word problems moves, and learn per question which head to prune
(SPRINT). The subpackages follow the data flow, and imports only go down it::

    core        heads, the head gate, the model loader
    tasks       datasets, prompt templates, answer extraction and grading
    generation  batched gated generation (shared-prefix attention, KV caches)
    sweeps      the sweep runner, executors, the Parquet store, results and statistics
    importance  cheap importance proxies and their correlation with sweeps
    selection   question encoders, the SPRINT selector, comparison strategies
    viz         plotly figures, static export, the HTML report
    widgets     ipywidgets panels for notebooks
    cli         the ``sprint-lab`` command

The public API is re-exported here, grouped by subpackage. ``viz`` and ``widgets`` (plotly,
ipywidgets) load lazily, so ``import sprint_lab`` stays light.
"""

from sprint_lab.core import (
    BASELINE,
    Head,
    HeadGate,
    LabModel,
    ablate,
    all_heads,
    config_label,
    head_mask,
    hook_z_name,
    is_baseline,
    load_model,
    mask_for,
    masks_for,
    parse_config,
)
from sprint_lab.generation import (
    Completion,
    PrefixCache,
    bridge_only_hooks,
    generate,
    shared_prefix_supported,
)
from sprint_lab.importance import ImportanceResult, correlate, gold_target, head_importance
from sprint_lab.selection import (
    MiniLMEncoder,
    ResidualEncoder,
    SprintSelector,
    compare_strategies,
    get_encoder,
)
from sprint_lab.sweeps import (
    Executor,
    LocalExecutor,
    RayExecutor,
    SweepProgress,
    SweepResult,
    benjamini_hochberg,
    mcnemar_exact,
    paired_bootstrap_ci,
    sweep,
)
from sprint_lab.tasks import (
    TASKS,
    AnswerFormat,
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    PromptTemplate,
    Task,
    Verdict,
    extract_answer,
    generate_arith,
    get_task,
    get_template,
    grade,
    is_correct,
    list_tasks,
    load_problems,
    pick_problems,
    problems_to_frame,
    register_task,
)

_LAZY_MODULES = frozenset({"viz", "widgets"})
_WIDGETS = frozenset(
    {"SweepPanel", "HeatmapExplorer", "SelectorTrainer", "QuestionInspector", "word_diff_html"}
)


def __getattr__(name: str):
    """``viz``, ``widgets``, the panels and ``word_diff_html`` load on first use (plotly,
    ipywidgets are heavy)."""
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"sprint_lab.{name}")
    if name in _WIDGETS:
        return getattr(importlib.import_module("sprint_lab.widgets"), name)
    raise AttributeError(f"module 'sprint_lab' has no attribute {name!r}")


__all__ = [
    # core
    "BASELINE",
    "config_label",
    "is_baseline",
    "parse_config",
    "Head",
    "HeadGate",
    "LabModel",
    "ablate",
    "all_heads",
    "head_mask",
    "hook_z_name",
    "load_model",
    "mask_for",
    "masks_for",
    # tasks
    "TASKS",
    "AnswerFormat",
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "PromptTemplate",
    "Task",
    "Verdict",
    "extract_answer",
    "generate_arith",
    "get_task",
    "get_template",
    "grade",
    "is_correct",
    "list_tasks",
    "load_problems",
    "pick_problems",
    "problems_to_frame",
    "register_task",
    # generation
    "Completion",
    "PrefixCache",
    "bridge_only_hooks",
    "generate",
    "shared_prefix_supported",
    # sweeps
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SweepProgress",
    "SweepResult",
    "benjamini_hochberg",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "sweep",
    # importance
    "ImportanceResult",
    "correlate",
    "gold_target",
    "head_importance",
    # selection
    "MiniLMEncoder",
    "ResidualEncoder",
    "SprintSelector",
    "compare_strategies",
    "get_encoder",
    # viz and widgets (lazy)
    "viz",
    "widgets",
    "HeatmapExplorer",
    "QuestionInspector",
    "SelectorTrainer",
    "SweepPanel",
    "word_diff_html",
]
