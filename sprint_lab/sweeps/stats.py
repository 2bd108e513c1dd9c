"""Paired statistics for accuracy changes measured on the same questions.

Pruning a head and re-answering the same questions gives *paired* 0/1 outcomes, so the change in
accuracy is judged on the per-question differences: a percentile bootstrap over questions gives a
confidence interval for mean(pruned) - mean(baseline), McNemar's exact test uses only the
discordant questions, and Benjamini-Hochberg q-values control the false discovery rate across the
many heads of a sweep. Wilson intervals cover single accuracies.

**Power.** Before a sweep, :func:`required_questions` says how many questions it needs to find an
accuracy change ``delta`` with the exact McNemar test after Benjamini-Hochberg across the heads;
after it, :func:`minimum_detectable_effect` says what its questions could find. Both use the exact
power of McNemar's test (:func:`mcnemar_power`): with ``n`` questions and discordance ``psi`` (the
fraction whose verdict flips either way), the discordant count is ``Binom(n, psi)`` and, given
``D`` of them, the ones that flip to correct are ``Binom(D, (psi + delta) / (2 psi))``; the test
rejects when the two-sided exact p-value is at most the per-head level. BH across ``m`` heads
rejects the smallest p-value at ``alpha / m`` when a single head carries the effect, so that is the
level used: conservative when several heads matter.

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


def independent_discordance(baseline: float, delta: float) -> float:
    """Discordance if the pruned model's verdicts were independent of the baseline's.

    ``p_b (1 - p_p) + p_p (1 - p_b)`` with ``p_p = p_b + delta``: the default when the real
    discordance is unknown (a sweep measures it; pass that instead).

    Example:
        >>> round(independent_discordance(0.3, 0.05), 3)
        0.44
    """
    pruned = baseline + delta
    return baseline * (1 - pruned) + pruned * (1 - baseline)


def _check_design(baseline: float, delta: float, discordance: float) -> None:
    if not 0.0 < baseline < 1.0:
        raise ValueError(f"baseline accuracy must be in (0, 1), got {baseline}")
    if not 0.0 < abs(delta) < 1.0 or not 0.0 <= baseline + delta <= 1.0:
        raise ValueError(f"delta={delta} is not a possible change from baseline={baseline}")
    gain, loss = (discordance + delta) / 2, (discordance - delta) / 2
    if not (abs(delta) <= discordance <= 1.0 and gain <= 1 - baseline + 1e-12 and loss <= baseline):
        raise ValueError(
            f"discordance={discordance} is impossible for baseline={baseline}, delta={delta}: it "
            f"must be at least |delta| and leave (discordance + delta)/2 <= 1 - baseline"
        )


def mcnemar_power(n: int, delta: float, discordance: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided McNemar test on ``n`` paired questions.

    Args:
        n: questions answered by both configurations.
        delta: true accuracy change (pruned - baseline).
        discordance: fraction of questions whose verdict differs (``>= |delta|``).
        alpha: the per-test level.

    Example:
        >>> round(mcnemar_power(658, 0.05, 0.2), 2)
        0.8
    """
    if n < 1 or discordance <= 0:
        return 0.0
    counts = np.arange(int(n) + 1)
    flips_up = min(1.0, max(0.0, (discordance + delta) / (2 * discordance)))
    k = binom.ppf(alpha / 2, counts, 0.5)
    k = np.where(binom.cdf(k, counts, 0.5) <= alpha / 2, k, k - 1)
    reject = binom.cdf(k, counts, flips_up) + binom.sf(counts - k - 1, counts, flips_up)
    reject = np.where(k >= 0, reject, 0.0)
    return float(binom.pmf(counts, int(n), discordance) @ reject)


def required_questions(
    delta: float = 0.05,
    baseline: float = 0.3,
    n_heads: int = 1,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | None = None,
    max_questions: int = 1_000_000,
) -> int:
    """Questions a sweep needs to find an accuracy change of ``delta`` for one head.

    Paired design, exact McNemar test, Benjamini-Hochberg across ``n_heads`` heads (per-head level
    ``alpha / n_heads``, see the module docstring).

    Args:
        delta: the accuracy change to detect (e.g. ``0.05`` = 5 points).
        baseline: the unpruned accuracy.
        n_heads: heads in the sweep (the BH family).
        alpha: false discovery rate.
        power: wanted probability of detecting the change.
        discordance: fraction of questions whose verdict flips; default
            :func:`independent_discordance` (conservative; a sweep measures a smaller one).
        max_questions: give up beyond this many.

    Raises:
        ValueError: impossible settings, or more than ``max_questions`` needed.

    Example:
        >>> required_questions(0.05, 0.3, n_heads=1, discordance=0.2)  # normal approx.: 625
        658
        >>> required_questions(0.05, 0.3, n_heads=270, discordance=0.2) > 1319
        True
    """
    psi = independent_discordance(baseline, delta) if discordance is None else float(discordance)
    _check_design(baseline, delta, psi)
    level = alpha / max(1, int(n_heads))
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    high = 8
    while mcnemar_power(high, delta, psi, level) < power:
        high *= 2
        if high > max_questions:
            raise ValueError(
                f"more than {max_questions} questions are needed to detect delta={delta} "
                f"(discordance {psi:.3f}, level {level:.2g})"
            )
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if mcnemar_power(middle, delta, psi, level) >= power:
            high = middle
        else:
            low = middle
    return high


def minimum_detectable_effect(
    n: int, discordance: float, n_heads: int = 1, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest accuracy gain ``n`` questions detect with the given power (NaN if none).

    The discordance is held at the measured value, so the effect can be at most that
    (every flip in one direction); when even that is not detectable the result is NaN.

    Example:
        >>> round(minimum_detectable_effect(658, 0.2), 2)
        0.05
        >>> bool(np.isnan(minimum_detectable_effect(10, 0.1, n_heads=100)))
        True
    """
    level = alpha / max(1, int(n_heads))
    psi = float(discordance)
    if n < 1 or not psi > 0 or mcnemar_power(n, psi, psi, level) < power:
        return float("nan")
    low, high = 0.0, psi
    for _ in range(40):
        middle = (low + high) / 2
        if mcnemar_power(n, middle, psi, level) >= power:
            high = middle
        else:
            low = middle
    return float(high)
