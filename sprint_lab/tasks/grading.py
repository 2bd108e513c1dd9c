"""Grading completions: extract the final answer, compare it with the gold one, say how.

Grading happens in two stages: an *extractor* pulls a final answer out of the completion
(lm-eval's strict / flexible regexes for GSM8K, the last or first ``\\boxed{}`` for MATH; see
:mod:`sprint_lab.tasks.extraction`), then the answer is compared with the gold one
(``math.isclose`` with ``abs_tol=1e-4`` as in SPRINT, or ``math-verify`` for LaTeX; see
:mod:`sprint_lab.tasks.verify`). A completion that runs on into a new ``Q:`` / ``Question:`` /
``Problem:`` turn is cut there first, so a hallucinated next exemplar is never graded.

Which extractor and comparison apply follows from the ``task``: a grader name
(:data:`~sprint_lab.tasks.graders.GRADERS`: ``"gsm8k"``, ``"math"``) or a registered task
(:data:`~sprint_lab.tasks.task.TASKS`: ``"arith"`` grades like ``"gsm8k"``, ``"math500"`` like
``"math"``); by default, the problem's own :attr:`~sprint_lab.tasks.records.Problem.task`.

Example:
    >>> grade("3 + 4 = 7. The answer is 7.", "7")
    Verdict(correct=True, extracted='7', extractor='flexible:last_number')
"""

from __future__ import annotations

from dataclasses import dataclass

from sprint_lab.tasks.extraction import cut_run_on
from sprint_lab.tasks.graders import GRADERS, Grader
from sprint_lab.tasks.latex import boxed_contents, last_boxed_content
from sprint_lab.tasks.records import DEFAULT_GRADER, Problem
from sprint_lab.tasks.task import TASKS

__all__ = [
    "Verdict",
    "boxed_contents",
    "cut_run_on",
    "extract_answer",
    "grade",
    "grader_for",
    "is_correct",
    "last_boxed_content",
]


@dataclass(frozen=True)
class Verdict:
    """Outcome of grading one completion.

    Attributes:
        correct: Whether the extracted answer matches the gold answer.
        extracted: The extracted answer text (``None`` when nothing was found).
        extractor: Which rule produced it: ``"strict:####"``, ``"strict:the_answer_is"``,
            ``"flexible:last_number"``, ``"boxed:last"``, ``"boxed:first"``, ``"minerva"``,
            ``"none"`` (nothing found) or ``"timeout"`` (math-verify ran out of time).

    Example:
        >>> Verdict(True, "7", "strict:####").correct
        True
    """

    correct: bool
    extracted: str | None
    extractor: str


def grader_for(task: str) -> tuple[Grader, str]:
    """The grader of ``task`` and its default extraction mode.

    Args:
        task: A grader name (``"gsm8k"``, ``"math"``) or a registered task name (``"arith"``,
            ``"math500"``, ...).

    Returns:
        ``(grader, default mode)``: a task's :attr:`~sprint_lab.tasks.task.Task.grade_mode`,
        else the grader's first mode.

    Raises:
        ValueError: Unknown task.

    Example:
        >>> grader, mode = grader_for("math500")
        >>> grader.name, mode
        ('math', 'flexible')
    """
    if isinstance(task, str) and task in TASKS:
        return GRADERS[TASKS[task].grader], TASKS[task].grade_mode
    if isinstance(task, str) and task in GRADERS:
        return GRADERS[task], GRADERS[task].modes[0]
    valid = ", ".join(dict.fromkeys([*GRADERS, *TASKS]))
    raise ValueError(f"Unknown task {task!r}: expected one of {valid}")


def _extract(text: str, task: str, mode: str | None) -> tuple[Grader, str | None, str]:
    grader, default_mode = grader_for(task)
    mode = default_mode if mode is None else mode
    if mode not in grader.modes:
        raise ValueError(
            f"Unknown mode {mode!r} for task {task!r}: expected one of {', '.join(grader.modes)}"
        )
    return grader, *grader.extract(cut_run_on(text), mode)


