"""Group-knockout screening: rank many heads from few evaluations by sparse regression.

A single-head sweep ranks ``L x H`` heads with ``L x H`` evaluations per question. Most heads,
though, barely matter for a given task: the vector of per-head effects is *sparse*. Compressed
sensing recovers a sparse vector from far fewer random linear measurements than it has entries,
and Bair, Xu, Sun and Kolter (arXiv 2603.03335) apply this to localising the components of a
network: instead of knocking out one head at a time, knock out a random *group* of heads per
evaluation and untangle the heads' contributions afterwards.

:func:`screen` does exactly that:

1. Draw ``n_masks`` random masks (``numpy.random.default_rng(seed)``), each zeroing
   ``group_size`` distinct candidate heads through the one head gate of
   :mod:`sprint_lab.core.gate` (the head's output before ``o_proj`` is multiplied by 0 at every
   position and decoding step).
2. Score the unpruned model once and every mask once, on the same questions. ``y[m]`` is mask
   ``m``'s score minus the baseline's, and the design ``X[m, j]`` is 1 if candidate ``j`` is
   knocked out in mask ``m``. With ``mask_blocks=b`` the questions are split into ``b`` blocks,
   each scored under ``n_masks`` masks of its own and its own baseline: ``b x n_masks`` rows of
   ``X`` for the same evaluations, each averaged over fewer questions (more distinct masks, the
   thing compressed sensing needs, at the price of noisier rows).
3. Fit the linear model ``y ≈ X β`` with the lasso (:func:`recover_effects`): the L1 penalty
   (chosen by cross-validation, ``sklearn.linear_model.LassoCV``) sets most coefficients to
   exactly 0 and keeps the few heads whose knockout explains the scores. ``β_j`` is head ``j``'s
   *effect*: the change in the metric from knocking that head out, in the metric's units, with
   the same sign convention as a sweep's delta (positive = removing the head *raises* the
   metric). There is no intercept: with nothing knocked out the change is 0 by construction
   (and with a fixed group size an intercept could not be told apart from a shift of all heads).
4. Bootstrap the masks (``n_bootstrap`` resamples of the rows of ``X``, the lasso refitted at
   the cross-validated penalty): a head's *stability* is the fraction of resamples where its
   coefficient is non-zero, and ``ci_low``/``ci_high`` are the 2.5 and 97.5 percentiles of its
   coefficient.

Why it works: if only ``k`` of ``p`` heads matter and effects add up roughly linearly, on the
order of ``k log(p / k)`` random masks suffice, against ``p`` single-head evaluations. It fails
gracefully where the assumptions fail: interactions between heads (two heads that back each
other up show no effect alone but a large one together) leave residuals the lasso spreads
over the group, so treat the result as a *shortlist* (:meth:`ScreenResult.shortlist`) to confirm
with a real single-head :func:`sprint_lab.sweep`, not as a replacement for it.

Two metrics:

- ``"logprob"`` (default, fast): the teacher-forced log-probability of the gold final-answer
  tokens, summed over the answer's tokens and averaged over questions, computed like the
  single-head log-prob proxy of :mod:`sprint_lab.importance.proxies` (one forward per
  (mask, question), no generation), so effects are in nats and comparable with
  ``head_importance(..., proxies=["logprob"])``.
- ``"accuracy"``: greedy, batch-invariant generation of a full answer under each mask, graded
  like a sweep; effects are changes in accuracy (fractions of questions). Much slower, and with
  few questions its values are coarse (multiples of ``1 / n_questions``).

References:
    Bair, Xu, Sun, Kolter: compressed-sensing localisation of model components,
    arXiv 2603.03335. Tibshirani (1996), the lasso. Candès, Romberg, Tao (2006) and Donoho
    (2006), compressed sensing. Meinshausen and Bühlmann (2010), stability selection.

Example:
    >>> result = screen(model, problems, sl.all_heads(model, layers=[0]), n_masks=4,
    ...                 group_size=2, n_bootstrap=3)
    >>> result.effects.columns.tolist()
    ['config', 'layer', 'head', 'effect', 'ci_low', 'ci_high', 'stability', 'rank']
    >>> result.meta["evaluations"]  # (4 masks + baseline) x 4 questions
    20
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.gate import check_head, masks_for
from sprint_lab.core.heads import Head, as_heads, config_label
from sprint_lab.core.model import LabModel
from sprint_lab.generation.generator import generate
from sprint_lab.importance.proxies import answer_logprobs
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import PromptTemplate, get_template

__all__ = ["METRICS", "Recovery", "ScreenResult", "recover_effects", "screen"]

#: Metrics accepted by :func:`screen`.
METRICS: tuple[str, ...] = ("logprob", "accuracy")

_MAX_ITER = 20_000
"""Coordinate-descent iterations for each lasso fit (the problems are small)."""


# --------------------------------------------------------------------------------------------
# Sparse recovery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """Per-column lasso effects with their bootstrap stability (see :func:`recover_effects`).

    Attributes:
        effect: the coefficient of each column of the design (the change in ``y`` when that
            column's head is knocked out).
        ci_low: 2.5th bootstrap percentile of each coefficient (NaN without bootstrap).
        ci_high: 97.5th bootstrap percentile of each coefficient (NaN without bootstrap).
        stability: fraction of bootstrap resamples where the coefficient is non-zero (NaN
            without bootstrap).
        alpha: the penalty chosen by cross-validation (0.0 when ``y`` is all zeros).
        cv_folds: the number of cross-validation folds used.
    """

    effect: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    stability: np.ndarray
    alpha: float
    cv_folds: int


def _sklearn() -> tuple[Any, Any, Any, Any]:
    """``(Lasso, LassoCV, KFold, ConvergenceWarning)``, imported on first use."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso, LassoCV
        from sklearn.model_selection import KFold
    except ImportError as error:
        raise SetupError(
            "group-knockout screening needs scikit-learn for its lasso regression; "
            "install it with `pip install scikit-learn`"
        ) from error
    return Lasso, LassoCV, KFold, ConvergenceWarning


def _check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int, or an :class:`InputError` naming the setting (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InputError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


@no_type_check  # validates the design and the scores itself (InputError naming the problem)
def recover_effects(
    design: Float[np.ndarray, "n_masks n_heads"],
    y: Float[np.ndarray, " n_masks"],
    *,
    seed: int = 0,
    n_bootstrap: int = 50,
) -> Recovery:
    """Recover per-column effects from knockout measurements with a cross-validated lasso.

    Fits ``y ≈ design @ β`` without intercept by ``sklearn.linear_model.LassoCV`` (the penalty
    picked by ``min(5, n_masks)``-fold cross-validation over shuffled, seeded folds), then refits
    ``sklearn.linear_model.Lasso`` at that penalty on ``n_bootstrap`` resamples of the rows
    (drawn with ``numpy.random.default_rng([seed, 1])``) for the stability and the percentile
    interval of each coefficient. Everything is deterministic for a given ``seed``.

    Args:
        design: ``[n_masks, n_heads]``, 1 where a head is knocked out in a mask, else 0.
        y: the change of the metric under each mask (mask score minus baseline score).
        seed: seeds the cross-validation folds and the bootstrap.
        n_bootstrap: bootstrap resamples (0: no intervals, stability NaN).

    Returns:
        A :class:`Recovery`.

    Raises:
        InputError: a design that is not 2-D, fewer than two rows, a ``y`` of another length,
            non-finite values, or a negative ``n_bootstrap``.
        SetupError: scikit-learn is not installed.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> design = np.zeros((40, 10))
        >>> for row in design:
        ...     row[rng.choice(10, size=3, replace=False)] = 1
        >>> truth = np.zeros(10); truth[[2, 7]] = [-1.0, 0.5]
        >>> rec = recover_effects(design, design @ truth, n_bootstrap=10)
        >>> np.round(rec.effect[[2, 7]], 1).tolist(), float(rec.stability[2])
        ([-1.0, 0.5], 1.0)
    """
    x = np.asarray(design, dtype=float)
    y = np.asarray(y, dtype=float)
    n_bootstrap = _check_int("n_bootstrap", n_bootstrap, 0)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InputError(
            f"design has shape {x.shape}; expected [n_masks, n_heads] with n_masks >= 2"
        )
    if y.shape != (x.shape[0],):
        raise InputError(f"y has shape {y.shape}; expected ({x.shape[0]},), one value per mask")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("design and y must be finite (a NaN score? check the metric's inputs)")
    lasso, lasso_cv, kfold, convergence_warning = _sklearn()
    n_masks, n_heads = x.shape
    folds = min(5, n_masks)
    nan = np.full(n_heads, np.nan)
    if not np.any(y):  # no mask moved the metric: every effect is 0
        zeros = np.zeros(n_heads)
        if n_bootstrap == 0:
            return Recovery(zeros, nan, nan, nan, 0.0, folds)
        return Recovery(zeros, zeros.copy(), zeros.copy(), zeros.copy(), 0.0, folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", convergence_warning)
        fit = lasso_cv(
            fit_intercept=False,
            cv=kfold(n_splits=folds, shuffle=True, random_state=seed),
            max_iter=_MAX_ITER,
            random_state=seed,
        ).fit(x, y)
        alpha = float(fit.alpha_)
        effect = np.asarray(fit.coef_, dtype=float)
        if n_bootstrap == 0:
            return Recovery(effect, nan, nan, nan, alpha, folds)
        rng = np.random.default_rng([seed, 1])
        coefs = np.empty((n_bootstrap, n_heads))
        for b in range(n_bootstrap):
            rows = rng.integers(0, n_masks, size=n_masks)
            model = lasso(alpha=alpha, fit_intercept=False, max_iter=_MAX_ITER)
            coefs[b] = model.fit(x[rows], y[rows]).coef_
    return Recovery(
        effect=effect,
        ci_low=np.percentile(coefs, 2.5, axis=0),
        ci_high=np.percentile(coefs, 97.5, axis=0),
        stability=(coefs != 0).mean(axis=0),
        alpha=alpha,
        cv_folds=folds,
    )


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class ScreenResult:
    """What :func:`screen` measured and recovered.

    Attributes:
        effects: one row per candidate head, sorted by ``rank``: ``config`` (``"L3H5"``),
            ``layer``, ``head``, ``effect`` (lasso coefficient: the change in the metric from
            knocking the head out; positive = removing it raises the metric), ``ci_low`` /
            ``ci_high`` (bootstrap 2.5/97.5 percentiles of the coefficient), ``stability``
            (fraction of bootstrap resamples where it is non-zero) and ``rank`` (1 = largest
            ``|effect|``; ties broken by higher stability, then layer and head).
        masks: the design, one row per mask (index ``mask``, 0-based), one column per candidate
            head label, 1 where the head is knocked out.
        scores: one row per evaluated configuration of each question block, each block's
            baseline first: ``block`` (0-based, see ``mask_blocks``), ``mask`` (-1 for the
            baseline), ``config`` (``"none"`` or ``"L0H1+L2H3"``), ``n_pruned``, ``score``
            (the metric, averaged over the block's questions) and ``delta`` (score minus the
            block's baseline).
        meta: settings and bookkeeping: ``metric``, ``n_masks``, ``group_size``, ``seed``,
            ``n_bootstrap``, ``mask_blocks``, ``evaluations`` ((mask, question) evaluations,
            baseline included), ``alpha`` (the penalty chosen), ``cv_folds``, ``model``, ``prompt``,
            ``heads``, ``question_ids``, ``n_questions``, ``seconds`` and, for accuracy,
            ``max_new_tokens`` and ``grade_mode``.

    Example:
        >>> effects = pd.DataFrame({"config": ["L0H1", "L1H0"], "layer": [0, 1], "head": [1, 0],
        ...     "effect": [-0.4, 0.1], "ci_low": [-0.5, 0.0], "ci_high": [-0.3, 0.2],
        ...     "stability": [1.0, 0.6], "rank": [1, 2]})
        >>> result = ScreenResult(effects, pd.DataFrame(), pd.DataFrame())
        >>> result.shortlist(1)
        [Head(layer=0, head=1)]
        >>> result.as_deltas()[["config", "delta"]].to_dict("list")
        {'config': ['L0H1', 'L1H0'], 'delta': [-0.4, 0.1]}
    """

    effects: pd.DataFrame
    masks: pd.DataFrame
    scores: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @no_type_check  # validates k itself (InputError naming it)
    def shortlist(self, k: int) -> list[Head]:
        """The ``k`` heads with the largest ``|effect|`` (fewer if there are fewer candidates).

        The list goes straight to ``sprint_lab.sweep(model, problems, heads=...)`` to confirm
        the screen with real single-head runs.

        Raises:
            InputError: ``k`` is not an int >= 1.
        """
        k = _check_int("k", k, 1)
        top = self.effects.sort_values("rank", kind="stable").head(k)
        return [
            Head(int(layer), int(head))
            for layer, head in zip(top["layer"], top["head"], strict=True)
        ]

    def as_deltas(self) -> pd.DataFrame:
        """The effects as a deltas table: ``config``, ``layer``, ``head``, ``delta`` (the effect),
        ``ci_low``, ``ci_high``, ``stability``.

        It has the columns :func:`sprint_lab.viz.heatmap.heatmap` reads (``layer``, ``head`` and
        the ``delta`` metric; the CI shows on hover) and that
        :func:`sprint_lab.importance.correlate.rank_correlation` comparisons join on, so
        ``sl.viz.heatmap(result.as_deltas(), title=...)`` draws the screen as a heat map.
        """
        out = self.effects.rename(columns={"effect": "delta"})
        columns = ["config", "layer", "head", "delta", "ci_low", "ci_high", "stability"]
        return out[columns].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Scoring a batch of configurations
# --------------------------------------------------------------------------------------------


def _logprob_scores(
    model: LabModel,
    problems: Sequence[Problem],
    configs: list[list[Head] | None],
    template: PromptTemplate,
    batch_size: int,
    max_target_tokens: int,
    progress: bool,
) -> np.ndarray:
    """Mean over questions of the gold answer's teacher-forced log-prob, per configuration."""
    lp = answer_logprobs(
        model,
        problems,
        configs,
        prompt=template,
        batch_size=batch_size,
        max_target_tokens=max_target_tokens,
        progress=progress,
    )
    return lp.mean(dim=0).double().numpy()


def _accuracy_scores(
    model: LabModel,
    problems: Sequence[Problem],
    configs: list[list[Head] | None],
    template: PromptTemplate,
    batch_size: int,
    max_new_tokens: int,
    grade_mode: str,
    progress: bool,
) -> np.ndarray:
    """Accuracy of greedy, batch-invariant answers per configuration (rows config-major)."""
    tokenizer = model.tokenizer
    prompts = [template.parts(p.question, tokenizer) for p in problems]
    masks = masks_for(model, configs).repeat_interleave(len(problems), dim=0)
    completions = generate(
        model,
        prompts * len(configs),
        head_masks=masks,
        max_new_tokens=max_new_tokens,
        stop=list(template.stop_strings(tokenizer)),
        batch_size=batch_size,
        deterministic=True,
        progress=progress,
    )
    correct = [
        grade(c.text, problems[i % len(problems)], mode=grade_mode).correct
        for i, c in enumerate(completions)
    ]
    return np.asarray(correct, dtype=float).reshape(len(configs), len(problems)).mean(axis=1)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _candidates(model: LabModel, heads: Iterable[Head | str | tuple[int, int]]) -> list[Head]:
    """The candidate heads, checked: readable, present in ``model``, non-empty, distinct."""
    try:
        candidates = as_heads(heads)
        for head in candidates:
            check_head(model, head)
    except ValueError as error:
        raise InputError(f"heads: {error}") from error
    if not candidates:
        raise InputError(
            "heads is empty: give at least one candidate head, e.g. sl.all_heads(model, [0])"
        )
    repeated = [f"{h.label} ({n} times)" for h, n in Counter(candidates).items() if n > 1]
    if repeated:
        raise InputError(f"heads repeat: {', '.join(repeated)}; give each candidate head once")
    return candidates


def _group_size(group_size: Any, n_candidates: int) -> int:
    """The checked group size; default about a tenth of the candidates, at least 2."""
    if group_size is None:
        return min(n_candidates, max(2, round(n_candidates / 10)))
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int | np.integer)
        or not 1 <= group_size <= n_candidates
    ):
        raise InputError(
            f"group_size must be an int between 1 and the number of candidate heads "
            f"({n_candidates}), got {group_size!r}"
        )
    return int(group_size)


def _draw_masks(n_candidates: int, n_masks: int, group_size: int, seed: int) -> np.ndarray:
    """``[n_masks, n_candidates]`` 0/1 design: each row knocks out ``group_size`` candidates."""
    rng = np.random.default_rng(seed)
    design = np.zeros((n_masks, n_candidates), dtype=np.int8)
    for row in design:
        row[rng.choice(n_candidates, size=group_size, replace=False)] = 1
    return design


def _effects_frame(candidates: list[Head], recovery: Recovery) -> pd.DataFrame:
    """The tidy effects table, ranked by ``|effect|`` (ties: stability, then layer, head)."""
    frame = pd.DataFrame(
        {
            "config": [h.label for h in candidates],
            "layer": np.array([h.layer for h in candidates], dtype=np.int64),
            "head": np.array([h.head for h in candidates], dtype=np.int64),
            "effect": recovery.effect.astype(float),
            "ci_low": recovery.ci_low.astype(float),
            "ci_high": recovery.ci_high.astype(float),
            "stability": recovery.stability.astype(float),
        }
    )
    order = np.lexsort(
        (frame["head"], frame["layer"], -np.nan_to_num(frame["stability"]), -frame["effect"].abs())
    )
    frame = frame.iloc[order].reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _scores_frame(
    configs: list[list[Head] | None], values: np.ndarray, block: int, first_mask: int
) -> pd.DataFrame:
    """One row per configuration of one question block (its baseline first), with its score
    and its change from that block's baseline."""
    return pd.DataFrame(
        {
            "block": np.full(len(configs), block, dtype=np.int64),
            "mask": np.array(
                [-1, *range(first_mask, first_mask + len(configs) - 1)], dtype=np.int64
            ),
            "config": [config_label(c) for c in configs],
            "n_pruned": np.array([len(c or ()) for c in configs], dtype=np.int64),
            "score": values.astype(float),
            "delta": (values - values[0]).astype(float),
        }
    )


def _blocks(problems: list[Problem], mask_blocks: Any) -> list[list[Problem]]:
    """``problems`` split in order into ``mask_blocks`` blocks of near-equal size."""
    if (
        isinstance(mask_blocks, bool)
        or not isinstance(mask_blocks, int | np.integer)
        or not 1 <= mask_blocks <= len(problems)
    ):
        raise InputError(
            f"mask_blocks must be an int between 1 and the number of problems "
            f"({len(problems)}), got {mask_blocks!r}"
        )
    size, extra = divmod(len(problems), mask_blocks)  # the first ``extra`` blocks get one more
    bounds = [b * size + min(b, extra) for b in range(mask_blocks + 1)]
    return [problems[bounds[b] : bounds[b + 1]] for b in range(mask_blocks)]


def _score_blocks(
    model: LabModel,
    blocks: list[list[Problem]],
    candidates: list[Head],
    design: np.ndarray,
    n_masks: int,
    metric: str,
    template: PromptTemplate,
    settings: dict[str, Any],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Score each block's baseline and its ``n_masks`` rows of ``design``; ``y`` and the scores."""
    y, scores = [], []
    for b, block in enumerate(blocks):
        rows = design[b * n_masks : (b + 1) * n_masks]
        configs = [None] + [[candidates[j] for j in np.flatnonzero(row)] for row in rows]
        if metric == "logprob":
            values = _logprob_scores(
                model, block, configs, template, settings["batch_size"],
                settings["max_target_tokens"], settings["progress"],
            )  # fmt: skip
        else:
            values = _accuracy_scores(
                model, block, configs, template, settings["batch_size"],
                settings["max_new_tokens"], settings["grade_mode"], settings["progress"],
            )  # fmt: skip
        y.append(values[1:] - values[0])
        scores.append(_scores_frame(configs, values, b, b * n_masks))
    return np.concatenate(y), pd.concat(scores, ignore_index=True)


@no_type_check  # validates its settings itself (InputError naming the setting and its value)
def screen(
    model: LabModel,
    problems: Sequence[Problem],
    heads: Iterable[Head | str | tuple[int, int]],
    *,
    n_masks: int = 64,
    group_size: int | None = None,
    metric: str = "logprob",
    seed: int = 0,
    n_bootstrap: int = 50,
    prompt: str | PromptTemplate = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 16,
    grade_mode: str = "flexible",
    progress: bool = False,
    max_target_tokens: int = 512,
    mask_blocks: int = 1,
) -> ScreenResult:
    """Screen candidate heads by random group knockouts and lasso recovery (module docstring).

    Costs ``(n_masks + 1) x len(problems)`` evaluations (teacher-forced forwards for
    ``"logprob"``, generated and graded answers for ``"accuracy"``), whatever the number of
    candidates; a single-head sweep of the same heads costs ``(len(heads) + 1) x len(problems)``.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: the questions every mask is scored on (non-empty).
        heads: the candidate heads (``Head``, labels or ``(layer, head)`` pairs), e.g.
            ``sl.all_heads(model, layers=[0, 1])``.
        n_masks: random knockout masks to evaluate per question block (>= 2), besides the
            baseline.
        group_size: heads knocked out per mask (1..len(heads)); default about a tenth of the
            candidates, at least 2.
        metric: ``"logprob"`` (teacher-forced gold-answer log-prob, nats) or ``"accuracy"``
            (greedy generation, graded).
        seed: seeds the masks (``numpy.random.default_rng(seed)``), the cross-validation folds
            and the bootstrap.
        n_bootstrap: bootstrap resamples of the masks for stability and intervals (0: none).
        prompt: template name or object (the one the sweep uses).
        max_new_tokens: generation limit per answer (``"accuracy"`` only).
        batch_size: rows per forward pass (or per generation batch).
        grade_mode: answer-extraction mode for grading (``"accuracy"`` only).
        progress: show a progress bar.
        max_target_tokens: cap on teacher-forced target tokens (``"logprob"`` only); the final
            answer must lie within it.
        mask_blocks: split the questions (in order) into this many blocks, each scored under
            ``n_masks`` masks of its own (and the baseline): the lasso then sees
            ``mask_blocks x n_masks`` distinct masks, each averaged over fewer questions, for
            the same number of evaluations (each mask's few-shot prefix runs once per block).
            1 (default): every question under the same masks.

    Returns:
        A :class:`ScreenResult`.

    Raises:
        InputError: an unknown metric, ``n_masks < 2``, a bad ``group_size``, ``seed``,
            ``n_bootstrap`` or ``batch_size``, empty ``problems``, empty, unknown or repeated
            heads.
        SetupError: scikit-learn is not installed.

    Example:
        >>> heads = sl.all_heads(model, layers=[0, 1])
        >>> result = screen(model, problems[:2], heads, n_masks=5, n_bootstrap=4, seed=1)
        >>> result.meta["group_size"], result.masks.shape, len(result.scores)
        (2, (5, 8), 6)
        >>> len(result.shortlist(3)), result.scores["config"].iloc[0]
        (3, 'none')
    """
    if metric not in METRICS:
        raise InputError(f"metric={metric!r} is unknown; choose one of {', '.join(METRICS)}")
    n_masks = _check_int("n_masks", n_masks, 2)
    seed = _check_int("seed", seed, 0)
    n_bootstrap = _check_int("n_bootstrap", n_bootstrap, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    problems = list(problems)
    if not problems:
        raise InputError("problems is empty: the screen needs at least one question")
    candidates = _candidates(model, heads)
    group_size = _group_size(group_size, len(candidates))
    _sklearn()  # fail before the expensive part if scikit-learn is missing
    template = get_template(prompt)
    blocks = _blocks(problems, mask_blocks)
    design = _draw_masks(len(candidates), n_masks * len(blocks), group_size, seed)
    started = time.perf_counter()
    y, scores = _score_blocks(
        model, blocks, candidates, design, n_masks, metric, template,
        dict(batch_size=batch_size, max_target_tokens=max_target_tokens,
             max_new_tokens=max_new_tokens, grade_mode=grade_mode, progress=progress),
    )  # fmt: skip
    scored = time.perf_counter() - started
    recovery = recover_effects(design, y, seed=seed, n_bootstrap=n_bootstrap)
    labels = [h.label for h in candidates]
    meta = {
        "metric": metric,
        "n_masks": n_masks,
        "mask_blocks": len(blocks),
        "group_size": group_size,
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "evaluations": (n_masks + 1) * len(problems),
        "alpha": recovery.alpha,
        "cv_folds": recovery.cv_folds,
        "model": getattr(model, "name", None),
        "prompt": template.name,
        "heads": labels,
        "question_ids": [p.id for p in problems],
        "n_questions": len(problems),
        "seconds": {"scoring": scored, "total": time.perf_counter() - started},
    }
    if metric == "accuracy":
        meta.update(max_new_tokens=int(max_new_tokens), grade_mode=grade_mode)
    return ScreenResult(
        effects=_effects_frame(candidates, recovery),
        masks=pd.DataFrame(design, index=pd.Index(range(len(design)), name="mask"), columns=labels),
        scores=scores,
        meta=meta,
    )
