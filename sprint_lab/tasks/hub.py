"""Loading the built-in benchmarks from the Hugging Face hub (the fallback to local files).

``datasets.load_dataset`` fetches (or reads from its cache) GSM8K (``openai/gsm8k``), MATH500
(``HuggingFaceH4/MATH-500``) and the full MATH set (``EleutherAI/hendrycks_math``: seven subject
configs concatenated in alphabetical order, the gold answer taken from the last ``\\boxed{}`` of
the solution). ``HF_HUB_OFFLINE`` is honoured even when set after ``datasets`` was imported, and
every failure becomes a :class:`~sprint_lab.tasks.records.DatasetUnavailableError` that says how
to point sprint_lab at local files instead.

Example:
    Loading needs the network or a filled ``datasets`` cache, so it is not run here:

    >>> load_hub_gsm8k("test")[0].id  # doctest: +SKIP
    'gsm8k-test-00000'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from sprint_lab.tasks.jsonl import gsm8k_problem, level_field, math_problem, text_field
from sprint_lab.tasks.latex import last_boxed_content
from sprint_lab.tasks.records import (
    DATA_ENV_VAR,
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
)

__all__ = [
    "HUB_GSM8K",
    "HUB_MATH",
    "HUB_MATH500",
    "HUB_MATH_CONFIGS",
    "hub_rows",
    "load_hub_gsm8k",
    "load_hub_math",
    "load_hub_math500",
]

#: Hub dataset ids used when no local data directory is configured.
HUB_GSM8K = ("openai/gsm8k", "main")
HUB_MATH500 = "HuggingFaceH4/MATH-500"
HUB_MATH = "EleutherAI/hendrycks_math"
HUB_MATH_CONFIGS: tuple[str, ...] = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

_TRUE = frozenset({"1", "true", "yes", "on"})


def _env_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


@contextlib.contextmanager
def _offline_if_requested() -> Iterator[None]:
    """Honour ``HF_HUB_OFFLINE`` even when it was set after ``datasets`` was imported.

    ``datasets`` and ``huggingface_hub`` read the variable once at import time; if it is set
    now, their module flags are switched on for the duration of the call (cache-only loading).
    """
    if not _env_offline():
        yield
        return
    import datasets.config as ds_config
    import huggingface_hub.constants as hub_constants

    saved = (ds_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    ds_config.HF_HUB_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        ds_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def hub_rows(
    dataset_id: str, config: str | None, split: str, local_files: str
) -> list[dict[str, Any]]:
    """Load one hub split as a list of dicts, wrapping every failure in a clear error.

    Args:
        dataset_id: Hub dataset id.
        config: Dataset config name, if any.
        split: Split name.
        local_files: The local files that would replace it (named in the error message).

    Returns:
        The rows.

    Raises:
        DatasetUnavailableError: The hub (or, offline, the cache) cannot provide the split.
    """
    label = f"{dataset_id}" + (f" (config {config!r})" if config else "") + f" split {split!r}"
    try:
        import datasets

        with _offline_if_requested():
            ds = datasets.load_dataset(dataset_id, config, split=split)
        return [dict(row) for row in ds]
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure gets the same advice
        mode = (
            " (HF_HUB_OFFLINE is set, so only the local cache was tried)" if _env_offline() else ""
        )
        raise DatasetUnavailableError(
            f"Could not load {label} from the Hugging Face hub{mode}: {type(exc).__name__}: {exc}."
            f" Point sprint_lab at local JSONL files instead: set the {DATA_ENV_VAR} environment"
            f" variable or pass data_dir= to a folder holding {local_files}"
            " (the project's shared/data folder has GSM8K and MATH500)."
        ) from exc


def load_hub_gsm8k(split: str) -> list[Problem]:
    """GSM8K ``split`` from ``openai/gsm8k`` (ids ``gsm8k-{split}-{index:05d}``)."""
    dataset_id, config = HUB_GSM8K
    rows = hub_rows(dataset_id, config, split, "gsm8k/{train,test}.jsonl")
    location = f"hub:{dataset_id}/{split}"
    return [gsm8k_problem(rec, split, i, location, i + 1) for i, rec in enumerate(rows)]


def load_hub_math500(split: str) -> list[Problem]:
    """MATH500 from ``HuggingFaceH4/MATH-500`` (id = ``unique_id``)."""
    rows = hub_rows(HUB_MATH500, None, split, "math500/test.jsonl")
    location = f"hub:{HUB_MATH500}/{split}"
    return [math_problem(rec, "math500", location, i + 1) for i, rec in enumerate(rows)]


def _hendrycks_problem(rec: dict[str, Any], split: str, config: str, index: int) -> Problem:
    location, line = f"hub:{HUB_MATH}/{config}/{split}", index + 1
    question = text_field(rec, "problem", location, line)
    solution = text_field(rec, "solution", location, line)
    assert question is not None and solution is not None
    answer = last_boxed_content(solution)
    if answer is None:
        raise ProblemFormatError(f"{location}: line {line}: field 'solution' has no \\boxed{{}}")
    return Problem(
        id=f"math-{split}-{config}-{index:05d}",
        question=question,
        answer=answer,
        solution=solution,
        level=level_field(rec, location, line),
        subject=text_field(rec, "type", location, line, required=False),
        source="math",
    )


def load_hub_math(split: str) -> list[Problem]:
    """The full MATH ``split`` from ``EleutherAI/hendrycks_math``, configs in alphabetical order.

    Gold = the last ``\\boxed{}`` of the solution; ids ``math-{split}-{config}-{index:05d}``.

    Raises:
        DatasetUnavailableError: A config cannot be loaded.
        ProblemFormatError: A solution has no ``\\boxed{}``.
    """
    problems: list[Problem] = []
    for config in HUB_MATH_CONFIGS:
        local_files = f"math/{split}.jsonl (PRM800K math_splits format)"
        rows = hub_rows(HUB_MATH, config, split, local_files)
        problems.extend(_hendrycks_problem(rec, split, config, i) for i, rec in enumerate(rows))
    return problems
