"""sprint_lab: study how pruning attention heads changes a language model's reasoning.

Zero one attention head's output (just before ``o_proj``, at every position and decoding step),
measure how accuracy on math word problems moves, and learn per question which head to prune
(SPRINT). The subpackages follow the data flow, and imports only go down it::

    core        heads, the head gate, the model loader, the named errors
    tasks       datasets, prompt templates, answer extraction and grading
    generation  batched gated generation (shared-prefix attention, KV caches, batch invariance)
    engines     head ablations as LoRA adapters for serving engines (PEFT, vLLM)
    sweeps      the sweep runner, executors, the Parquet store, results and statistics
    importance  cheap importance proxies and their correlation with sweeps
    selection   question encoders, the SPRINT selector, comparison strategies
    viz         plotly figures, static export, the HTML report
    widgets     ipywidgets panels for notebooks
    cli         the ``sprint-lab`` command

The public API is re-exported here, grouped by subpackage. Every name loads lazily (PEP 562):
``import sprint_lab`` imports neither torch nor plotly, and the first use of a name imports the
subpackage that defines it, so ``sprint-lab --help`` answers at once.

Example:
    >>> import sprint_lab
    >>> sprint_lab.InputError.exit_code, sprint_lab.Head(0, 3).label
    (2, 'L0H3')
    >>> "sweep" in dir(sprint_lab)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sprint_lab import viz, widgets
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
    from sprint_lab.core.ablation import HeadMeans, head_means
    from sprint_lab.core.configs import Config, layer
    from sprint_lab.core.errors import InputError, SetupError, SprintLabError
    from sprint_lab.core.heads import is_placebo, placebo_label
    from sprint_lab.engines import adapter_path, export_head_adapters
    from sprint_lab.generation import (
        Completion,
        PrefixCache,
        bridge_only_hooks,
        generate,
        shared_prefix_supported,
    )
    from sprint_lab.generation.limits import PromptTooLongError
    from sprint_lab.importance import (
        ImportanceResult,
        ScreenResult,
        correlate,
        gold_target,
        head_importance,
        screen,
    )
    from sprint_lab.selection import (
        MiniLMEncoder,
        ResidualEncoder,
        SprintSelector,
        compare_strategies,
        get_encoder,
    )
    from sprint_lab.sweeps import (
        CorruptStoreError,
        Executor,
        LocalExecutor,
        PrunePath,
        RayExecutor,
        RepairReport,
        StaleRowsError,
        StoreLockedError,
        SweepExistsError,
        SweepProgress,
        SweepResult,
        SweepStore,
        VLLMExecutor,
        benjamini_hochberg,
        greedy_prune,
        mcnemar_exact,
        paired_bootstrap_ci,
        stats,
        sweep,
    )
    from sprint_lab.sweeps.run import invariance_available
    from sprint_lab.sweeps.stats import minimum_detectable_effect, required_questions
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
    from sprint_lab.widgets import (
        HeatmapExplorer,
        QuestionInspector,
        SelectorTrainer,
        SweepPanel,
        word_diff_html,
    )


def _names(module: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), module)


#: Public name -> the module it is imported from on first access.
LAZY_NAMES: dict[str, str] = {
    **_names(
        "sprint_lab.core",
        "BASELINE config_label is_baseline parse_config Head HeadGate LabModel ablate all_heads "
        "head_mask hook_z_name load_model mask_for masks_for",
    ),
    **_names("sprint_lab.core.heads", "is_placebo placebo_label"),
    **_names("sprint_lab.core.configs", "Config layer"),
    **_names("sprint_lab.core.ablation", "HeadMeans head_means"),
    **_names("sprint_lab.core.errors", "InputError SetupError SprintLabError"),
    **_names(
        "sprint_lab.tasks",
        "TASKS AnswerFormat DatasetUnavailableError Problem ProblemFormatError PromptTemplate "
        "Task Verdict extract_answer generate_arith get_task get_template grade is_correct "
        "list_tasks load_problems pick_problems problems_to_frame register_task",
    ),
    **_names(
        "sprint_lab.generation",
        "Completion PrefixCache bridge_only_hooks generate shared_prefix_supported",
    ),
    **_names("sprint_lab.generation.limits", "PromptTooLongError"),
    **_names("sprint_lab.engines", "adapter_path export_head_adapters"),
    **_names(
        "sprint_lab.sweeps",
        "Executor LocalExecutor RayExecutor SweepProgress SweepResult benjamini_hochberg "
        "mcnemar_exact paired_bootstrap_ci sweep CorruptStoreError RepairReport StaleRowsError "
        "StoreLockedError SweepExistsError SweepStore PrunePath greedy_prune VLLMExecutor",
    ),
    **_names("sprint_lab.sweeps.run", "invariance_available"),
    **_names("sprint_lab.sweeps.stats", "required_questions minimum_detectable_effect"),
    **_names(
        "sprint_lab.importance",
        "ImportanceResult ScreenResult correlate gold_target head_importance screen",
    ),
    **_names(
        "sprint_lab.selection",
        "MiniLMEncoder ResidualEncoder SprintSelector compare_strategies get_encoder",
    ),
    **_names(
        "sprint_lab.widgets",
        "HeatmapExplorer QuestionInspector SelectorTrainer SweepPanel word_diff_html",
    ),
}

#: Subpackages reachable as attributes (``sprint_lab.viz``) without an explicit import.
SUBPACKAGES = frozenset(
    {
        "core",
        "tasks",
        "generation",
        "engines",
        "sweeps",
        "importance",
        "selection",
        "viz",
        "widgets",
        "cli",
    }
)


#: Modules reachable under a short name: ``sl.stats.required_questions(...)``.
MODULE_ALIASES: dict[str, str] = {"stats": "sprint_lab.sweeps.stats"}


def __getattr__(name: str) -> Any:
    """Import what ``name`` needs on first use (PEP 562) and cache it in the module."""
    if name in SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in MODULE_ALIASES:
        value = importlib.import_module(MODULE_ALIASES[name])
    elif name in LAZY_NAMES:
        value = getattr(importlib.import_module(LAZY_NAMES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "is_placebo",
    "placebo_label",
    "Config",
    "layer",
    "HeadMeans",
    "head_means",
    # errors (exit codes of the sprint-lab command)
    "InputError",
    "SetupError",
    "SprintLabError",
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
    "PromptTooLongError",
    "bridge_only_hooks",
    "generate",
    "shared_prefix_supported",
    # engines
    "adapter_path",
    "export_head_adapters",
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
    "PrunePath",
    "greedy_prune",
    "CorruptStoreError",
    "RepairReport",
    "StaleRowsError",
    "StoreLockedError",
    "SweepExistsError",
    "SweepStore",
    "VLLMExecutor",
    "invariance_available",
    "required_questions",
    "minimum_detectable_effect",
    "stats",
    # importance
    "ImportanceResult",
    "correlate",
    "gold_target",
    "head_importance",
    "ScreenResult",
    "screen",
    # selection
    "MiniLMEncoder",
    "ResidualEncoder",
    "SprintSelector",
    "compare_strategies",
    "get_encoder",
    # viz and widgets
    "viz",
    "widgets",
    "HeatmapExplorer",
    "QuestionInspector",
    "SelectorTrainer",
    "SweepPanel",
    "word_diff_html",
]
