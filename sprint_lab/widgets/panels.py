"""Jupyter widgets (ipywidgets) for exploring single-head pruning interactively.

Each widget is a thin front end: it reads its controls, calls the library and draws what comes
back. Long jobs (a sweep, training, generation) run in a background thread so the notebook stays
responsive; pass ``background=False`` (or call ``.wait()``) for scripts and tests.

* :class:`SweepPanel` -- pick a model, dataset, layers and limits, run an ablation sweep
  (:func:`sprint_lab.sweeps.run.sweep`) and watch the per-head heat map
  (:func:`sprint_lab.viz.figures.heatmap`) fill in batch by batch; *Cancel* stops after the batch in
  flight and keeps every answer computed so far.
* :class:`HeatmapExplorer` -- click a heat-map cell (or call ``select(layer, head)``) to see
  that head's per-question outcomes and the unpruned vs pruned completions as a word diff.
* :class:`SelectorTrainer` -- train a :class:`~sprint_lab.selection.selector.SprintSelector` with a live
  loss / top-1 hit-rate curve (:func:`sprint_lab.viz.figures.selector_history`).
* :class:`QuestionInspector` -- pick a test question or type one, see the selector's ranking of
  heads, and generate with the top-k heads pruned next to the unpruned model (one batched
  :func:`~sprint_lab.generation.generator.generate` call, one head mask per row), each answer graded.

Every widget is an ``ipywidgets.VBox``: put it last in a cell to display it.

Example:
    >>> from sprint_lab.widgets.panels import SweepPanel                       # doctest: +SKIP
    >>> panel = SweepPanel(model=model, problems=problems, layers="0")  # doctest: +SKIP
    >>> panel                                                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

import sprint_lab.viz.figures as plots
from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import Head, all_heads
from sprint_lab.generation.generator import generate
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import Problem, load_problems
from sprint_lab.tasks.prompts import TEMPLATES, get_template
from sprint_lab.widgets.util import (
    columns_html,
    diff_sides,
    frame_html,
    head_outcomes,
    parse_indices,
    planned_deltas,
    word_diff_html,
)

__all__ = [
    "GIVEN_PROBLEMS",
    "HeatmapExplorer",
    "QuestionInspector",
    "SelectorTrainer",
    "SweepPanel",
    "figure_widget",
    "model_lock",
    "sync_figure",
]

GIVEN_PROBLEMS = "given"
"""Dataset choice of a :class:`SweepPanel` built with ``problems=``: use those problems."""
DATASETS = ("arith", "gsm8k", "math500")
_DEFAULT_PROMPT = {"arith": "chat_gsm8k", "gsm8k": "chat_gsm8k", "math500": "chat_boxed"}
_OK = '<span style="color:#055d20;font-weight:bold">✓ correct</span>'
_WRONG = '<span style="color:#82071e;font-weight:bold">✗ wrong</span>'
_UNGRADED = '<span style="color:#666">no gold answer: not graded</span>'


# --------------------------------------------------------------------------- figure helpers


def figure_widget(fig: go.Figure | None = None) -> go.FigureWidget:
    """A ``plotly.graph_objects.FigureWidget`` (needs ``anywidget`` with plotly >= 6).

    Raises:
        ImportError: naming the missing package when plotly cannot build a widget.
    """
    try:
        return go.FigureWidget(fig) if fig is not None else go.FigureWidget()
    except ImportError as err:  # plotly >= 6 builds FigureWidget on anywidget
        raise ImportError(f"{err}. The interactive figures need it: pip install anywidget") from err


def _trace_json(trace: Any) -> dict[str, Any]:
    data = trace.to_plotly_json()
    data.pop("uid", None)
    return data


def sync_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Make ``widget`` show ``fig``, updating traces in place when their types match.

    In-place updates keep click handlers attached to the widget's traces and send one message
    per redraw; otherwise the traces are replaced. Layout keys that ``fig`` does not set (say a
    placeholder's annotation) are removed, in Python and in the browser.

    Example:
        >>> w = figure_widget(go.Figure(go.Heatmap(z=[[1.0]])))
        >>> sync_figure(w, go.Figure(go.Heatmap(z=[[2.0, 3.0]])))
        >>> [list(row) for row in w.data[0].z]
        [[2.0, 3.0]]
    """
    same = len(widget.data) == len(fig.data) and all(
        old.type == new.type for old, new in zip(widget.data, fig.data, strict=True)
    )
    layout = fig.layout.to_plotly_json()
    stale = {key: None for key in widget.layout.to_plotly_json() if key not in layout}
    if not same:
        widget.data = ()
        if fig.data:
            widget.add_traces([trace.to_plotly_json() for trace in fig.data])
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fig.data, strict=True):
                old.update(_trace_json(new), overwrite=True)
        widget.layout.update({**stale, **layout}, overwrite=True)