def extract_answer(text: str, task: str = "gsm8k", mode: str | None = "flexible") -> str | None:
    """Extract the final answer of a completion.

    GSM8K / arith (lm-eval ``gsm8k`` / ``gsm8k_cot`` filters):

    - ``"strict"``: the first match of ``#### (\\-?[0-9\\.\\,]+)`` or
      ``The answer is (\\-?[0-9\\.\\,]+).`` (the final ``.`` is lm-eval's any-character, so
      a bare "The answer is 72" at the very end gives "7", exactly as in lm-eval).
    - ``"flexible"``: the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)``.

    Both strip commas, ``$`` and one trailing period.

    MATH: ``"flexible"``/``"last"``: the last ``\\boxed{}`` (also ``\\fbox{}`` and ``\\boxed 5``),
    ``"first"``: the first box (SPRINT's choice), each falling back to Minerva's
    "Final Answer: The final answer is $X$. I hope it is correct."; ``"strict"``: last box only.

    The completion is first cut at a new ``Q:`` / ``Question:`` / ``Problem:`` turn.

    Args:
        text: The model's completion (without the prompt).
        task: A grader or task name (``"gsm8k"``, ``"arith"``, ``"math"``, ``"math500"``, ...).
        mode: Extraction mode, see above; ``None``: the task's default.

    Returns:
        The answer text, or ``None`` when nothing could be extracted.

    Raises:
        ValueError: Unknown task or mode.

    Example:
        >>> extract_answer("She pays $1,200. The answer is 1,200.", mode="strict")
        '1200'
        >>> extract_answer(r"\\boxed{2} no wait \\boxed{3}", task="math", mode="first")
        '2'
    """
    return _extract(text, task, mode)[1]


def grade(
    completion: str,
    problem: Problem | str,
    task: str | None = None,
    mode: str | None = "flexible",
    *,
    timeout_s: float = 10.0,
) -> Verdict:
    """Grade one completion against a problem's gold answer.

    GSM8K / arith: the extracted number is compared with ``math.isclose(pred, gold, rel_tol=0,
    abs_tol=1e-4)`` (SPRINT). MATH: ``math_verify.verify(parse("$" + gold + "$"),
    parse("\\boxed{" + pred + "}"))``, gold first. Safe off the main thread: there the check
    runs in a reused worker process without signals, and a check that takes longer than
    ``timeout_s`` counts as incorrect with ``extractor="timeout"``.

    Args:
        completion: The model's completion (without the prompt).
        problem: A :class:`Problem`, or the gold answer as a string.
        task: A grader or task name (``"gsm8k"``, ``"arith"``, ``"math"``, ...); default
            ``problem.task`` (or ``"gsm8k"`` for a plain gold string).
        mode: Extraction mode (see :func:`extract_answer`); ``None``: the task's default.
        timeout_s: Time limit for one math-verify check off the main thread.

    Returns:
        A :class:`Verdict`.

    Raises:
        ValueError: Unknown task or mode.

    Example:
        >>> grade(r"so $x = \\boxed{\\dfrac{1}{2}}$", r"\\frac{1}{2}", task="math").correct
        True
    """
    gold = problem.answer if isinstance(problem, Problem) else str(problem)
    if task is None:
        task = problem.task if isinstance(problem, Problem) else DEFAULT_GRADER
    grader, extracted, extractor = _extract(completion, task, mode)
    if extracted is None:
        return Verdict(False, None, "none")
    equal = grader.equal(gold, extracted, timeout_s)
    if equal is None:
        return Verdict(False, extracted, "timeout")
    return Verdict(equal, extracted, extractor)


def is_correct(
    completion: str,
    problem: Problem | str,
    task: str | None = None,
    mode: str | None = "flexible",
    *,
    timeout_s: float = 10.0,
) -> bool:
    """``grade(...).correct``.

    Example:
        >>> is_correct("#### 1,000", "1000", mode="strict")
        True
    """
    return grade(completion, problem, task, mode, timeout_s=timeout_s).correct
