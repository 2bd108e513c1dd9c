"""Compare ways of spending N answers per question: SPRINT, random heads, best-of-N sampling.

Every strategy produces up to N candidate answers per test question. ``sprint`` prunes the
selector's top-N heads (one greedy answer each), ``random_heads`` prunes N random candidates,
``best_of_n`` samples the unpruned model N times (T=0.9, top-k 40, top-p 0.95), ``no_prune`` is
the greedy baseline and ``oracle`` counts a question if *any* candidate head solves it (the
ceiling for head selection). ``pass_at_n`` (any answer correct) is the paper's metric and assumes
a perfect verifier; ``majority_at_n`` needs none.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sprint_lab.generation.generator import generate
from sprint_lab.sweeps.result import BASELINE, SweepResult
from sprint_lab.sweeps.run import sweep as run_sweep
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.prompts import get_template

BEST_OF_N_SAMPLING = {"temperature": 0.9, "top_k": 40, "top_p": 0.95}
STRATEGIES = ("no_prune", "sprint", "random_heads", "best_of_n", "oracle")


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


def _score(answers: dict[str, list[tuple[Any, bool]]], ns: Sequence[int]) -> dict[int, dict]:
    """pass@n / majority@n / first-answer accuracy per n, over questions."""
    out = {}
    for n in ns:
        firsts = [list(zip(*a[:n], strict=True)) for a in answers.values()]
        out[n] = {
            "pass_at_n": float(np.mean([pass_at_n(c) for _, c in firsts])),
            "majority_at_n": float(np.mean([majority_at_n(e, c) for e, c in firsts])),
            "accuracy": float(np.mean([c[0] for _, c in firsts])),
        }
    return out


def compare_strategies(
    model,
    test_problems: Sequence[Any],
    selector,
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    prompt: Any = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 32,
    sweep: SweepResult | None = None,
    out: Any = None,
    sample_seed: int = 1,
    grade_mode: str = "flexible",
    progress: bool = True,
) -> pd.DataFrame:
    """Score no_prune, SPRINT top-N, random-N heads, best-of-N sampling and the oracle.

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

    Returns:
        One row per (strategy, n, metric): ``strategy``, ``n``, ``metric`` (``pass_at_n``,
        ``majority_at_n``, and ``accuracy`` for the plain first answer), ``value``, ``std``,
        ``n_questions``.

    Raises:
        ValueError: when a test question was used to train or validate the selector, or an
            N exceeds the number of candidate heads.

    Example:
        >>> table = compare_strategies(model, test, selector, ns=(1, 2, 4))   # doctest: +SKIP
        >>> table.query("metric == 'pass_at_n'").pivot(index="n", columns="strategy",
        ...                                            values="value")        # doctest: +SKIP
    """
    from pathlib import Path

    test_problems = list(test_problems)
    ns = sorted({int(n) for n in ns})
    overlap = sorted({p.id for p in test_problems} & set(getattr(selector, "train_ids_", ())))
    if overlap:
        raise ValueError(
            f"{len(overlap)} test questions were used to fit the selector (e.g. {overlap[:3]}); "
            "compare on held-out questions only"
        )
    heads = list(selector.heads)
    if not ns or ns[0] < 1 or ns[-1] > len(heads):
        raise ValueError(f"every N must be in [1, {len(heads)}] (the candidate heads), got {ns}")
    if sweep is None:
        sweep = run_sweep(
            model,
            test_problems,
            heads,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            out=None if out is None else Path(out) / "test_sweep",
            progress=progress,
            grade_mode=grade_mode,
        )
    if sweep.meta.get("grade_mode", grade_mode) != grade_mode:
        raise ValueError(
            f"the sweep was graded with mode {sweep.meta['grade_mode']!r}, not {grade_mode!r}"
        )
    table = sweep.table.set_index(["question_id", "config"])
    missing = [
        (p.id, c)
        for p in test_problems
        for c in [BASELINE] + [h.label for h in heads]
        if (p.id, c) not in table.index
    ]
    if missing:
        raise ValueError(f"the test sweep lacks {len(missing)} answers, e.g. {missing[:3]}")

    def answer(question_id: str, config: str) -> tuple[Any, bool]:
        row = table.loc[(question_id, config)]
        return row["extracted"], bool(row["correct"])

    rows: list[dict[str, Any]] = []
    n_q = len(test_problems)

    def add(strategy: str, scores: dict[int, dict], std: dict[int, dict] | None = None) -> None:
        for n, metrics in scores.items():
            for metric, value in metrics.items():
                if metric == "accuracy" and (strategy in ("best_of_n", "oracle") or n != 1):
                    continue
                spread = std[n][metric] if std else 0.0
                rows.append(
                    {
                        "strategy": strategy,
                        "n": n,
                        "metric": metric,
                        "value": value,
                        "std": spread,
                        "n_questions": n_q,
                    }
                )

    base = {p.id: [answer(p.id, BASELINE)] for p in test_problems}
    add("no_prune", {n: _score(base, [1])[1] for n in ns})

    ranking = selector.rank(test_problems)
    ranked = ranking.groupby("question_id", sort=False)["head"].apply(list).to_dict()
    sprint = {p.id: [answer(p.id, h) for h in ranked[p.id][: ns[-1]]] for p in test_problems}
    add("sprint", _score(sprint, ns))

    per_seed = []
    labels = [h.label for h in heads]
    for seed in seeds:
        rng = random.Random(seed)
        picks = {p.id: rng.sample(labels, ns[-1]) for p in test_problems}
        per_seed.append(_score({q: [answer(q, h) for h in hs] for q, hs in picks.items()}, ns))
    mean = {n: {m: float(np.mean([s[n][m] for s in per_seed])) for m in per_seed[0][n]} for n in ns}
    std = {n: {m: float(np.std([s[n][m] for s in per_seed])) for m in per_seed[0][n]} for n in ns}
    add("random_heads", mean, std)

    samples = best_of_n_answers(
        model,
        test_problems,
        n=ns[-1],
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=sample_seed,
        progress=progress,
        grade_mode=grade_mode,
    )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        samples.to_parquet(Path(out) / "best_of_n.parquet", index=False)
    sampled = {
        q: list(zip(g["extracted"], g["correct"], strict=True))
        for q, g in samples.groupby("question_id", sort=False)
    }
    add("best_of_n", _score(sampled, ns))

    oracle = {p.id: [(None, any(answer(p.id, h)[1] for h in labels))] for p in test_problems}
    add("oracle", {n: {"pass_at_n": _score(oracle, [1])[1]["pass_at_n"]} for n in ns})
    return pd.DataFrame(rows, columns=["strategy", "n", "metric", "value", "std", "n_questions"])


def best_of_n_answers(
    model,
    problems: Sequence[Any],
    *,
    n: int,
    prompt: Any = "fewshot_cot",
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
