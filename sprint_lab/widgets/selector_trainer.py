"""SelectorTrainer: train a SPRINT selector and watch its loss and top-1 hit rate.

The selector learns, from a training sweep, which head to prune for which question. Training
runs in a background thread; when the selector's ``fit`` accepts a per-epoch ``callback`` the
curves (:func:`sprint_lab.viz.selector_figs.selector_history`) are redrawn after every
``redraw_every`` epochs, otherwise once training ends.

Example:
    >>> from types import SimpleNamespace as NS
    >>> fake = NS(fit=lambda sweep, problems, epochs, lr: None,
    ...           history=pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5]}))
    >>> trainer = SelectorTrainer(fake, None, [], epochs=2, background=False)
    >>> trainer.train(); trainer.history["train_loss"].tolist()
    [1.0, 0.5]
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd

from sprint_lab.tasks.problems import Problem
from sprint_lab.viz.selector_figs import selector_history
from sprint_lab.widgets.html import message_html
from sprint_lab.widgets.jobs import BackgroundJobs
from sprint_lab.widgets.live_figure import figure_widget, placeholder_figure, sync_figure

__all__ = ["SelectorTrainer"]


def _fit_accepts_callback(selector: Any) -> bool:
    try:
        return "callback" in inspect.signature(selector.fit).parameters
    except (TypeError, ValueError):
        return False


class SelectorTrainer(widgets.VBox, BackgroundJobs):
    """Train a SPRINT selector and watch its loss and top-1 hit rate.

    *Train* calls ``selector.fit(sweep, problems, epochs=..., lr=...)`` in a background
    thread. When ``fit`` accepts a per-epoch ``callback`` the curve
    (:func:`sprint_lab.viz.selector_figs.selector_history`) is redrawn after every epoch;
    otherwise it is drawn once training ends.

    Args:
        selector: a :class:`~sprint_lab.selection.selector.SprintSelector`.
        sweep: the training sweep (``SweepResult`` or tidy table).
        problems: the training problems (ids matching the sweep).
        epochs: initial value of the epochs box.
        lr: initial learning rate.
        redraw_every: redraw the curve every this many epochs (live mode).
        background: train in a thread.
        **fit_kwargs: passed on to ``fit`` (``val_fraction``, ``patience``, ``embeddings``...).

    Attributes:
        history: the training history (rows so far while training).
        figure: the curve ``FigureWidget``.
        redraws: how many times the curve was redrawn.
        live: whether per-epoch updates are available.

    Example:
        Training a real selector needs its encoder and a training sweep; with a stand-in
        whose ``fit`` reports every epoch, the curve is redrawn live:

        >>> from types import SimpleNamespace as NS
        >>> stub = NS(history=None)
        >>> def fit(sweep, problems, epochs, lr, callback):
        ...     rows = [{"epoch": e, "train_loss": 1 / (e + 1)} for e in range(epochs)]
        ...     for row in rows:
        ...         callback(row)
        ...     stub.history = pd.DataFrame(rows)
        >>> stub.fit = fit
        >>> trainer = SelectorTrainer(stub, None, [], epochs=3, background=False)
        >>> trainer.train()
        >>> trainer.live, trainer.redraws
        (True, 4)
    """

    def __init__(
        self,
        selector: Any,
        sweep: Any,
        problems: Sequence[Problem],
        *,
        epochs: int = 200,
        lr: float = 1e-2,
        redraw_every: int = 1,
        background: bool = True,
        **fit_kwargs: Any,
    ) -> None:
        self.init_jobs(background)
        self.selector, self.sweep, self.problems = selector, sweep, list(problems)
        self.fit_kwargs = fit_kwargs
        self.redraw_every = max(1, int(redraw_every))
        self.live = _fit_accepts_callback(selector)
        self.history = pd.DataFrame()
        self.redraws = 0
        self._rows: list[dict[str, float]] = []
        style = {"description_width": "initial"}
        self.epochs_box = widgets.BoundedIntText(
            value=epochs, min=1, max=1_000_000, description="epochs", style=style
        )
        self.lr_box = widgets.BoundedFloatText(
            value=lr, min=1e-6, max=10.0, step=1e-3, description="learning rate", style=style
        )
        self.train_button = widgets.Button(
            description="Train selector", button_style="primary", icon="play"
        )
        self.train_button.add_class("sprint-lab-train")
        self.train_button.on_click(lambda _: self._on_train())
        mode = "live, per epoch" if self.live else "drawn when training ends"
        self.status = widgets.HTML(message_html("info", f"Press Train selector (curve: {mode})."))
        self.figure = figure_widget(placeholder_figure("Train the selector to see its curves"))
        self.figure.add_class("sprint-lab-selector-curve")
        controls = widgets.HBox([self.epochs_box, self.lr_box, self.train_button])
        super().__init__([controls, self.status, self.figure])
        self.add_class("sprint-lab-selector-trainer")

    @property
    def result(self) -> Any:
        """The selector (fitted once training has ended)."""
        return self.selector

    def _on_train(self) -> None:
        try:
            self.train()
        except Exception as err:  # a button must not raise into the frontend
            self.report_error(err, self.status)

    def train(self, *, background: bool | None = None) -> None:
        """Start training with the epochs and learning rate from the controls.

        Raises:
            RuntimeError: when training is already running.
            Exception: run inline (not in the background), whatever ``fit`` raised.
        """
        if self.running:
            raise RuntimeError("training is already running; wait() for it")
        epochs, lr = int(self.epochs_box.value), float(self.lr_box.value)
        self.train_button.disabled = True
        self.start_job(lambda: self._fit(epochs, lr), background)

    def _fit(self, epochs: int, lr: float) -> None:
        started = time.perf_counter()
        self._rows = []
        self.status.value = message_html("info", f"Training for up to {epochs} epochs…")
        kwargs = dict(self.fit_kwargs, epochs=epochs, lr=lr)
        if self.live:
            kwargs["callback"] = self._on_epoch
        try:
            self.selector.fit(self.sweep, self.problems, **kwargs)
            self.history = self.selector.history.copy()
            self._redraw(self.history)
            report = getattr(self.selector, "report_", {})
            best = report.get("best_epoch", "?")
            self.status.value = message_html(
                "ok",
                f"Trained {report.get('epochs_run', len(self.history) - 1)} epochs "
                f"(best epoch {best}, {report.get('n_train', '?')} train / "
                f"{report.get('n_val', '?')} validation questions) in "
                f"{time.perf_counter() - started:.1f} s.",
            )
        finally:
            self.train_button.disabled = False

    def _on_epoch(self, row: dict[str, float]) -> None:
        self._rows.append(dict(row))
        epoch = int(row.get("epoch", len(self._rows) - 1))
        if epoch % self.redraw_every == 0:
            self.history = pd.DataFrame(self._rows)
            self._redraw(self.history)

    def _redraw(self, history: pd.DataFrame) -> None:
        if history.empty:
            return
        sync_figure(self.figure, selector_history(history))
        self.redraws += 1

    def show_error(self, err: BaseException) -> None:
        self.status.value = message_html("error", f"{type(err).__name__}: {err}")
