"""QuestionInspector: which heads would the selector prune for a question, and what changes.

For the chosen (or typed) question the panel ranks every candidate head by the selector's
score, then generates once unpruned and once with each of the top-k heads pruned -- one batched
:func:`~sprint_lab.generation.generator.generate` call with a head mask per row
(:func:`~sprint_lab.core.gate.masks_for`) -- grades each answer when the gold answer is known,
and shows the answers side by side with the words that differ from the unpruned answer
highlighted.

Example:
    Any object with ``heads`` and ``rank(problems)`` can stand in for a fitted selector:

    >>> from types import SimpleNamespace as NS
    >>> ranking = pd.DataFrame({"rank": [1, 2], "head": ["L0H1", "L1H0"], "score": [0.9, 0.2]})
    >>> selector = NS(heads=["L0H1", "L1H0"], rank=lambda problems: ranking)
    >>> insp = QuestionInspector(model, selector, problems, k=1)
    >>> insp.ranking["head"].tolist()
    ['L0H1', 'L1H0']
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import BASELINE
from sprint_lab.generation.generator import generate
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import get_template
from sprint_lab.widgets.html import (
    columns_html,
    diff_sides,
    frame_html,
    message_html,
)
from sprint_lab.widgets.jobs import BackgroundJobs, using_model

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel

__all__ = ["CUSTOM", "QuestionInspector"]

_OK = '<span style="color:#055d20;font-weight:bold">✓ correct</span>'
_WRONG = '<span style="color:#82071e;font-weight:bold">✗ wrong</span>'
_UNGRADED = '<span style="color:#666">no gold answer: not graded</span>'


CUSTOM = -1
"""Dropdown value of :class:`QuestionInspector` for a question typed in the text area."""


class QuestionInspector(widgets.VBox, BackgroundJobs):
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
        >>> from types import SimpleNamespace as NS
        >>> ranking = pd.DataFrame({"rank": [1, 2], "head": ["L0H1", "L1H0"], "score": [0.9, 0.2]})
        >>> selector = NS(heads=["L0H1", "L1H0"], rank=lambda problems: ranking)
        >>> insp = QuestionInspector(model, selector, problems, k=1, max_new_tokens=3)
        >>> insp.generate(background=False)
        >>> insp.completions["config"].tolist()
        ['none', 'L0H1']
    """

    def __init__(
        self,
        model: LabModel,
        selector: Any,
        problems: Sequence[Problem],
        *,
        prompt: str = "chat_gsm8k",
        k: int = 3,
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        background: bool = True,
    ) -> None:
        self.init_jobs(background)
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
        """The selected problem, or a :class:`~sprint_lab.tasks.problems.Problem` of typed text.

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
            self.rank_html.value = message_html("warn", str(err))

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
            self.report_error(err, self.status)

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
        self.start_job(lambda: self._generate(problem, ranking.head(k), max_new_tokens), background)

    def _generate(self, problem: Any, top: pd.DataFrame, max_new_tokens: int) -> None:
        started = time.perf_counter()
        try:
            model = self.lab_model
            configs: list[list[str] | None] = [None] + [[label] for label in top["head"]]
            prompt = self.template.parts(problem.question, model.tokenizer)
            with using_model(model, self.status):
                self.status.value = message_html("info", f"Generating {len(configs)} answers…")
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
                        "config": BASELINE if i == 0 else top["head"].iloc[i - 1],
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
            self.status.value = message_html(
                "ok", f"Generated {len(rows)} answers in {time.perf_counter() - started:.1f} s."
            )
        finally:
            self.generate_button.disabled = False

    def show_error(self, err: BaseException) -> None:
        self.status.value = message_html("error", f"{type(err).__name__}: {err}")


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
        if row["config"] == BASELINE:
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
