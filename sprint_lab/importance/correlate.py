"""Agreement between a cheap importance proxy and the accuracy deltas a sweep measured.

A proxy is useful if it ranks heads the way the expensive generation sweep does, so agreement is
measured head by head with Spearman's rank correlation (and Pearson's linear one, for
reference), both from ``scipy.stats``. :func:`rank_correlation` is the one place those numbers
are computed (the scatter of :func:`sprint_lab.viz.importance_fig.importance_vs_delta` uses it too);
:func:`correlate` lines an :class:`~sprint_lab.importance.proxies.ImportanceResult` up with a
sweep's deltas and reports every proxy with signs arranged so that positive means "agrees".

Example:
    >>> rank_correlation(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0]))["spearman"]
    0.8
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from sprint_lab.core.heads import is_placebo
from sprint_lab.importance.proxies import ImportanceResult
from sprint_lab.sweeps.result import SweepResult

__all__ = ["CORRELATION_COLUMNS", "correlate", "rank_correlation"]

#: Columns of :func:`correlate`'s table.
CORRELATION_COLUMNS = ("proxy", "against", "n", "spearman", "spearman_p", "pearson", "pearson_p")


def rank_correlation(
    x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"]
) -> dict[str, float | int]:
    """Spearman's rho and Pearson's r of ``x`` and ``y`` with their p-values (scipy.stats).

    Pairs where either value is not finite are dropped first. With fewer than 3 pairs left, or
    a constant input, the correlations are undefined and reported as NaN.

    Args:
        x: one value per item (e.g. a proxy score per head).
        y: the matching values (e.g. the measured accuracy delta per head).

    Returns:
        ``{"n": pairs used, "spearman", "spearman_p", "pearson", "pearson_p"}``.

    Example:
        >>> x = np.array([0.1, 0.5, 0.9, np.nan])
        >>> out = rank_correlation(x, np.array([0.0, -0.1, -0.3, 1.0]))
        >>> out["n"], out["spearman"]
        (3, -1.0)
        >>> bool(np.isnan(rank_correlation(np.ones(4), np.arange(4.0))["pearson"]))
        True
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    out: dict[str, float | int] = {
        "n": int(len(x)),
        "spearman": np.nan,
        "spearman_p": np.nan,
        "pearson": np.nan,
        "pearson_p": np.nan,
    }
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(x, y)
        pearson = stats.pearsonr(x, y)
    out.update(
        spearman=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        pearson=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
    )
    return out


def _against(deltas: Any) -> pd.DataFrame:
    """The heads' ``layer``, ``head`` and ``delta``; placebo and baseline rows left out."""
    deltas = SweepResult.deltas_of(deltas)
    missing = {"layer", "head", "delta"} - set(deltas.columns)
    if missing:
        raise ValueError(f"deltas lacks columns {sorted(missing)} (use SweepResult.deltas())")
    keep = (pd.to_numeric(deltas["layer"]) >= 0) & (pd.to_numeric(deltas["head"]) >= 0)
    if "config" in deltas.columns:
        keep &= ~deltas["config"].astype(str).map(is_placebo).astype(bool)
    heads = deltas.loc[keep, ["layer", "head", "delta"]]
    return heads.astype({"layer": "int64", "head": "int64"})


def _signed_pairs(merged: pd.DataFrame) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(proxy, against, x, y)`` for every proxy present, signs arranged so + means "agrees"."""
    delta = merged["delta"].to_numpy(float)
    pairs = []
    if "gradient" in merged:
        grad = merged["gradient"].to_numpy(float)
        pairs += [("gradient", "-delta", grad, -delta), ("gradient", "|delta|", grad, abs(delta))]
    if "logprob" in merged:
        lp = merged["logprob"].to_numpy(float)
        pairs += [("logprob", "delta", lp, delta), ("|logprob|", "|delta|", abs(lp), abs(delta))]
    return pairs


def correlate(importance: ImportanceResult, deltas: Any) -> pd.DataFrame:
    """How well each proxy predicts the generation sweep's accuracy deltas, head by head.

    Signs are arranged so that a *positive* correlation always means "the proxy agrees":

    - ``gradient`` vs ``-delta``: a high Michel importance means the loss is sensitive to the
      head, so pruning it should *hurt* (a negative ``delta``).
    - ``gradient`` vs ``|delta|``: importance as "pruning changes accuracy", either way.
    - ``logprob`` vs ``delta``: same sign convention as the sweep (positive = pruning helps).
    - ``|logprob|`` vs ``|delta|``: magnitudes only.

    Args:
        importance: an :class:`~sprint_lab.importance.proxies.ImportanceResult`.
        deltas: ``SweepResult.deltas()`` (columns ``layer``, ``head``, ``delta``) or a
            ``SweepResult``. Heads present in both are compared; placebo rows (``config``
            ``"none~1"``, ...) and rows at a negative layer or head are left out.

    Returns:
        One row per (proxy, against): ``proxy``, ``against``, ``n`` (heads compared),
        ``spearman``, ``spearman_p``, ``pearson``, ``pearson_p`` (see :func:`rank_correlation`;
        NaN when fewer than 3 heads or a constant input).

    Raises:
        ValueError: no head in common, or missing columns.

    Example:
        >>> imp = ImportanceResult(gradient=pd.DataFrame([[0.9, 0.1, 0.5]], index=[0]))
        >>> deltas = pd.DataFrame({"layer": [0, 0, 0], "head": [0, 1, 2],
        ...                        "delta": [-0.3, 0.0, -0.1]})
        >>> correlate(imp, deltas)[["proxy", "against", "n", "spearman"]]
              proxy  against  n  spearman
        0  gradient   -delta  3       1.0
        1  gradient  |delta|  3       1.0
    """
    measured = _against(deltas)
    long = importance.to_long()
    wide = long.pivot_table(index=["layer", "head"], columns="proxy", values="score").reset_index()
    merged = wide.merge(measured, on=["layer", "head"], how="inner")
    if merged.empty:
        raise ValueError("the importance result and the deltas have no head in common")
    rows = [
        {"proxy": proxy, "against": against, **rank_correlation(x, y)}
        for proxy, against, x, y in _signed_pairs(merged)
    ]
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
