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

from sprint_lab.core.heads import is_placebo

__all__ = [
    "check_unique",
    "grid_shape",
    "group_title",
    "noise_floor",
    "require_columns",
    "split_placebos",
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


def split_placebos(
    df: pd.DataFrame, keep_off_grid: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The head rows and the placebo rows of a deltas table.

    A placebo row is one whose ``config`` is a placebo label (``"none~1"``, ...); rows without
    a label (no ``config`` column, or a missing value) are placebos when at layer -1, head -1.
    Rows at a negative layer or head (the position of the baseline and the placebos) are never
    head rows, so the first table is safe to lay out on a layers x heads grid or to join on
    (layer, head).

    Args:
        df: a deltas table (``SweepResult.deltas()``), with ``layer`` and ``head`` columns.
        keep_off_grid: keep the non-placebo rows at a negative layer or head (head sets across
            layers, whole layers) in the first table, for a configuration axis.

    Returns:
        ``(heads, placebos)``: two tables with the columns of ``df``, each in ``df``'s order.

    Example:
        >>> d = pd.DataFrame({"config": ["none~1", "L0H1", "none~2"], "layer": [-1, 0, -1],
        ...                   "head": [-1, 1, -1], "delta": [0.0, 0.1, -0.02]})
        >>> heads, placebos = split_placebos(d)
        >>> heads["config"].tolist(), placebos["config"].tolist()
        (['L0H1'], ['none~1', 'none~2'])
    """
    layer = pd.to_numeric(df["layer"], errors="coerce") if "layer" in df.columns else None
    head = pd.to_numeric(df["head"], errors="coerce") if "head" in df.columns else None
    configs = df["config"] if "config" in df.columns else pd.Series(None, index=df.index)
    labelled = np.array(configs.map(lambda c: isinstance(c, str)), dtype=bool)
    placebo = np.array(configs.map(lambda c: isinstance(c, str) and is_placebo(c)), dtype=bool)
    if layer is not None and head is not None:  # unlabelled rows: placebos sit at (-1, -1)
        placebo = placebo | (~labelled & ((layer == -1) & (head == -1)).to_numpy(bool))
    off_grid = np.zeros(len(df), dtype=bool)
    for position in () if keep_off_grid else (layer, head):
        if position is not None:
            off_grid |= (position < 0).to_numpy(bool)
    return df.loc[~placebo & ~off_grid], df.loc[placebo]


def noise_floor(values: Any) -> float | None:
    """The largest ``|value|`` among the finite placebo deltas; ``None`` when there are none.

    A head's delta whose size does not exceed this could have come from batching alone.

    Example:
        >>> noise_floor([0.0, -0.03, 0.01, float("nan")]), noise_floor([])
        (0.03, None)
    """
    array = np.asarray(values, dtype=float).ravel()
    finite = array[np.isfinite(array)]
    return float(np.abs(finite).max()) if finite.size else None
