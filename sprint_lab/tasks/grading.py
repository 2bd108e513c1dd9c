"""Answer extraction and grading for GSM8K-style (numeric) and MATH-style (LaTeX) completions.

Grading happens in two stages: an *extractor* pulls a final answer out of the completion
(lm-eval's strict / flexible regexes for GSM8K, the last or first ``\\boxed{}`` for MATH), then
the answer is compared with the gold one (``math.isclose`` with ``abs_tol=1e-4`` as in SPRINT, or
``math-verify`` for LaTeX). A completion that runs on into a new ``Q:`` / ``Question:`` /
``Problem:`` turn is cut there first, so a hallucinated next exemplar is never graded.

Example:
    >>> from sprint_lab.tasks.grading import grade
    >>> grade("3 + 4 = 7. The answer is 7.", "7")
    Verdict(correct=True, extracted='7', extractor='flexible:last_number')
"""

from __future__ import annotations

import atexit
import json
import math
import queue
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction

from sprint_lab.tasks.problems import Problem

__all__ = [
    "Verdict",
    "boxed_contents",
    "cut_run_on",
    "extract_answer",
    "grade",
    "is_correct",
    "last_boxed_content",
]

TASKS = ("gsm8k", "arith", "math")
_MODES = {"gsm8k": ("flexible", "strict"), "math": ("flexible", "last", "first", "strict")}

#: lm-eval ``gsm8k`` and ``gsm8k_cot`` strict-match patterns, tried together (first match wins).
_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)|The answer is (\-?[0-9\.\,]+).")
#: lm-eval flexible-extract pattern (last match wins).
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
#: A new question turn: ``Q:``/``Question:``/``Problem:`` at a line start, or `` Q:`` inline.
_RUN_ON_RE = re.compile(r"(?:^|\n)[ \t]*(?:Q|Question|Problem)[ \t]*:|(?<=\s)Q:")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MINERVA_RE = re.compile(
    r"Final Answer:\s*The final answer is\s*(.+?)\s*\.?\s*I hope it is correct", re.IGNORECASE
)
_ABS_TOL = 1e-4


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


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def cut_run_on(text: str) -> str:
    """Cut a completion where it starts a new ``Q:`` / ``Question:`` / ``Problem:`` turn.

    Example:
        >>> cut_run_on("2 + 2 = 4. The answer is 4.\\n\\nQ: Next question? A: 9")
        '2 + 2 = 4. The answer is 4.'
    """
    match = _RUN_ON_RE.search(text)
    return (text[: match.start()] if match else text).rstrip()


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``start`` (escaped ``\\{``/``\\}`` are skipped)."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched) and ``\\boxed 5``.

    Unclosed and empty boxes are skipped.

    Example:
        >>> boxed_contents(r"so \\boxed{\\frac{1}{2}} or \\fbox{3} or $\\boxed 4$")
        ['\\\\frac{1}{2}', '3', '4']
    """
    found: list[str] = []
    for match in _BOX_RE.finditer(text):
        i = match.end()
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            end = _matching_brace(text, j)
            content = text[j + 1 : end] if end is not None else ""
        elif j > i:  # "\boxed 5": up to the closing "$" or the end of the line
            content = re.split(r"[$\n]", text[j:], maxsplit=1)[0].rstrip(" .")
        else:
            content = ""
        if content.strip():
            found.append(content.strip())
    return found


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` in ``text``, or ``None``.

    Example:
        >>> last_boxed_content(r"\\boxed{1} then \\boxed{x^{2}}")
        'x^{2}'
    """
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


def _clean_number(text: str) -> str:
    """lm-eval's ``regexes_to_ignore``: drop ``,`` and ``$``, anything up to ``#### ``, one
    trailing period."""
    text = text.strip().replace(",", "").replace("$", "")
    text = re.sub(r"(?s).*#### ", "", text)
    return re.sub(r"\.$", "", text).strip()


def _check_task_mode(task: str, mode: str) -> str:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}: expected one of {', '.join(TASKS)}")
    family = "math" if task == "math" else "gsm8k"
    if mode not in _MODES[family]:
        raise ValueError(
            f"Unknown mode {mode!r} for task {task!r}: expected one of {', '.join(_MODES[family])}"
        )
    return family


def _extract(text: str, task: str, mode: str) -> tuple[str | None, str]:
    family = _check_task_mode(task, mode)
    text = cut_run_on(text)
    if family == "gsm8k":
        if mode == "strict":
            match = _STRICT_RE.search(text)
            if match is None:
                return None, "none"
            kind = "strict:####" if match.group(1) is not None else "strict:the_answer_is"
            value = _clean_number(match.group(1) or match.group(2) or "")
        else:
            matches = _FLEXIBLE_RE.findall(text)
            if not matches:
                return None, "none"
            kind = "flexible:last_number"
            value = _clean_number(next(g for g in matches[-1] if g))
        return (value, kind) if value else (None, "none")
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


