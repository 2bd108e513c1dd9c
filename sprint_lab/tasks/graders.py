"""Graders: how an extracted answer is pulled out of a completion and compared with the gold one.

A :class:`Grader` pairs an extractor (see :mod:`sprint_lab.tasks.extraction`) with an equality
test. Two are built in:

- ``"gsm8k"`` (GSM8K, arith): lm-eval extraction, then ``math.isclose(pred, gold, rel_tol=0,
  abs_tol=1e-4)`` as in SPRINT (fractions such as ``1/2`` count as numbers; anything that is
  not a number is compared as text, case-insensitively).
- ``"math"`` (MATH, MATH500): a ``\\boxed{}`` answer compared with math-verify
  (:func:`~sprint_lab.tasks.verify.math_equal`).

Every task names its grader (:class:`~sprint_lab.tasks.task.Task`); add another kind of answer
with :func:`register_grader`.

Example:
    >>> g = get_grader("gsm8k")
    >>> g.modes, g.equal("1,000", "1000", 10.0)
    (('flexible', 'strict'), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from sprint_lab.tasks.extraction import clean_number, extract_latex, extract_number
from sprint_lab.tasks.verify import math_equal

__all__ = ["GRADERS", "Grader", "get_grader", "numbers_equal", "register_grader"]

_ABS_TOL = 1e-4


@dataclass(frozen=True)
class Grader:
    """One way of extracting and comparing final answers.

    Attributes:
        name: Registry name (what :attr:`Problem.task <sprint_lab.tasks.records.Problem.task>`
            returns).
        modes: Extraction modes it accepts; the first is the default.
        extract: ``(completion, mode) -> (answer or None, rule)``; the completion is already
            cut at a run-on.
        equal: ``(gold, extracted, timeout_s) -> bool``, or ``None`` when the check timed out.
        description: One line on the method.

    Example:
        >>> get_grader("math").modes
        ('flexible', 'last', 'first', 'strict')
    """

    name: str
    modes: tuple[str, ...]
    extract: Callable[[str, str], tuple[str | None, str]] = field(repr=False, compare=False)
    equal: Callable[[str, str, float], bool | None] = field(repr=False, compare=False)
    description: str = ""


def _to_number(text: str) -> float | None:
    text = clean_number(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(pred: str, gold: str, timeout_s: float = 0.0) -> bool:
    """SPRINT's numeric comparison (``abs_tol=1e-4``); non-numbers compare as cleaned text.

    Args:
        pred: Extracted answer.
        gold: Gold answer.
        timeout_s: Unused (numeric checks are instant); part of the :attr:`Grader.equal` shape.

    Example:
        >>> numbers_equal("0.5", "1/2"), numbers_equal("12.5", "12")
        (True, False)
    """
    p, g = _to_number(pred), _to_number(gold)
    if p is None or g is None:
        return clean_number(pred).lower() == clean_number(gold).lower()
    return math.isclose(p, g, rel_tol=0, abs_tol=_ABS_TOL)


def _numeric_equal(gold: str, pred: str, timeout_s: float) -> bool:
    return numbers_equal(pred, gold)


#: Registry of graders by name.
GRADERS: dict[str, Grader] = {}


def register_grader(grader: Grader, *, replace: bool = False) -> Grader:
    """Add ``grader`` to :data:`GRADERS`.

    Args:
        grader: The grader.
        replace: Allow replacing a grader of the same name.

    Returns:
        The grader.

    Raises:
        ValueError: The name is taken (and ``replace`` is false) or ``modes`` is empty.

    Example:
        >>> exact = Grader("exact", ("flexible",), lambda text, mode: (text.strip(), "exact"),
        ...                lambda gold, pred, timeout_s: gold == pred)
        >>> register_grader(exact).name in GRADERS
        True
        >>> del GRADERS["exact"]
    """
    if not grader.modes:
        raise ValueError(f"grader {grader.name!r} needs at least one mode")
    if grader.name in GRADERS and not replace:
        raise ValueError(f"a grader named {grader.name!r} is already registered")
    GRADERS[grader.name] = grader
    return grader


def get_grader(name: str) -> Grader:
    """Look a grader up by name.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).

    Example:
        >>> get_grader("gsm8k").name
        'gsm8k'
    """
    try:
        return GRADERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown grader {name!r}: expected one of {', '.join(GRADERS)}") from None


register_grader(
    Grader(
        name="gsm8k",
        modes=("flexible", "strict"),
        extract=extract_number,
        equal=_numeric_equal,
        description="lm-eval gsm8k extraction, math.isclose(abs_tol=1e-4) as in SPRINT",
    )
)
register_grader(
    Grader(
        name="math",
        modes=("flexible", "last", "first", "strict"),
        extract=extract_latex,
        equal=math_equal,
        description="last/first \\boxed{} (Minerva fallback), math-verify with gold in $...$",
    )
)
