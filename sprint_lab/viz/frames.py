"""Input normalisation shared by the figure builders: tables in, validated numpy/pandas out.

The builders accept what the library produces -- deltas tables (read through
:meth:`~sprint_lab.sweeps.result.SweepResult.deltas_of`), torch tensors or numpy arrays -- and
check up front that the needed columns exist and that keys are unique, so a
mistake surfaces as a clear ``ValueError`` instead of a silently wrong plot. Hover text built
from user data (question texts) is flattened, truncated and HTML-escaped here.

Example:
    >>> truncate_label("  a <b>   c ", 5)
    'a &lt;b…'
    >>> grid_shape(5)
    (2, 3)
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "check_unique",
    "grid_shape",
    "group_title",
    "require_columns",
    "to_numpy",
    "truncate_label",
]


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise unless ``df`` has every one of ``columns``.

    Args:
        df: the table to check.
        columns: the required column names.
        what: how the error message names the table (e.g. ``"deltas table"``).

    Raises:
        ValueError: naming the missing columns and the ones present.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; got {list(df.columns)}")


def to_numpy(values: Any) -> np.ndarray:
    """Convert a torch Tensor, array or nested list to a float numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=float)


def truncate_label(text: Any, max_chars: int) -> str:
    """Collapse whitespace, truncate with an ellipsis and HTML-escape for hover labels."""
    flat = " ".join(str(text).split())
    if len(flat) > max_chars:
        flat = flat[: max(max_chars - 1, 0)].rstrip() + "…"
    return html.escape(flat)


def check_unique(df: pd.DataFrame, keys: list[str], what: str, hint: str = "") -> None:
    """Raise when ``df`` has more than one row for some combination of ``keys``.

    Args:
        df: the table to check.
        keys: the columns that must identify a row.
        what: how the error message names the table.
        hint: appended to the message (e.g. which ``by=`` to pass instead).

    Raises:
        ValueError: showing the first duplicated key.

    Example:
        >>> check_unique(pd.DataFrame({"layer": [0, 0], "head": [0, 1]}), ["layer", "head"], "t")
    """
    dup = df.duplicated(keys)
    if dup.any():
        example = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"{what} has several rows for {example}; one row per {tuple(keys)} is expected{hint}"
        )


def group_title(by: str, value: Any) -> str:
    """A facet or legend title for one group: ``"Level 3"`` for levels, else the value.

    Example:
        >>> group_title("level", 3.0), group_title("subject", "algebra")
        ('Level 3', 'algebra')
    """
    if by == "level" and isinstance(value, int | float | np.integer | np.floating):
        return f"Level {int(value)}"
    return str(value)


def grid_shape(n_panels: int, max_cols: int = 3) -> tuple[int, int]:
    """``(rows, cols)`` of a subplot grid for ``n_panels`` facets, at most ``max_cols`` wide."""
    cols = min(n_panels, max_cols)
    return math.ceil(n_panels / cols), cols
