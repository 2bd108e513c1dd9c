"""SweepPanel: run a single-head ablation sweep from a form and watch its heat map fill in.

A sweep answers every question once unpruned and once with each candidate head zeroed (at
``hook_z``, before ``o_proj``); the accuracy delta per head is the effect of that head. The
panel reads the model, dataset, prompt, layers (``"0,5,10"``) and heads (``"all"``, ``"0-3"``;
both read by :func:`parse_indices`) from its controls, runs
:func:`sprint_lab.sweeps.run.sweep` in a background thread and, after every batch, redraws
:func:`sprint_lab.viz.heatmap.heatmap` of the deltas computed so far on the full planned grid
(cells not reached yet stay blank). *Cancel* stops after the batch in flight and keeps every
answer computed.

Example:
    >>> panel = SweepPanel(model=model, problems=problems, layers="0", heads="0-1")
    >>> {k: panel.settings()[k] for k in ("dataset", "layers", "heads", "n_problems")}
    {'dataset': 'given', 'layers': [0], 'heads': [0, 1], 'n_problems': 8}
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as widgets

from sprint_lab.core.heads import Head, all_heads
from sprint_lab.core.model import LabModel, load_model
from sprint_lab.sweeps.result import SweepResult, planned_deltas
from sprint_lab.tasks.problems import Problem, load_problems
from sprint_lab.tasks.prompts import TEMPLATES
from sprint_lab.viz.heatmap import heatmap
from sprint_lab.widgets.html import message_html
from sprint_lab.widgets.jobs import BackgroundJobs, using_model
from sprint_lab.widgets.live_figure import figure_widget, placeholder_figure, sync_figure

__all__ = ["DATASETS", "GIVEN_PROBLEMS", "SweepPanel", "parse_indices"]

GIVEN_PROBLEMS = "given"
"""Dataset choice of a :class:`SweepPanel` built with ``problems=``: use those problems."""
DATASETS = ("arith", "gsm8k", "math500")
_DEFAULT_PROMPT = {"arith": "chat_gsm8k", "gsm8k": "chat_gsm8k", "math500": "chat_boxed"}


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_indices(text: str | Iterable[int] | None) -> list[int] | None:
    """Read layer or head indices: ``"0,5,10"``, ``"0-3"``, ``"2 4"``; ``"all"``/empty -> None.

    Args:
        text: the text typed in a widget, or already a list of ints.

    Returns:
        The indices in the given order (duplicates removed), or ``None`` for "all".

    Raises:
        ValueError: for anything that is not a non-negative integer or an ``a-b`` range.

    Example:
        >>> parse_indices("0,5,10"), parse_indices("all"), parse_indices([3, 1])
        ([0, 5, 10], None, [3, 1])
    """
    if text is None:
        return None
    if not isinstance(text, str):
        return list(dict.fromkeys(int(i) for i in text))
    cleaned = text.strip().lower()
    if cleaned in ("", "all", "*"):
        return None
    out: list[int] = []
    for part in re.split(r"[,\s;]+", cleaned.strip(",; ")):
        match = _RANGE.match(part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f"empty range {part!r}: write low-high, e.g. 0-3")
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"cannot read {part!r} as an index; use e.g. '0,5,10', '0-3' or 'all'")
    return list(dict.fromkeys(out))


class SweepPanel(widgets.VBox, BackgroundJobs):
    """Run an ablation sweep from a form and watch its heat map fill in.

    The controls choose the model (a name for :func:`~sprint_lab.core.model.load_model`), the
    dataset (``arith``, ``gsm8k``, ``math500``, or the problems passed in), the prompt template,
    the layers (``"0,5,10"``) and heads (``"all"`` or ``"0-3"``) to prune, the number of
    problems and the generation limit. *Run sweep* calls :func:`sprint_lab.sweeps.run.sweep` in a
    background thread; after every batch the progress bar moves and :attr:`figure` (a plotly
    ``FigureWidget`` built by :func:`sprint_lab.viz.heatmap.heatmap`) is redrawn with the deltas
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
        Running the sweep takes a few seconds even on the tiny doctest model (a sweep, a
        bootstrap and a heat-map redraw per batch), so it is not run here:

        >>> panel = SweepPanel(model=model, problems=problems[:2], layers="0", heads="0-1",
        ...                    max_new_tokens=4, background=False)
        >>> panel.run()                                     # doctest: +SKIP
        >>> panel.result                                    # doctest: +SKIP
        SweepResult(6 rows: 2 questions x 3 configurations)
    """

    def __init__(
        self,
        model: LabModel | None = None,
        problems: Sequence[Problem] | None = None,
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
        self.init_jobs(background)
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
        buttons = self._build_actions()
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
        super().__init__([controls, buttons, self.status, self.figure])
        self.add_class("sprint-lab-sweep-panel")

    def _build_actions(self) -> widgets.HBox:
        """The Run / Cancel buttons, progress bar, status line and heat map (wired up)."""
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
        self.status = widgets.HTML(message_html("info", "Set the sweep up and press Run sweep."))
        self.figure = figure_widget(placeholder_figure("Run the sweep to fill the heat map"))
        self.figure.add_class("sprint-lab-heatmap")
        self.dataset_box.observe(self._on_dataset, names="value")
        self.run_button.on_click(lambda _: self._on_run())
        self.cancel_button.on_click(lambda _: self.cancel())
        return widgets.HBox([self.run_button, self.cancel_button, self.progress])

    # ------------------------------------------------------------------ controls
    def _on_dataset(self, change: dict[str, Any]) -> None:
        self.prompt_box.value = _DEFAULT_PROMPT.get(change["new"], self.prompt_box.value)

    def _on_run(self) -> None:
        try:
            self.run()
        except Exception as err:  # a button must not raise into the frontend
            self.report_error(err, self.status)

    def cancel(self) -> None:
        """Stop after the batch in flight; :attr:`result` keeps what was computed."""
        self._cancel.set()
        if self.running:
            self.status.value = message_html("warn", "Cancelling after the batch in flight…")

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
        self.start_job(lambda: self._sweep(settings), background)

    # ------------------------------------------------------------------ the job
    def _model(self, name: str) -> LabModel:
        if name not in self._models:
            self.status.value = message_html("info", f"Loading {name}…")
            self._models[name] = load_model(name, dtype=self.dtype)
        return self._models[name]

    def _problems(self, dataset: str, n: int) -> list[Any]:
        if dataset == GIVEN_PROBLEMS:
            return list(self._given or [])[:n]
        self.status.value = message_html("info", f"Loading {dataset}…")
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
            with using_model(model, self.status):
                self.status.value = message_html(
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
                self.status.value = message_html("ok", f"Done: {done} answers in {seconds:.0f} s.")
            else:
                self.status.value = message_html(
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
        fig = heatmap(deltas, title=f"Accuracy change when pruning one head ({subtitle})")
        sync_figure(self.figure, fig)
        self.redraws += 1

    def show_error(self, err: BaseException) -> None:
        self.status.value = message_html("error", f"{type(err).__name__}: {err}")


def _as_text(value: str | Sequence[int]) -> str:
    return value if isinstance(value, str) else ",".join(str(int(v)) for v in value)
