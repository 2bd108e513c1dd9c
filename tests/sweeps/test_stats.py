"""Tests for sprint_lab.sweeps.stats against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, false_discovery_control, norm

from sprint_lab.sweeps.stats import (
    benjamini_hochberg,
    mcnemar_exact,
    paired_bootstrap_ci,
    wilson_interval,
)


def _pairs(b: int, c: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes with b right-only-at-baseline, c right-only-pruned, and concordant pairs."""
    base = [True] * b + [False] * c + [True] * both + [False] * neither
    prun = [False] * b + [True] * c + [True] * both + [False] * neither
    return np.array(base), np.array(prun)


# --------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 5, 14 / 64),  # 2 * (C(6,0) + C(6,1)) / 2^6
        (0, 6, 2 / 64),  # 2 * C(6,0) / 2^6
        (5, 1, 14 / 64),  # symmetric in b, c
        (3, 3, 1.0),  # 2 * P(X <= 3 | n=6) = 2 * 42/64 > 1 -> clipped
        (2, 8, 2 * (1 + 10 + 45) / 1024),
        (0, 0, 1.0),  # no discordant pair
    ],
)
def test_mcnemar_exact_hand_values(b: int, c: int, expected: float) -> None:
    base, prun = _pairs(b, c, both=4, neither=3)
    assert mcnemar_exact(base, prun) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        b, c = (int(v) for v in rng.integers(0, 40, size=2))
        if b + c == 0:
            continue
        base, prun = _pairs(b, c, both=int(rng.integers(0, 10)))
        expected = binomtest(min(b, c), b + c, 0.5).pvalue
        assert mcnemar_exact(base, prun) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_accepts_ints_and_rejects_bad_input() -> None:
    assert mcnemar_exact([1, 0, 0], [0, 1, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outcomes"):
        mcnemar_exact([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([1, 2], [1, 0])
    with pytest.raises(ValueError, match="at least one"):
        mcnemar_exact([], [])


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_degenerate_cases_are_exact() -> None:
    base, prun = _pairs(0, 0, both=5, neither=5)
    assert paired_bootstrap_ci(base, prun) == (0.0, 0.0)
    base, prun = _pairs(0, 7)  # every question gained
    assert paired_bootstrap_ci(base, prun) == (1.0, 1.0)


def test_bootstrap_is_deterministic_and_seed_dependent() -> None:
    base, prun = _pairs(80, 140, both=500, neither=280)  # 1000 questions: a fine grid of means
    first = paired_bootstrap_ci(base, prun, n_boot=200, seed=3)
    assert first == paired_bootstrap_ci(base, prun, n_boot=200, seed=3)
    assert first != paired_bootstrap_ci(base, prun, n_boot=200, seed=4)


def test_bootstrap_matches_naive_resampling() -> None:
    base, prun = _pairs(8, 14, both=50, neither=28)  # delta = +0.06 on 100 questions
    low, high = paired_bootstrap_ci(base, prun, n_boot=20000, seed=0)
    rng = np.random.default_rng(123)
    diff = prun.astype(float) - base.astype(float)
    idx = rng.integers(0, diff.size, size=(20000, diff.size))
    ref_low, ref_high = np.quantile(diff[idx].mean(axis=1), [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.011)
    assert high == pytest.approx(ref_high, abs=0.011)
    # normal approximation of the paired difference: 0.06 +- 1.96 * sd / sqrt(n)
    sd = diff.std() / math.sqrt(diff.size)
    assert low == pytest.approx(0.06 - 1.96 * sd, abs=0.015)
    assert high == pytest.approx(0.06 + 1.96 * sd, abs=0.015)
    assert low < 0.06 < high


def test_bootstrap_interval_narrows_with_more_questions_and_lower_level() -> None:
    small = paired_bootstrap_ci(*_pairs(2, 4, both=10, neither=4))
    large = paired_bootstrap_ci(*_pairs(20, 40, both=100, neither=40))
    assert (large[1] - large[0]) < (small[1] - small[0])
    wide = paired_bootstrap_ci(*_pairs(20, 40, both=100, neither=40), level=0.99)
    assert (wide[1] - wide[0]) > (large[1] - large[0])


def test_bootstrap_rejects_bad_arguments() -> None:
    base, prun = _pairs(1, 2)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_ci(base, prun, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_ci(base, prun, n_boot=0)
    with pytest.raises(ValueError, match="1-D"):
        paired_bootstrap_ci(np.ones((2, 2)), np.ones((2, 2)))


# --------------------------------------------------------------------------- BH
def test_benjamini_hochberg_hand_values() -> None:
    # sorted p: 0.005, 0.01, 0.03, 0.04 -> p*m/rank: 0.02, 0.02, 0.04, 0.04 (already monotone)
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    # step-up minimum: 0.03*3/2 = 0.045 is lowered to the next rank's 0.04*3/3 = 0.04
    np.testing.assert_allclose(benjamini_hochberg([0.04, 0.03, 0.001]), [0.04, 0.04, 0.003])
    np.testing.assert_allclose(benjamini_hochberg([0.9, 0.8]), [0.9, 0.9])
    np.testing.assert_allclose(benjamini_hochberg([1.0, 1.0, 0.6]), [1.0, 1.0, 1.0])


def test_benjamini_hochberg_matches_scipy_and_is_monotone() -> None:
    p = np.random.default_rng(0).uniform(size=200) ** 3
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q, false_discovery_control(p, method="bh"), rtol=1e-12)
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= 0)
    assert np.all(q >= p) and np.all(q <= 1)


def test_benjamini_hochberg_nan_safe_and_shape_preserving() -> None:
    q = benjamini_hochberg([0.01, np.nan, 0.04, 0.03, 0.005])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3, 4]], [0.02, 0.04, 0.04, 0.02])  # m = 4, not 5
    grid = benjamini_hochberg(np.array([[0.01, 0.04], [0.03, 0.005]]))
    assert grid.shape == (2, 2)
    np.testing.assert_allclose(grid, [[0.02, 0.04], [0.04, 0.02]])
    assert benjamini_hochberg([]).shape == (0,)
    assert np.isnan(benjamini_hochberg([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.5, 1.2])


# --------------------------------------------------------------------------- Wilson
def test_wilson_hand_values() -> None:
    z2 = norm.ppf(0.975) ** 2
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(z2 / (10 + z2), rel=1e-12)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(10 / (10 + z2), rel=1e-12)
    # k = n/2 is centred on 1/2
    low, high = wilson_interval(50, 100)
    assert (low + high) / 2 == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(("k", "n", "level"), [(3, 10, 0.95), (37, 120, 0.9), (1, 500, 0.99)])
def test_wilson_matches_scipy(k: int, n: int, level: float) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert wilson_interval(k, n, level) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="level"):
        wilson_interval(1, 10, level=0)


def test_mcnemar_power_matches_a_simulation():
    from sprint_lab.sweeps.stats import mcnemar_power

    rng = np.random.default_rng(0)
    n, delta, psi, level = 300, 0.06, 0.2, 0.05
    gain, loss = (psi + delta) / 2, (psi - delta) / 2
    hits = 0
    trials = 3000
    for _ in range(trials):
        kind = rng.choice(3, size=n, p=[gain, loss, 1 - psi])  # 0: flips up, 1: flips down
        base = kind == 1
        pruned = kind == 0
        hits += mcnemar_exact(base, pruned) <= level
    assert abs(hits / trials - mcnemar_power(n, delta, psi, level)) < 0.03


def test_required_questions_grows_with_heads_and_shrinks_with_effect():
    from sprint_lab.sweeps.stats import mcnemar_power, required_questions

    one = required_questions(0.05, 0.3, n_heads=1, discordance=0.2)
    many = required_questions(0.05, 0.3, n_heads=270, discordance=0.2)
    bigger = required_questions(0.10, 0.3, n_heads=270, discordance=0.2)
    assert one < many and bigger < many
    assert mcnemar_power(many, 0.05, 0.2, 0.05 / 270) >= 0.8
    assert mcnemar_power(many - 1, 0.05, 0.2, 0.05 / 270) < 0.8
    with pytest.raises(ValueError, match="discordance=0.01 is impossible"):
        required_questions(0.05, 0.3, discordance=0.01)
    with pytest.raises(ValueError, match="baseline accuracy"):
        required_questions(0.05, 1.3)


def test_minimum_detectable_effect_is_where_power_crosses():
    from sprint_lab.sweeps.stats import mcnemar_power, minimum_detectable_effect

    mde = minimum_detectable_effect(500, 0.25, n_heads=18)
    assert (
        mcnemar_power(500, mde, 0.25, 0.05 / 18)
        >= 0.8
        > mcnemar_power(500, mde - 0.01, 0.25, 0.05 / 18)
    )
