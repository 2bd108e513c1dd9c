"""Compare ways of spending N answers per question: SPRINT, random heads, best-of-N sampling.

Every strategy produces up to N candidate answers per test question. ``sprint`` prunes the
selector's top-N heads (one greedy answer each), ``random_heads`` prunes N random candidates,
``best_of_n`` samples the unpruned model N times (T=0.9, top-k 40, top-p 0.95), ``no_prune`` is
the greedy baseline and ``oracle`` counts a question if *any* candidate head solves it (the
ceiling for head selection). ``pass_at_n`` (any answer correct) is the paper's metric and assumes
a perfect verifier; ``majority_at_n`` needs none.

Each strategy is one function ``strategy(ctx) -> (scores, std)`` registered by name in
:data:`STRATEGY_TABLE`; :func:`compare_strategies` builds one :class:`StrategyContext` (the test
sweep's answers, the settings) and runs the table in order. A new strategy is one more entry.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sprint_lab.core.heads import BASELINE
from sprint_lab.core.model import LabModel
from sprint_lab.generation.generator import generate
from sprint_lab.selection.selector import SprintSelector
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.run import sweep as run_sweep
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import PromptTemplate, get_template

BEST_OF_N_SAMPLING = {"temperature": 0.9, "top_k": 40, "top_p": 0.95}

Answer = tuple[Any, bool]
"""An extracted answer and whether it is correct."""

Scores = dict[int, dict[str, float]]
"""Per N, per metric: the value over questions."""


def _vote_key(extracted: Any) -> Any:
    """Normalise an extracted answer for voting (numbers compare as numbers)."""
    if extracted is None or (isinstance(extracted, float) and math.isnan(extracted)):
        return None
    text = str(extracted).strip()
    try:
        return round(float(text.replace(",", "")), 6)
    except ValueError:
        return text


def pass_at_n(correct: Sequence[bool]) -> bool:
    """Any of the answers is correct (the SPRINT paper's best-of-N metric)."""
    return bool(any(correct))


def majority_at_n(extracted: Sequence[Any], correct: Sequence[bool]) -> bool:
    """Correctness of the most common extracted answer; ties go to the earliest-ranked answer.

    Answers with nothing extracted do not vote; with no votes at all the question counts wrong.

    Example:
        >>> majority_at_n(["4", "5", "5"], [True, False, False])
        False
        >>> majority_at_n(["4", "5"], [True, False])   # tie: the first-ranked answer wins
        True
    """
    keys = [_vote_key(e) for e in extracted]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return False
    best = max(counts.values())
    for key, ok in zip(keys, correct, strict=True):
        if key is not None and counts[key] == best:
            return bool(ok)
    return False


def score_answers(answers: dict[str, list[Answer]], ns: Sequence[int]) -> Scores:
    """pass@n / majority@n / first-answer accuracy per n, over questions.

    Example:
        >>> score_answers({"q1": [("4", True), ("5", False)], "q2": [("3", False), ("3", False)]},
        ...               [1, 2])[2]
        {'pass_at_n': 0.5, 'majority_at_n': 0.5, 'accuracy': 0.5}
    """
    out = {}
    for n in ns:
        firsts = [list(zip(*a[:n], strict=True)) for a in answers.values()]
        out[n] = {
            "pass_at_n": float(np.mean([pass_at_n(c) for _, c in firsts])),
            "majority_at_n": float(np.mean([majority_at_n(e, c) for e, c in firsts])),
            "accuracy": float(np.mean([c[0] for _, c in firsts])),
        }
    return out


@dataclass
class StrategyContext:
    """What every strategy may read: the test questions, their answers, the settings.

    Attributes:
        model: the language model (only best-of-N generates).
        problems: the held-out test questions.
        selector: the fitted selector (only SPRINT uses it).
        labels: candidate head labels, in the selector's order.
        ns: the N values to score (sorted, unique).
        seeds: seeds of the random-heads strategy.
        table: the test sweep's rows indexed by ``(question_id, config)``.
        sampling: keyword arguments of :func:`best_of_n_answers` (everything but ``n``).
        out: folder for ``best_of_n.parquet``, or ``None``.
    """

    model: LabModel
    problems: list[Any]
    selector: SprintSelector
    labels: list[str]
    ns: list[int]
    seeds: Sequence[int]
    table: pd.DataFrame
    sampling: dict[str, Any]
    out: Path | None

    def answer(self, question_id: str, config: str) -> Answer:
        """The extracted answer and its correctness for one question under one config."""
        row = self.table.loc[(question_id, config)]
        return row["extracted"], bool(row["correct"])


def no_prune(ctx: StrategyContext) -> tuple[Scores, Scores | None]:
    """The unpruned model's greedy answer, the same for every N."""
    base = {p.id: [ctx.answer(p.id, BASELINE)] for p in ctx.problems}
    return {n: score_answers(base, [1])[1] for n in ctx.ns}, None


def sprint(ctx: StrategyContext) -> tuple[Scores, Scores | None]:
    """One greedy answer per head of the selector's top N for each question."""
    ranking = ctx.selector.rank(ctx.problems)
    ranked = ranking.groupby("question_id", sort=False)["head"].apply(list).to_dict()
    top = ctx.ns[-1]
    answers = {p.id: [ctx.answer(p.id, h) for h in ranked[p.id][:top]] for p in ctx.problems}
    return score_answers(answers, ctx.ns), None


def random_heads(ctx: StrategyContext) -> tuple[Scores, Scores | None]:
    """N candidate heads drawn at random per question: mean over ``seeds``, with the spread."""
    per_seed = []
    for seed in ctx.seeds:
        rng = random.Random(seed)
        picks = {p.id: rng.sample(ctx.labels, ctx.ns[-1]) for p in ctx.problems}
        answers = {q: [ctx.answer(q, h) for h in hs] for q, hs in picks.items()}
        per_seed.append(score_answers(answers, ctx.ns))
    metrics = {n: per_seed[0][n] for n in ctx.ns}
    mean = {n: {m: float(np.mean([s[n][m] for s in per_seed])) for m in metrics[n]} for n in ctx.ns}
    std = {n: {m: float(np.std([s[n][m] for s in per_seed])) for m in metrics[n]} for n in ctx.ns}
    return mean, std


def best_of_n(ctx: StrategyContext) -> tuple[Scores, Scores | None]:
    """``max(ns)`` samples per question from the unpruned model (stored under ``out``)."""
    samples = best_of_n_answers(ctx.model, ctx.problems, n=ctx.ns[-1], **ctx.sampling)
    if ctx.out is not None:
        ctx.out.mkdir(parents=True, exist_ok=True)
        samples.to_parquet(ctx.out / "best_of_n.parquet", index=False)
    sampled = {
        q: list(zip(g["extracted"], g["correct"], strict=True))
        for q, g in samples.groupby("question_id", sort=False)
    }
    return score_answers(sampled, ctx.ns), None


def oracle(ctx: StrategyContext) -> tuple[Scores, Scores | None]:
    """A question counts if *any* candidate head solves it: the ceiling for head selection."""
    solved = {p.id: [(None, any(ctx.answer(p.id, h)[1] for h in ctx.labels))] for p in ctx.problems}
    value = score_answers(solved, [1])[1]["pass_at_n"]
    return {n: {"pass_at_n": value} for n in ctx.ns}, None


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: how it scores, and whether its plain first answer is reported.

    Attributes:
        run: ``run(ctx) -> (scores, std)``; ``std`` is ``None`` for deterministic strategies.
        reports_accuracy: report ``accuracy`` (the first answer, at N = 1).
    """

    run: Callable[[StrategyContext], tuple[Scores, Scores | None]]
    reports_accuracy: bool = True


#: The strategies :func:`compare_strategies` scores, in table order.
STRATEGY_TABLE: dict[str, Strategy] = {
    "no_prune": Strategy(no_prune),
    "sprint": Strategy(sprint),
    "random_heads": Strategy(random_heads),
    "best_of_n": Strategy(best_of_n, reports_accuracy=False),
    "oracle": Strategy(oracle, reports_accuracy=False),
}
STRATEGIES = tuple(STRATEGY_TABLE)


def _rows(
    name: str, strategy: Strategy, scores: Scores, std: Scores | None, n_questions: int
) -> list[dict[str, Any]]:
    """One tidy row per (n, metric) of one strategy."""
    return [
        {
            "strategy": name,
            "n": n,
            "metric": metric,
            "value": value,
            "std": std[n][metric] if std else 0.0,
            "n_questions": n_questions,
        }
        for n, metrics in scores.items()
        for metric, value in metrics.items()
        if metric != "accuracy" or (strategy.reports_accuracy and n == 1)
    ]


def _check_held_out(test_problems: Sequence[Any], selector: SprintSelector, ns: list[int]) -> None:
    overlap = sorted({p.id for p in test_problems} & set(getattr(selector, "train_ids_", ())))
    if overlap:
        raise ValueError(
            f"{len(overlap)} test questions were used to fit the selector (e.g. {overlap[:3]}); "
            "compare on held-out questions only"
        )
    n_heads = len(selector.heads)
    if not ns or ns[0] < 1 or ns[-1] > n_heads:
        raise ValueError(f"every N must be in [1, {n_heads}] (the candidate heads), got {ns}")


def _answer_table(
    sweep: SweepResult, test_problems: Sequence[Any], labels: list[str], grade_mode: str
) -> pd.DataFrame:
    """The sweep's rows indexed by ``(question_id, config)``, checked to hold every answer."""
    if sweep.meta.get("grade_mode", grade_mode) != grade_mode:
        raise ValueError(
            f"the sweep was graded with mode {sweep.meta['grade_mode']!r}, not {grade_mode!r}"
        )
    table = sweep.table.set_index(["question_id", "config"])
    missing = [
        (p.id, c)
        for p in test_problems
        for c in [BASELINE, *labels]
        if (p.id, c) not in table.index
    ]
    if missing:
        raise ValueError(f"the test sweep lacks {len(missing)} answers, e.g. {missing[:3]}")
    return table


def compare_strategies(
    model: LabModel,
    test_problems: Sequence[Problem],
    selector: SprintSelector,
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    prompt: str | PromptTemplate = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 32,
    sweep: SweepResult | None = None,
    out: str | os.PathLike | None = None,
    sample_seed: int = 1,
    grade_mode: str = "flexible",
    progress: bool = True,
    executor: Any = "local",
    placebos: int = 1,
) -> pd.DataFrame:
    """Score every strategy of :data:`STRATEGY_TABLE` on held-out questions.

    The greedy answers of every candidate head on the test questions come from one sweep
    (passed in, or run here with the sweep runner's batching and prefix cache; with ``out=``
    it is stored and resumed, so answers already computed are not generated again). SPRINT and
    random heads are then scored from that table without new generation; best-of-N draws
    ``max(ns)`` samples per question from the unpruned model.

    Args:
        model: the :class:`~sprint_lab.core.model.LabModel`.
        test_problems: held-out questions; none may have been used to fit ``selector``.
        selector: a fitted :class:`~sprint_lab.selection.selector.SprintSelector`.
        ns: the N values to report (each at most the number of candidate heads).
        seeds: seeds for ``random_heads`` (the value is the mean over seeds, ``std`` the spread).
        prompt: prompt template for every strategy.
        max_new_tokens: generation limit.
        batch_size: rows per forward pass.
        sweep: an existing sweep of ``test_problems`` over the selector's heads to reuse.
        out: folder for the test sweep's store (and ``best_of_n.parquet``).
        sample_seed: seed of the best-of-N sampler (the authors used 1).
        grade_mode: answer extraction mode for every strategy (``"first"`` box for the SPRINT
            authors' MATH500 rule); a passed-in ``sweep`` must have used the same mode.
        progress: show progress bars.
        executor: where the test sweep runs, passed to :func:`~sprint_lab.sweeps.run.sweep`.
        placebos: unpruned configurations added to the test sweep (its noise floor); their
            check (:meth:`~sprint_lab.sweeps.result.SweepResult.placebo_check`) is kept in
            ``table.attrs["placebo_check"]``. They are never candidates.

    Returns:
        One row per (strategy, n, metric): ``strategy``, ``n``, ``metric`` (``pass_at_n``,
        ``majority_at_n``, and ``accuracy`` for the plain first answer), ``value``, ``std``,
        ``n_questions``.

    Raises:
        ValueError: when a test question was used to train or validate the selector, or an
            N exceeds the number of candidate heads.

    Example:
        Needs a fitted selector and generation on a real model (minutes on a CPU):

        >>> table = compare_strategies(model, test, selector, ns=(1, 2, 4))   # doctest: +SKIP
        >>> table.query("metric == 'pass_at_n'").pivot(index="n", columns="strategy",
        ...                                            values="value")        # doctest: +SKIP
    """
    test_problems = list(test_problems)
    ns = sorted({int(n) for n in ns})
    _check_held_out(test_problems, selector, ns)
    heads = list(selector.heads)
    labels = [h.label for h in heads]
    if sweep is None:
        sweep = run_sweep(
            model,
            test_problems,
            configs=heads,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            out=None if out is None else Path(out) / "test_sweep",
            progress=progress,
            grade_mode=grade_mode,
            executor=executor,
            placebos=placebos,
        )
    ctx = StrategyContext(
        model=model,
        problems=test_problems,
        selector=selector,
        labels=labels,
        ns=ns,
        seeds=seeds,
        table=_answer_table(sweep, test_problems, labels, grade_mode),
        sampling={
            "prompt": prompt,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "seed": sample_seed,
            "progress": progress,
            "grade_mode": grade_mode,
        },
        out=None if out is None else Path(out),
    )
    rows = []
    for name, strategy in STRATEGY_TABLE.items():
        scores, std = strategy.run(ctx)
        rows += _rows(name, strategy, scores, std, len(test_problems))
    table = pd.DataFrame(rows, columns=["strategy", "n", "metric", "value", "std", "n_questions"])
    table.attrs["placebo_check"] = sweep.placebo_check().to_dict("records")
    return table


def best_of_n_answers(
    model: LabModel,
    problems: Sequence[Problem],
    *,
    n: int,
    prompt: str | PromptTemplate = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 32,
    seed: int = 1,
    progress: bool = False,
    grade_mode: str = "flexible",
) -> pd.DataFrame:
    """``n`` samples per question from the unpruned model (T=0.9, top-k 40, top-p 0.95), graded.

    Returns:
        One row per (question, sample): ``question_id``, ``sample``, ``completion``,
        ``extracted``, ``correct``, ``n_tokens``.
    """
    template = get_template(prompt)
    completions = generate(
        model,
        [template.parts(p.question, model.tokenizer) for p in problems],
        num_samples=n,
        max_new_tokens=max_new_tokens,
        stop=template.stop_strings(model.tokenizer),
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **BEST_OF_N_SAMPLING,
    )
    rows = []
    for completion in completions:
        problem = problems[completion.prompt_index]
        verdict = grade(completion.text, problem, mode=grade_mode)
        rows.append(
            {
                "question_id": problem.id,
                "sample": completion.sample_index,
                "completion": completion.text,
                "extracted": verdict.extracted,
                "correct": bool(verdict.correct),
                "n_tokens": completion.n_tokens,
            }
        )
    return pd.DataFrame(rows)