def _message(kind: str, text: str) -> str:
    colors = {"info": "#333", "ok": "#055d20", "warn": "#8a5300", "error": "#82071e"}
    return f'<span style="color:{colors[kind]}">{html.escape(text)}</span>'


# --------------------------------------------------------------------------- background jobs

_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
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
def _using(model: Any, status: widgets.HTML) -> Iterator[None]:
    """Hold ``model``'s lock, saying so in ``status`` while another job has it."""
    lock = model_lock(model)
    if not lock.acquire(blocking=False):
        status.value = _message("warn", "Waiting for another job on this model to finish…")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class _Jobs:
    """One job at a time, in a daemon thread or inline; errors are kept and shown."""

    def _init_jobs(self, background: bool) -> None:
        self.background = bool(background)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return not self._idle.is_set()

    def _start(self, job: Callable[[], None], background: bool | None) -> None:
        if self.running:
            raise RuntimeError("a job is already running; wait() for it or cancel it first")
        self.error = None
        self._idle.clear()

        def target() -> None:
            try:
                job()
            except BaseException as err:  # shown in the widget, raised by wait()
                self.error = err
                self._show_error(err)
            finally:
                self._idle.set()

        if self.background if background is None else background:
            self._thread = threading.Thread(target=target, daemon=True, name=type(self).__name__)
            self._thread.start()
            return
        target()
        if self.error is not None:  # run inline: raise like a plain function call
            raise self.error

    def _report(self, err: Exception, status: widgets.HTML) -> None:
        """Show an error raised by a button's action, unless the job already showed it."""
        if err is not self.error:
            status.value = _message("error", str(err))

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

    def _show_error(self, err: BaseException) -> None:  # overridden by each widget
        raise NotImplementedError


# --------------------------------------------------------------------------- sweep panel


