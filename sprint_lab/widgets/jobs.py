"""Background jobs for the notebook panels, and the per-model lock they share.

A sweep, a training run or a generation can take minutes; run in the kernel's main thread it
would freeze the notebook (and the progress display) until done. Each panel therefore runs one
job at a time in a daemon thread (:class:`BackgroundJobs`), keeps the job's error to show it in
the panel, and re-raises it from :meth:`BackgroundJobs.wait` -- or runs inline with
``background=False`` for scripts and tests, where it raises like a plain call.

Jobs on one model must not overlap: the head gate installs hooks on the model, so two threads
pruning different heads at once would mix their masks. :func:`model_lock` gives one re-entrant
lock per model (``model.lock`` when the model has one), shared by every panel, and
:func:`using_model` holds it while telling the user when a job has to wait for another.

Example:
    >>> model_lock(model) is model_lock(model)
    True
    >>> with model_lock(model):  # re-entrant: a job may call helpers that lock again
    ...     with model_lock(model):
    ...         pass
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from sprint_lab.widgets.html import message_html

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel

__all__ = ["BackgroundJobs", "model_lock", "using_model"]

_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: LabModel) -> threading.RLock:
    """The lock that serialises jobs on one model (the head gate's hooks are per model).

    ``model.lock`` is used when the model has one; otherwise one lock per model object is kept
    here, shared by every widget.
    """
    own = getattr(model, "lock", None)
    if own is not None:
        return own
    with _LOCKS_GUARD:
        if model not in _MODEL_LOCKS:
            _MODEL_LOCKS[model] = threading.RLock()
        return _MODEL_LOCKS[model]


@contextlib.contextmanager
def using_model(model: LabModel, status: widgets.HTML) -> Iterator[None]:
    """Hold ``model``'s lock, saying so in ``status`` while another job has it.

    Args:
        model: the model the job runs on.
        status: the panel's status line, told when the job has to wait.
    """
    lock = model_lock(model)
    if not lock.acquire(blocking=False):
        status.value = message_html("warn", "Waiting for another job on this model to finish…")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class BackgroundJobs:
    """Mixin for panels: one job at a time, in a daemon thread or inline; errors kept and shown.

    A panel calls :meth:`init_jobs` in its constructor, starts work with :meth:`start_job` and
    overrides :meth:`show_error` to display a failure.

    Attributes:
        background: whether jobs run in a thread by default.
        error: the last job's exception, or ``None``.
    """

    def init_jobs(self, background: bool) -> None:
        """Set up the job state (call once, from the panel's constructor)."""
        self.background = bool(background)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return not self._idle.is_set()

    def start_job(self, job: Callable[[], None], background: bool | None) -> None:
        """Run ``job`` in a daemon thread (or inline), recording and showing its error.

        Args:
            job: the work, a callable without arguments.
            background: run in a thread; ``None`` uses :attr:`background`.

        Raises:
            RuntimeError: when a job is already running.
            Exception: run inline, whatever ``job`` raised.
        """
        if self.running:
            raise RuntimeError("a job is already running; wait() for it or cancel it first")
        self.error = None
        self._idle.clear()

        def target() -> None:
            try:
                job()
            except BaseException as err:  # shown in the widget, raised by wait()
                self.error = err
                self.show_error(err)
            finally:
                self._idle.set()

        if self.background if background is None else background:
            self._thread = threading.Thread(target=target, daemon=True, name=type(self).__name__)
            self._thread.start()
            return
        target()
        if self.error is not None:  # run inline: raise like a plain function call
            raise self.error

    def report_error(self, err: Exception, status: widgets.HTML) -> None:
        """Show an error raised by a button's action, unless the job already showed it."""
        if err is not self.error:
            status.value = message_html("error", str(err))

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the current job ends; re-raise its error; return the widget's result.

        Raises:
            TimeoutError: when ``timeout`` seconds pass first.
        """
        if not self._idle.wait(timeout):
            raise TimeoutError(f"{type(self).__name__} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return getattr(self, "result", None)

    def show_error(self, err: BaseException) -> None:
        """Display a job's error in the panel (each panel overrides this)."""
        raise NotImplementedError
