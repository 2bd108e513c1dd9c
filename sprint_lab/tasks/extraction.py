"""Answer extraction: pull the final answer out of a completion (numeric or LaTeX).

Numeric answers (GSM8K, arith) use lm-evaluation-harness's filters: ``strict`` takes the first
``#### N`` or ``The answer is N.``, ``flexible`` the last number-like token; both then strip
commas, ``$`` and one trailing period (lm-eval's ``regexes_to_ignore``). LaTeX answers (MATH)
are the last (or first) ``\\boxed{}``, falling back to Minerva's "Final Answer: The final answer
is X. I hope it is correct." A completion that runs on into a new ``Q:`` / ``Question:`` /
``Problem:`` turn is cut there first (:func:`cut_run_on`), so a hallucinated next exemplar is
never graded.

Each extractor returns ``(answer or None, rule)``; the rule names which pattern matched.

Example:
    >>> extract_number("She pays $1,200. The answer is 1,200.", "strict")
    ('1200', 'strict:the_answer_is')
    >>> extract_latex(r"\\boxed{2} no wait \\boxed{3}", "first")
    ('2', 'boxed:first')
"""

from __future__ import annotations

import re

from sprint_lab.tasks.latex import boxed_contents

__all__ = ["clean_number", "cut_run_on", "extract_latex", "extract_number"]

#: lm-eval ``gsm8k`` and ``gsm8k_cot`` strict-match patterns, tried together (first match wins).
_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)|The answer is (\-?[0-9\.\,]+).")
#: lm-eval flexible-extract pattern (last match wins).
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
#: A new question turn: ``Q:``/``Question:``/``Problem:`` at a line start, or `` Q:`` inline.
_RUN_ON_RE = re.compile(r"(?:^|\n)[ \t]*(?:Q|Question|Problem)[ \t]*:|(?<=\s)Q:")
_MINERVA_RE = re.compile(
    r"Final Answer:\s*The final answer is\s*(.+?)\s*\.?\s*I hope it is correct", re.IGNORECASE
)


def cut_run_on(text: str) -> str:
    """Cut a completion where it starts a new ``Q:`` / ``Question:`` / ``Problem:`` turn.

    Example:
        >>> cut_run_on("2 + 2 = 4. The answer is 4.\\n\\nQ: Next question? A: 9")
        '2 + 2 = 4. The answer is 4.'
    """
    match = _RUN_ON_RE.search(text)
    return (text[: match.start()] if match else text).rstrip()


def clean_number(text: str) -> str:
    """lm-eval's ``regexes_to_ignore``: drop ``,`` and ``$``, anything up to ``#### ``, one
    trailing period.

    Example:
        >>> clean_number(" $1,200. ")
        '1200'
    """
    text = text.strip().replace(",", "").replace("$", "")
    text = re.sub(r"(?s).*#### ", "", text)
    return re.sub(r"\.$", "", text).strip()


def extract_number(text: str, mode: str) -> tuple[str | None, str]:
    """lm-eval ``gsm8k`` / ``gsm8k_cot`` extraction (``mode`` ``"strict"`` or ``"flexible"``).

    Args:
        text: The completion, already cut at a run-on.
        mode: ``"strict"`` (first ``#### N`` / ``The answer is N.``) or ``"flexible"`` (last
            number).

    Returns:
        ``(answer, rule)`` with rule ``"strict:####"``, ``"strict:the_answer_is"`` or
        ``"flexible:last_number"``; ``(None, "none")`` when nothing matched.

    Example:
        >>> extract_number("3 + 4 = 7, not 8", "flexible")
        ('8', 'flexible:last_number')
    """
    if mode == "strict":
        match = _STRICT_RE.search(text)
        if match is None:
            return None, "none"
        kind = "strict:####" if match.group(1) is not None else "strict:the_answer_is"
        value = clean_number(match.group(1) or match.group(2) or "")
    else:
        matches = _FLEXIBLE_RE.findall(text)
        if not matches:
            return None, "none"
        kind = "flexible:last_number"
        value = clean_number(next(g for g in matches[-1] if g))
    return (value, kind) if value else (None, "none")


def extract_latex(text: str, mode: str) -> tuple[str | None, str]:
    """MATH extraction: a ``\\boxed{}`` answer, else (not in ``"strict"``) Minerva's sentence.

    Args:
        text: The completion, already cut at a run-on.
        mode: ``"flexible"``/``"last"`` (last box), ``"first"`` (first box, SPRINT's choice) or
            ``"strict"`` (last box, no Minerva fallback).

    Returns:
        ``(answer, rule)`` with rule ``"boxed:last"``, ``"boxed:first"`` or ``"minerva"``;
        ``(None, "none")`` when nothing matched.

    Example:
        >>> extract_latex("Final Answer: The final answer is $5$. I hope it is correct.", "last")
        ('5', 'minerva')
    """
    boxes = boxed_contents(text)
    if boxes:
        return (boxes[0], "boxed:first") if mode == "first" else (boxes[-1], "boxed:last")
    if mode != "strict":
        minerva = _MINERVA_RE.findall(text)
        if minerva:
            value = minerva[-1].strip().strip("$").strip()
            if value:
                return value, "minerva"
    return None, "none"