def extract_answer(text: str, task: str = "gsm8k", mode: str = "flexible") -> str | None:
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
        task: ``"gsm8k"``, ``"arith"`` (same as gsm8k) or ``"math"``.
        mode: Extraction mode, see above.

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
    return _extract(text, task, mode)[0]


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def _to_number(text: str) -> float | None:
    text = _clean_number(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None


def _numbers_equal(pred: str, gold: str) -> bool:
    p, g = _to_number(pred), _to_number(gold)
    if p is None or g is None:
        return _clean_number(pred).lower() == _clean_number(gold).lower()
    return math.isclose(p, g, rel_tol=0, abs_tol=_ABS_TOL)


def _wrap(gold: str, pred: str) -> tuple[str, str]:
    """Gold in ``$...$`` (bare MATH answers parse wrongly otherwise), prediction in a box."""
    return f"${gold}$", f"\\boxed{{{pred}}}"


def _math_verify_here(gold_text: str, pred_text: str) -> bool:
    """Run math-verify in this (main) thread with its ``signal.alarm`` timeouts; gold first."""
    from math_verify import parse, verify

    return bool(verify(parse(gold_text), parse(pred_text)))


#: Source of the worker process used off the main thread. It imports only math-verify, reads
#: ``[gold_text, pred_text]`` JSON lines on stdin and answers ``true``/``false`` lines.
_WORKER_CODE = """
import json, logging, sys
out, sys.stdout = sys.stdout, sys.stderr
logging.getLogger("math_verify").setLevel(logging.ERROR)
from math_verify import parse, verify
out.write("ready\\n"); out.flush()
for line in sys.stdin:
    gold, pred = json.loads(line)
    try:
        ok = verify(parse(gold, parsing_timeout=None), parse(pred, parsing_timeout=None),
                    timeout_seconds=None)
    except Exception:
        ok = False
    out.write(json.dumps(bool(ok)) + "\\n"); out.flush()
"""
_WORKER_START_TIMEOUT_S = 120.0


class _VerifyWorker:
    """A long-lived ``python -c`` child that runs math-verify without signals.

    A plain subprocess (not ``multiprocessing``) so that it works from notebooks and from
    scripts without an ``if __name__ == "__main__"`` guard, and never forks a threaded process.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, name="sprint-lab-verify-reader", daemon=True).start()
        try:
            ready = self._read(_WORKER_START_TIMEOUT_S) == "ready"
        except (TimeoutError, RuntimeError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("the math-verify worker process failed to start")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read(self, timeout_s: float) -> str | None:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty as exc:
            raise TimeoutError from exc
        if line is None:
            raise RuntimeError("the math-verify worker process exited unexpectedly")
        return line

    def verify(self, gold_text: str, pred_text: str, timeout_s: float) -> bool:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([gold_text, pred_text]) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout_s) == "true"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_WORKER_LOCK = threading.Lock()
_WORKER: _VerifyWorker | None = None


def _close_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def _shutdown_worker() -> None:
    with _WORKER_LOCK:
        _close_worker()


atexit.register(_shutdown_worker)


def _verify_off_main_thread(gold_text: str, pred_text: str, timeout_s: float) -> bool | None:
    global _WORKER
    with _WORKER_LOCK:  # one request at a time; the worker is created lazily and reused
        if _WORKER is None:
            _WORKER = _VerifyWorker()
        try:
            return _WORKER.verify(gold_text, pred_text, timeout_s)
        except TimeoutError:
            _close_worker()  # it may be stuck in sympy: kill it, the next call starts a new one
            return None
        except (RuntimeError, OSError):
            _close_worker()
            raise


def _math_equal(gold: str, pred: str, timeout_s: float) -> bool | None:
    """math-verify equality; ``None`` when the check timed out off the main thread.

    On the main thread math-verify's own ``signal.alarm`` timeouts are used (a timeout there
    counts as not equal). Elsewhere (threads, widget callbacks) signals are unavailable, so the
    check runs in a reused worker process with ``parsing_timeout=None, timeout_seconds=None``
    and is abandoned, and the worker killed, after ``timeout_s`` seconds.
    """
    gold_text, pred_text = _wrap(gold, pred)
    if threading.current_thread() is threading.main_thread():
        return _math_verify_here(gold_text, pred_text)
    return _verify_off_main_thread(gold_text, pred_text, timeout_s)


def grade(
    completion: str,
    problem: Problem | str,
    task: str | None = None,
    mode: str = "flexible",
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
        task: ``"gsm8k"``, ``"arith"`` or ``"math"``; default ``problem.task`` (or ``"gsm8k"``
            for a plain gold string).
        mode: Extraction mode (see :func:`extract_answer`).
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
        task = problem.task if isinstance(problem, Problem) else "gsm8k"
    extracted, extractor = _extract(completion, task, mode)
    if extracted is None:
        return Verdict(False, None, "none")
    if task != "math":
        return Verdict(_numbers_equal(extracted, gold), extracted, extractor)
    equal = _math_equal(gold, extracted, timeout_s)
    if equal is None:
        return Verdict(False, extracted, "timeout")
    return Verdict(equal, extracted, extractor)


def is_correct(
    completion: str,
    problem: Problem | str,
    task: str | None = None,
    mode: str = "flexible",
    *,
    timeout_s: float = 10.0,
) -> bool:
    """``grade(...).correct``.

    Example:
        >>> is_correct("#### 1,000", "1000", mode="strict")
        True
    """
    return grade(completion, problem, task, mode, timeout_s=timeout_s).correct