class SweepPanel(widgets.VBox, _Jobs):
    """Run an ablation sweep from a form and watch its heat map fill in.

    The controls choose the model (a name for :func:`~sprint_lab.core.model.load_model`), the
    dataset (``arith``, ``gsm8k``, ``math500``, or the problems passed in), the prompt template,
    the layers (``"0,5,10"``) and heads (``"all"`` or ``"0-3"``) to prune, the number of
    problems and the generation limit. *Run sweep* calls :func:`sprint_lab.sweeps.run.sweep` in a
    background thread; after every batch the progress bar moves and :attr:`figure` (a plotly
    ``FigureWidget`` built by :func:`sprint_lab.viz.figures.heatmap`) is redrawn with the deltas
    computed so far (cells not reached yet stay blank). *Cancel* sets the sweep's ``cancel``
    event: the batch in flight finishes, and :attr:`result` keeps every answer computed.

    Args:
        model: an already loaded :class:`~sprint_lab.core.model.LabModel` (used while the model box
            holds its name).
        problems: problems to sweep instead of loading a dataset (dataset choice ``"given"``).
        model_name: initial text of the model box (default: ``model.name`` or the embedded
            ``"smollm2-135m"``).
        dataset: ``"arith"``, ``"gsm8k"`` or ``"math500"`` (default ``"given"`` when
            ``problems`` is passed, else ``"arith"``).
        layers: layers to sweep, e.g. ``"0,5,10"`` or ``[0, 5]``.
        heads: head indices within each layer: ``"all"``, ``"0-3"``, ``[0, 1]``.
        n_problems: how many problems (the first n given, or a seeded subset of the dataset).
        max_new_tokens: generation limit per answer.
        prompt: prompt template name (default: ``chat_boxed`` for MATH500, else ``chat_gsm8k``).
        batch_size: rows per forward pass (the heat map redraws after each batch).
        dtype: dtype for models loaded by name.
        seed: subset seed for datasets.
        data_dir: folder with local benchmark files (see
            :func:`~sprint_lab.tasks.problems.load_problems`).
        out: optional folder for the sweep's Parquet store (resumable).
        background: run in a thread (``False``: the click blocks until the sweep ends).

    Attributes:
        result: the latest :class:`~sprint_lab.sweeps.result.SweepResult` (partial while running).
        figure: the heat map ``FigureWidget``.
        redraws: how many times the heat map was redrawn.
        run_button, cancel_button, progress, status: the controls.

    Example:
        >>> panel = SweepPanel(model=model, problems=problems[:4], layers="0",  # doctest: +SKIP
        ...                    heads="0-2", max_new_tokens=16)
        >>> panel.run_button.click(); result = panel.wait()                   # doctest: +SKIP
        >>> result.deltas()                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        problems: Sequence[Any] | None = None,
        *,
        model_name: str | None = None,
        dataset: str | None = None,
        layers: str | Sequence[int] = "0,5,10",
        heads: str | Sequence[int] = "all",
        n_problems: int = 8,
        max_new_tokens: int = 64,
        prompt: str | None = None,
        batch_size: int = 16,
        dtype: str = "float32",
        seed: int = 0,
        data_dir: str | None = None,
        out: str | None = None,
        background: bool = True,
    ) -> None:
        self._init_jobs(background)
        self._models: dict[str, Any] = {}
        if model is not None:
            self._models[str(model.name)] = model
        self._given = list(problems) if problems is not None else None
        self.dtype, self.seed, self.data_dir, self.out = dtype, seed, data_dir, out
        self.result: SweepResult | None = None
        self.heads: list[Head] = []
        self.redraws = 0
        self._cancel = threading.Event()

        datasets = ([GIVEN_PROBLEMS] if self._given is not None else []) + list(DATASETS)
        dataset = dataset or datasets[0]
        default_name = model_name or (str(model.name) if model is not None else "smollm2-135m")
        style = {"description_width": "initial"}
        self.model_box = widgets.Text(value=default_name, description="model", style=style)
        self.dataset_box = widgets.Dropdown(options=datasets, value=dataset, description="dataset")
        self.prompt_box = widgets.Dropdown(
            options=list(TEMPLATES),
            value=prompt or _DEFAULT_PROMPT.get(dataset, "chat_gsm8k"),
            description="prompt",
        )
        self.layers_box = widgets.Text(value=_as_text(layers), description="layers", style=style)
        self.heads_box = widgets.Text(value=_as_text(heads), description="heads", style=style)
        self.n_problems_box = widgets.BoundedIntText(
            value=n_problems, min=1, max=100_000, description="problems", style=style
        )
        self.max_new_tokens_box = widgets.BoundedIntText(
            value=max_new_tokens, min=1, max=32_768, description="max new tokens", style=style
        )
        self.batch_size_box = widgets.BoundedIntText(
            value=batch_size, min=1, max=4096, description="batch size", style=style
        )
        self.run_button = widgets.Button(
            description="Run sweep",
            button_style="primary",
            icon="play",
            tooltip="Run the ablation sweep (sprint-lab-run)",
        )
        self.run_button.add_class("sprint-lab-run")
        self.cancel_button = widgets.Button(
            description="Cancel",
            button_style="warning",
            icon="stop",
            tooltip="Stop after the batch in flight, keeping every answer computed",
            disabled=True,
        )
        self.cancel_button.add_class("sprint-lab-cancel")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="0 / 0")
        self.status = widgets.HTML(_message("info", "Set the sweep up and press Run sweep."))
        self.figure = figure_widget(_placeholder("Run the sweep to fill the heat map"))
        self.figure.add_class("sprint-lab-heatmap")
        self.dataset_box.observe(self._on_dataset, names="value")
        self.run_button.on_click(lambda _: self._on_run())
        self.cancel_button.on_click(lambda _: self.cancel())
        controls = widgets.GridBox(
            [
                self.model_box,
                self.dataset_box,
                self.prompt_box,
                self.layers_box,
                self.heads_box,
                self.n_problems_box,
                self.max_new_tokens_box,
                self.batch_size_box,
            ],
            layout=widgets.Layout(grid_template_columns="repeat(3, max-content)", grid_gap="4px"),
        )
        buttons = widgets.HBox([self.run_button, self.cancel_button, self.progress])
        super().__init__([controls, buttons, self.status, self.figure])
        self.add_class("sprint-lab-sweep-panel")

    # ------------------------------------------------------------------ controls
    def _on_dataset(self, change: dict[str, Any]) -> None:
        self.prompt_box.value = _DEFAULT_PROMPT.get(change["new"], self.prompt_box.value)

    def _on_run(self) -> None:
        try:
            self.run()
        except Exception as err:  # a button must not raise into the frontend
            self._report(err, self.status)

    def cancel(self) -> None:
        """Stop after the batch in flight; :attr:`result` keeps what was computed."""
        self._cancel.set()
        if self.running:
            self.status.value = _message("warn", "Cancelling after the batch in flight…")

    def settings(self) -> dict[str, Any]:
        """The sweep settings read from the controls (validated).

        Raises:
            ValueError: for unreadable layers or heads.
        """
        return {
            "model": self.model_box.value.strip(),
            "dataset": self.dataset_box.value,
            "prompt": self.prompt_box.value,
            "layers": parse_indices(self.layers_box.value),
            "heads": parse_indices(self.heads_box.value),
            "n_problems": int(self.n_problems_box.value),
            "max_new_tokens": int(self.max_new_tokens_box.value),
            "batch_size": int(self.batch_size_box.value),
        }

    def run(self, *, background: bool | None = None) -> None:
        """Start the sweep described by the controls (what *Run sweep* does).

        Args:
            background: override the panel's ``background`` setting for this run.

        Raises:
            RuntimeError: when a sweep is already running.
            ValueError: for unreadable layers or heads.
            Exception: run inline (not in the background), whatever the sweep raised.
        """
        if self.running:
            raise RuntimeError("a sweep is already running; cancel it or wait() for it")
        settings = self.settings()
        self._cancel = threading.Event()
        self.run_button.disabled = True
        self.cancel_button.disabled = False
        self._start(lambda: self._sweep(settings), background)

    # ------------------------------------------------------------------ the job
    def _model(self, name: str) -> Any:
        if name not in self._models:
            from sprint_lab.core.model import load_model

            self.status.value = _message("info", f"Loading {name}…")
            self._models[name] = load_model(name, dtype=self.dtype)
        return self._models[name]

    def _problems(self, dataset: str, n: int) -> list[Any]:
        if dataset == GIVEN_PROBLEMS:
            return list(self._given or [])[:n]
        self.status.value = _message("info", f"Loading {dataset}…")
        return load_problems(dataset, limit=n, seed=self.seed, data_dir=self.data_dir)

    def _sweep(self, settings: dict[str, Any]) -> None:
        from sprint_lab.sweeps.run import sweep

        started = time.perf_counter()
        try:
            model = self._model(settings["model"])
            problems = self._problems(settings["dataset"], settings["n_problems"])
            heads = all_heads(model, settings["layers"])
            if settings["heads"] is not None:
                wanted = set(settings["heads"])
                bad = sorted(wanted - set(range(model.n_heads)))
                if bad:
                    raise ValueError(
                        f"unknown heads {bad}: the model has heads 0..{model.n_heads - 1}"
                    )
                heads = [h for h in heads if h.head in wanted]
            self.heads = heads
            total = len(problems) * (len(heads) + 1)
            self.progress.max, self.progress.value = max(total, 1), 0
            self.progress.description = f"0 / {total}"
            self.result = None
            self._redraw(None, f"0 / {total} answers")
            with _using(model, self.status):
                self.status.value = _message(
                    "info", f"Sweeping {len(heads)} heads x {len(problems)} questions…"
                )
                result = sweep(
                    model,
                    problems,
                    heads,
                    prompt=settings["prompt"],
                    max_new_tokens=settings["max_new_tokens"],
                    batch_size=settings["batch_size"],
                    out=self.out,
                    seed=self.seed,
                    progress=False,
                    callback=self._on_batch,
                    cancel=self._cancel,
                )
            self.result = result
            done = len(result.table)
            self.progress.value = done
            self.progress.description = f"{done} / {total}"
            self._redraw(result, f"{done} / {total} answers")
            seconds = time.perf_counter() - started
            if result.complete:
                self.status.value = _message("ok", f"Done: {done} answers in {seconds:.0f} s.")
            else:
                self.status.value = _message(
                    "warn", f"Cancelled: kept {done} of {total} answers ({seconds:.0f} s)."
                )
        finally:
            self.run_button.disabled = False
            self.cancel_button.disabled = True

    def _on_batch(self, progress: Any) -> None:
        self.result = progress.result()
        self.progress.value = progress.done
        self.progress.description = f"{progress.done} / {progress.total}"
        self._redraw(self.result, f"{progress.done} / {progress.total} answers")

    def _redraw(self, result: SweepResult | None, subtitle: str) -> None:
        deltas = planned_deltas(result, self.heads, n_boot=1000)
        fig = plots.heatmap(deltas, title=f"Accuracy change when pruning one head ({subtitle})")
        sync_figure(self.figure, fig)
        self.redraws += 1

    def _show_error(self, err: BaseException) -> None:
        self.status.value = _message("error", f"{type(err).__name__}: {err}")


def _as_text(value: str | Sequence[int]) -> str:
    return value if isinstance(value, str) else ",".join(str(int(v)) for v in value)


def _placeholder(text: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        height=260,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": text, "showarrow": False, "font": {"size": 15}}],
    )
    return plots.apply_style(fig)


# --------------------------------------------------------------------------- heat map explorer


class HeatmapExplorer(widgets.VBox):
    """Click a head in the heat map to see what pruning it did to each question.

    The heat map is :func:`sprint_lab.viz.figures.heatmap` of the sweep's deltas. Selecting a cell
    (a click, or :meth:`select`) fills a table of that head's per-question outcomes (baseline
    correct, pruned correct, both extracted answers) and shows, for one question (chosen in the
    dropdown; questions whose correctness changed come first), the unpruned and the pruned
    completions side by side with their word-level differences highlighted.

    Args:
        result: a :class:`~sprint_lab.sweeps.result.SweepResult`.
        problems: optional problems, for question texts and gold answers.
        metric: the deltas column to colour by.
        alpha: the q-value threshold for the heat map's stars.

    Attributes:
        figure: the heat map ``FigureWidget``; its trace's ``on_click`` calls :meth:`select`.
        selected: the selected :class:`~sprint_lab.core.heads.Head` (or ``None``).
        table: that head's outcome table (:func:`sprint_lab.widgets.util.head_outcomes`).
        question_box, table_html, diff_html: the widgets below the map.

    Example:
        >>> explorer = HeatmapExplorer(result, problems)   # doctest: +SKIP
        >>> explorer.select(0, 3).query("changed")         # doctest: +SKIP
    """

    def __init__(
        self,
        result: SweepResult,
        problems: Sequence[Any] | None = None,
        *,
        metric: str = "delta",
        alpha: float = 0.05,
    ) -> None:
        self.result = result
        self.problems = list(problems or [])
        self.selected: Head | None = None
        self.table = pd.DataFrame()
        self.figure = figure_widget(plots.heatmap(result, metric, alpha=alpha))
        self.figure.add_class("sprint-lab-explorer-heatmap")
        for trace in self.figure.data:
            trace.on_click(self._on_click)
        self.header = widgets.HTML(_message("info", "Click a cell of the heat map to inspect it."))
        self.table_html = widgets.HTML()
        self.question_box = widgets.Dropdown(options=[], description="question")
        self._filling = False
        self.question_box.observe(self._on_question, names="value")
        self.diff_html = widgets.HTML()
        super().__init__(
            [self.figure, self.header, self.table_html, self.question_box, self.diff_html]
        )
        self.add_class("sprint-lab-heatmap-explorer")

    def _on_click(self, trace: Any, points: Any, state: Any = None) -> None:
        if not points.xs or not points.ys:
            return
        layer = int(str(points.ys[0]).lstrip("Ll"))
        head = int(str(points.xs[0]).lstrip("Hh"))
        self.select(layer, head)

    def select(self, layer: int, head: int) -> pd.DataFrame:
        """Show head ``L{layer}H{head}``: its outcome table and the first question's diff.

        Returns:
            The outcome table (also in :attr:`table`).

        Raises:
            ValueError: when the sweep has no rows for that head.
        """
        chosen = Head(int(layer), int(head))
        table = head_outcomes(self.result, chosen, self.problems)
        self.selected, self.table = chosen, table
        deltas = self.result.deltas()
        row = deltas[deltas["config"] == chosen.label].iloc[0]
        changed = int(table["changed"].sum())
        self.header.value = (
            f"<b>{chosen.label}</b>: accuracy {row['accuracy']:.3f} vs baseline "
            f"{row['baseline_accuracy']:.3f} (Δ {row['delta']:+.3f}, 95% CI "
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], q = {row['q_value']:.3g}); "
            f"{changed} of {len(table)} questions changed correctness."
        )
        shown = table.drop(columns=["changed"])
        if shown["question"].isna().all():
            shown = shown.drop(columns=["question", "gold"])
        self.table_html.value = frame_html(shown)
        order = table.sort_values("changed", ascending=False, kind="stable")["question_id"]
        options = [str(q) for q in order]
        self._filling = True
        try:
            self.question_box.options = options
            self.question_box.value = options[0] if options else None
        finally:
            self._filling = False
        if options:
            self.show_question(options[0])
        return table

    def _on_question(self, change: dict[str, Any]) -> None:
        if not self._filling:
            self.show_question(change["new"])

    def show_question(self, question_id: str | None) -> str:
        """Diff the unpruned and the selected head's completion of one question; return the HTML."""
        if question_id is None or self.selected is None:
            return ""
        table = self.result.table
        rows = table[table["question_id"].astype(str) == str(question_id)]
        by_config = rows.set_index("config")
        base = _text_of(by_config, "none")
        pruned = _text_of(by_config, self.selected.label)
        self.diff_html.value = word_diff_html(
            base, pruned, labels=("unpruned", self.selected.label)
        )
        return self.diff_html.value


