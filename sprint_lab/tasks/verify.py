"""LaTeX answer equality with math-verify, safe on any thread.

``math_verify.verify(parse("$" + gold + "$"), parse("\\boxed{" + pred + "}"))`` decides whether
a MATH answer is right (gold first; a bare MATH answer parses wrongly without the ``$...$``).
math-verify bounds its sympy work with ``signal.alarm``, which only works on the main thread. So
on the main thread it runs in-process with those timeouts; on any other thread (a widget
callback, a thread pool) the check is sent to one reused worker process (plain ``python -c``,
not ``multiprocessing``, so it works from notebooks and never forks a threaded process) that
runs math-verify without signals. A check that takes longer than ``timeout_s`` there is
abandoned and the worker killed; the next check starts a new one.

Example:
    >>> math_equal(r"\\frac{1}{2}", "0.5", timeout_s=10.0)
    True
"""

from __future__ import annotations

import atexit
import json
import queue
import subprocess
import sys
import threading

__all__ = ["WORKER_CODE", "math_equal", "shutdown_worker", "worker_running"]

#: Source of the worker process used off the main thread. It imports only math-verify, reads
#: ``[gold_text, pred_text]`` JSON lines on stdin and answers ``true``/``false`` lines.
WORKER_CODE = """
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
    """A long-lived ``python -c`` child running :data:`WORKER_CODE`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE],
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


def shutdown_worker() -> None:
    """Stop the worker process, if one is running (also registered with :mod:`atexit`).

    Example:
        >>> shutdown_worker(); worker_running()
        False
    """
    with _WORKER_LOCK:
        _close_worker()


def worker_running() -> bool:
    """Whether a math-verify worker process is currently alive.

    Example:
        >>> isinstance(worker_running(), bool)
        True
    """
    with _WORKER_LOCK:
        return _WORKER is not None


atexit.register(shutdown_worker)


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


def _math_verify_here(gold_text: str, pred_text: str) -> bool:
    """Run math-verify in this (main) thread with its ``signal.alarm`` timeouts; gold first."""
    from math_verify import parse, verify

    return bool(verify(parse(gold_text), parse(pred_text)))


def math_equal(gold: str, pred: str, timeout_s: float) -> bool | None:
    """math-verify equality of a gold and a predicted LaTeX answer.

    Args:
        gold: Gold answer, bare LaTeX (wrapped in ``$...$`` here).
        pred: Predicted answer, a box's content (wrapped in ``\\boxed{}`` here).
        timeout_s: Time limit of one check off the main thread.

    Returns:
        Whether they are equal; ``None`` when the check timed out off the main thread (on the
        main thread a math-verify timeout counts as not equal).

    Example:
        >>> math_equal("(-\\\\infty,2]", "(-\\\\infty, 2)", timeout_s=10.0)
        False
    """
    gold_text, pred_text = f"${gold}$", f"\\boxed{{{pred}}}"
    if threading.current_thread() is threading.main_thread():
        return _math_verify_here(gold_text, pred_text)
    return _verify_off_main_thread(gold_text, pred_text, timeout_s)
