"""Paired statistics for accuracy changes measured on the same questions.

Pruning a head and re-answering the same questions gives *paired* 0/1 outcomes, so the change in
accuracy is judged on the per-question differences: a percentile bootstrap over questions gives a
confidence interval for mean(pruned) - mean(baseline), McNemar's exact test uses only the
discordant questions, and Benjamini-Hochberg q-values control the false discovery rate across the
many heads of a sweep. Wilson intervals cover single accuracies.

Example:
    >>> base = [True, True, False, False, True, False]
    >>> pruned = [True, True, True, True, True, False]
    >>> round(mcnemar_exact(base, pruned), 3)
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float
from scipy.stats import binom, norm

ArrayLike = np.ndarray | Sequence[bool] | Sequence[int]


def _binary(values: ArrayLike, name: str) -> Bool[np.ndarray, " n"]:
    """A 1-D bool array from bools or 0/1 numbers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1 values")
        arr = arr.astype(bool)
    return arr


def _paired(baseline: ArrayLike, pruned: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    base, prun = _binary(baseline, "baseline"), _binary(pruned, "pruned")
    if base.shape != prun.shape:
        raise ValueError(f"baseline has {base.size} outcomes but pruned has {prun.size}")
    if base.size == 0:
        raise ValueError("need at least one paired outcome")
    return base, prun


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def paired_bootstrap_ci(
    baseline: ArrayLike,
    pruned: ArrayLike,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI for ``mean(pruned) - mean(baseline)`` over the same questions.

    Questions are resampled with replacement, keeping each question's pair together. A pair's
    difference is -1, 0 or +1, so one resample is fully described by how many of each it drew:
    the resamples are drawn as multinomial counts, which is exactly the bootstrap distribution
    and needs O(n_boot) memory whatever the number of questions.

    Args:
        baseline: 0/1 or bool outcomes of the reference model, one per question.
        pruned: outcomes of the pruned model on the same questions, same order.
        n_boot: number of bootstrap resamples.
        level: confidence level.
        seed: seed of the numpy generator (same seed, same interval).

    Returns:
        ``(low, high)``, in accuracy units (e.g. ``(-0.04, 0.02)``).

    Example:
        >>> paired_bootstrap_ci([1, 1, 0, 0], [1, 1, 0, 0])
        (0.0, 0.0)
    """
    base, prun = _paired(baseline, pruned)
    level = _check_level(level)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    diff = prun.astype(np.int8) - base.astype(np.int8)
    n = diff.size
    probs = np.array([(diff == -1).sum(), (diff == 0).sum(), (diff == 1).sum()]) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=int(n_boot))
    means = (counts[:, 2] - counts[:, 0]) / n
    alpha = 1.0 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mcnemar_exact(baseline: ArrayLike, pruned: ArrayLike) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes.

    With ``b`` questions right only at baseline and ``c`` right only after pruning, under the null
    each discordant question is a fair coin: ``p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])``.
    No discordant pair gives ``p = 1``.

    Example:
        >>> mcnemar_exact([1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 0])   # b=1, c=5: 14/64
        0.21875
    """
    base, prun = _paired(baseline, pruned)
    b = int((base & ~prun).sum())
    c = int((~base & prun).sum())
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


def benjamini_hochberg(pvalues: ArrayLike | Sequence[float]) -> Float[np.ndarray, "..."]:
    """Benjamini-Hochberg q-values (FDR-adjusted p-values), same shape as ``pvalues``.

    ``q_(i) = min_{j >= i} p_(j) * m / j`` over the ascending p-values, clipped to 1, so q-values
    are monotone in p. NaNs stay NaN and do not count towards ``m``.

    Raises:
        ValueError: for p-values outside [0, 1].

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005]).tolist()
        [0.02, 0.04, 0.04, 0.02]
    """
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    flat = p.reshape(-1)
    ok = ~np.isnan(flat)
    values = flat[ok]
    if values.size and ((values < 0) | (values > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = values.size
    if m:
        order = np.argsort(values, kind="stable")
        scaled = values[order] * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.minimum(adjusted, 1.0)
        q_flat = q.reshape(-1)
        q_flat[ok] = out
        q = q_flat.reshape(p.shape)
    return q


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``k`` correct out of ``n``.

    Example:
        >>> low, high = wilson_interval(0, 10)
        >>> low, round(high, 4)
        (0.0, 0.2775)
    """
    level = _check_level(level)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k}, n={n}")
    z = float(norm.ppf(1.0 - (1.0 - level) / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, free of rounding
    high = 1.0 if k == n else min(1.0, centre + half)
    return float(low), float(high)