def _text_of(rows: pd.DataFrame, config: str) -> str:
    if config not in rows.index or "completion" not in rows.columns:
        return ""
    value = rows.at[config, "completion"]
    return "" if pd.isna(value) else str(value)


# --------------------------------------------------------------------------- selector trainer


def _fit_accepts_callback(selector: Any) -> bool:
    try:
        return "callback" in inspect.signature(selector.fit).parameters
    except (TypeError, ValueError):
        return False


class SelectorTrainer(widgets.VBox, _Jobs):
    """Train a SPRINT selector and watch its loss and top-1 hit rate.

    *Train* calls ``selector.fit(sweep, problems, epochs=..., lr=...)`` in a background
    thread. When ``fit`` accepts a per-epoch ``callback`` the curve
    (:func:`sprint_lab.viz.figures.selector_history`) is redrawn after every epoch; otherwise it is
    drawn once training ends.

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
        >>> trainer = SelectorTrainer(SprintSelector(heads), sweep, problems)  # doctest: +SKIP
        >>> trainer.train_button.click(); trainer.wait()                       # doctest: +SKIP
    """

    def __init__(
        self,
        selector: Any,
        sweep: Any,
        problems: Sequence[Any],
        *,
        epochs: int = 200,
        lr: float = 1e-2,
        redraw_every: int = 1,
        background: bool = True,
        **fit_kwargs: Any,
    ) -> None:
        self._init_jobs(background)
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
        self.status = widgets.HTML(_message("info", f"Press Train selector (curve: {mode})."))
        self.figure = figure_widget(_placeholder("Train the selector to see its curves"))
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
            self._report(err, self.status)

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
        self._start(lambda: self._fit(epochs, lr), background)

    def _fit(self, epochs: int, lr: float) -> None:
        started = time.perf_counter()
        self._rows = []
        self.status.value = _message("info", f"Training for up to {epochs} epochs…")
        kwargs = dict(self.fit_kwargs, epochs=epochs, lr=lr)
        if self.live:
            kwargs["callback"] = self._on_epoch
        try:
            self.selector.fit(self.sweep, self.problems, **kwargs)
            self.history = self.selector.history.copy()
            self._redraw(self.history)
            report = getattr(self.selector, "report_", {})
            best = report.get("best_epoch", "?")
            self.status.value = _message(
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
        sync_figure(self.figure, plots.selector_history(history))
        self.redraws += 1

    def _show_error(self, err: BaseException) -> None:
        self.status.value = _message("error", f"{type(err).__name__}: {err}")


# --------------------------------------------------------------------------- question inspector

CUSTOM = -1
"""Dropdown value of :class:`QuestionInspector` for a question typed in the text area."""


class QuestionInspector(widgets.VBox, _Jobs):
    """See which heads the selector would prune for a question, and what they change.

    Pick a question (dropdown; questions the selector was trained on are marked) or choose
    *custom question* and type one (optionally with its gold answer). The table ranks every
    candidate head by the selector's score. *Generate* answers once with the unpruned model and
    once with each of the top-k heads pruned, in one batched
    :func:`~sprint_lab.generation.generator.generate` call with a head mask per row
    (:func:`~sprint_lab.core.gate.masks_for`), grades each answer when the gold answer is known, and
    shows them side by side, words that differ from the unpruned answer highlighted.

    Args:
        model: the :class:`~sprint_lab.core.model.LabModel`.
        selector: a fitted :class:`~sprint_lab.selection.selector.SprintSelector`.
        problems: the questions to choose from.
        prompt: prompt template name.
        k: how many top heads to generate with.
        max_new_tokens: generation limit.
        grade_mode: extraction mode for :func:`~sprint_lab.tasks.grading.grade`.
        background: generate in a thread.

    Attributes:
        ranking: the current question's head ranking (``selector.rank``).
        completions: the last generation: ``config``, ``rank``, ``score``, ``completion``,
            ``extracted``, ``correct`` (``None`` when ungraded), ``n_tokens``, ``finish_reason``.

    Example:
        >>> insp = QuestionInspector(model, selector, test_problems, k=2)  # doctest: +SKIP
        >>> insp.generate_button.click(); insp.wait()                     # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        selector: Any,
        problems: Sequence[Any],
        *,
        prompt: str = "chat_gsm8k",
        k: int = 3,
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        background: bool = True,
    ) -> None:
        self._init_jobs(background)
        self.lab_model, self.selector = model, selector
        self.problems = list(problems)
        self.template = get_template(prompt)
        self.grade_mode = grade_mode
        self.ranking = pd.DataFrame()
        self.completions = pd.DataFrame()
        trained = set(map(str, getattr(selector, "train_ids_", ()) or ()))
        options = [
            (_question_label(p, str(p.id) in trained), i) for i, p in enumerate(self.problems)
        ]
        options.append(("✎ custom question (type below)", CUSTOM))
        style = {"description_width": "initial"}
        self.question_box = widgets.Dropdown(
            options=options,
            value=0 if self.problems else CUSTOM,
            description="question",
            layout=widgets.Layout(width="95%"),
        )
        self.text_box = widgets.Textarea(
            placeholder="Type a new question here (choose 'custom question' above)",
            layout=widgets.Layout(width="95%", height="70px"),
        )
        self.gold_box = widgets.Text(description="gold answer (optional)", style=style)
        n_heads = len(getattr(selector, "heads", [])) or 1
        self.k_box = widgets.BoundedIntText(
            value=min(k, n_heads), min=1, max=n_heads, description="top-k heads", style=style
        )
        self.max_new_tokens_box = widgets.BoundedIntText(
            value=max_new_tokens, min=1, max=32_768, description="max new tokens", style=style
        )
        self.generate_button = widgets.Button(
            description="Generate", button_style="primary", icon="play"
        )
        self.generate_button.add_class("sprint-lab-generate")
        self.rank_html = widgets.HTML()
        self.status = widgets.HTML()
        self.output_html = widgets.HTML()
        self.question_box.observe(lambda _: self._refresh(), names="value")
        self.text_box.observe(self._on_typed, names="value")
        self.gold_box.observe(self._on_typed, names="value")
        self.generate_button.on_click(lambda _: self._on_generate())
        controls = widgets.HBox([self.k_box, self.max_new_tokens_box, self.generate_button])
        super().__init__(
            [
                self.question_box,
                self.text_box,
                self.gold_box,
                self.rank_html,
                controls,
                self.status,
                self.output_html,
            ]
        )
        self.add_class("sprint-lab-question-inspector")
        self._refresh()

    @property
    def result(self) -> pd.DataFrame:
        """The last generation's table (:attr:`completions`)."""
        return self.completions

    def current_problem(self) -> Problem | Any:
        """The selected problem, or a :class:`~sprint_lab.tasks.problems.Problem` for the typed text.

        Raises:
            ValueError: when *custom question* is chosen and the text area is empty.
        """
        index = self.question_box.value
        if index != CUSTOM:
            return self.problems[index]
        text = self.text_box.value.strip()
        if not text:
            raise ValueError("type a question in the text area first")
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
        return Problem(id=f"custom-{digest}", question=text, answer=self.gold_box.value.strip())

    def _on_typed(self, change: dict[str, Any]) -> None:
        if change["new"] and self.question_box.value != CUSTOM:
            self.question_box.value = CUSTOM  # triggers a refresh
        elif self.question_box.value == CUSTOM:
            self._refresh()

    def _refresh(self) -> None:
        try:
            self.rank()
        except (ValueError, RuntimeError) as err:
            self.ranking = pd.DataFrame()
            self.rank_html.value = _message("warn", str(err))

    def rank(self) -> pd.DataFrame:
        """Rank the candidate heads for the current question and show the table."""
        problem = self.current_problem()
        if self.question_box.value != CUSTOM:
            self.text_box.unobserve(self._on_typed, names="value")
            self.text_box.value = ""
            self.text_box.observe(self._on_typed, names="value")
        ranking = self.selector.rank([problem])
        self.ranking = ranking
        shown = ranking[["rank", "head", "score"]].head(10)
        question = html.escape(str(problem.question))
        gold = html.escape(str(problem.answer)) if str(problem.answer) else "unknown"
        self.rank_html.value = (
            f"<div style='max-width:900px'><b>Question</b>: {question}<br><b>Gold</b>: {gold}"
            f"</div><b>Heads ranked by the selector</b> (top {len(shown)} of {len(ranking)}):"
            + frame_html(shown)
        )
        return ranking

    def _on_generate(self) -> None:
        try:
            self.generate()
        except Exception as err:  # a button must not raise into the frontend
            self._report(err, self.status)

    def generate(self, *, background: bool | None = None) -> None:
        """Generate with the unpruned model and with each of the top-k heads pruned.

        Raises:
            RuntimeError: when a generation is already running.
            ValueError: when no question is chosen or typed.
            Exception: run inline (not in the background), whatever generation raised.
        """
        if self.running:
            raise RuntimeError("a generation is already running; wait() for it")
        problem = self.current_problem()
        ranking = self.rank()
        k, max_new_tokens = int(self.k_box.value), int(self.max_new_tokens_box.value)
        self.generate_button.disabled = True
        self._start(lambda: self._generate(problem, ranking.head(k), max_new_tokens), background)

    def _generate(self, problem: Any, top: pd.DataFrame, max_new_tokens: int) -> None:
        started = time.perf_counter()
        try:
            model = self.lab_model
            configs: list[list[str] | None] = [None] + [[label] for label in top["head"]]
            prompt = self.template.parts(problem.question, model.tokenizer)
            with _using(model, self.status):
                self.status.value = _message("info", f"Generating {len(configs)} answers…")
                completions = generate(
                    model,
                    [prompt] * len(configs),
                    head_masks=masks_for(model, configs),
                    max_new_tokens=max_new_tokens,
                    stop=self.template.stop_strings(model.tokenizer),
                    batch_size=len(configs),
                )
            graded = bool(str(problem.answer).strip())
            rows = []
            for i, completion in enumerate(completions):
                verdict = grade(completion.text, problem, mode=self.grade_mode) if graded else None
                rows.append(
                    {
                        "config": "none" if i == 0 else top["head"].iloc[i - 1],
                        "rank": None if i == 0 else int(top["rank"].iloc[i - 1]),
                        "score": None if i == 0 else float(top["score"].iloc[i - 1]),
                        "completion": completion.text,
                        "extracted": verdict.extracted if verdict else None,
                        "correct": verdict.correct if verdict else None,
                        "n_tokens": completion.n_tokens,
                        "finish_reason": completion.finish_reason,
                    }
                )
            self.completions = pd.DataFrame(rows).astype({"rank": "Int64"})
            self.output_html.value = _side_by_side(self.completions)
            self.status.value = _message(
                "ok", f"Generated {len(rows)} answers in {time.perf_counter() - started:.1f} s."
            )
        finally:
            self.generate_button.disabled = False

    def _show_error(self, err: BaseException) -> None:
        self.status.value = _message("error", f"{type(err).__name__}: {err}")


def _question_label(problem: Any, trained: bool, width: int = 90) -> str:
    text = " ".join(str(problem.question).split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{problem.id}{' [train]' if trained else ''}: {text}"


def _side_by_side(table: pd.DataFrame) -> str:
    """Cards for each answer; words that differ from the unpruned answer are highlighted."""
    base = str(table["completion"].iloc[0])
    columns = []
    for _, row in table.iterrows():
        if row["config"] == "none":
            title, body = "unpruned", html.escape(base)
        else:
            title = f"prune {row['config']} (rank {int(row['rank'])}, score {row['score']:.2f})"
            body = diff_sides(base, str(row["completion"]))[1]
        verdict = _UNGRADED if row["correct"] is None else (_OK if row["correct"] else _WRONG)
        extracted = html.escape(str(row["extracted"])) if row["extracted"] is not None else "—"
        header = (
            f"<div style='font-weight:bold'>{html.escape(title)}</div><div>{verdict} · answer: "
            f"<code>{extracted}</code> · {row['n_tokens']} tokens "
            f"({html.escape(str(row['finish_reason']))})</div>"
        )
        columns.append((header, body))
    return columns_html(columns)
