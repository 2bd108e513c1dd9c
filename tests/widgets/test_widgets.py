"""Tests for the sprint_lab.widgets panels and their helpers: set values, click, inspect output.

Model-backed tests use the embedded SmolLM2-135M (``embedded_model`` fixture) with two or three
questions, one layer, two or three heads and <= 8 new tokens.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from sprint_lab.core.gate import mask_for
from sprint_lab.core.heads import Head
from sprint_lab.generation.generator import generate
from sprint_lab.selection.selector import SprintSelector
from sprint_lab.sweeps.result import SweepResult, planned_deltas
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import get_template
from sprint_lab.viz.heatmap import heatmap
from sprint_lab.widgets.heatmap_explorer import HeatmapExplorer
from sprint_lab.widgets.html import diff_sides, frame_html, word_diff, word_diff_html
from sprint_lab.widgets.jobs import model_lock
from sprint_lab.widgets.live_figure import figure_widget, sync_figure
from sprint_lab.widgets.question_inspector import CUSTOM, QuestionInspector
from sprint_lab.widgets.selector_trainer import SelectorTrainer
from sprint_lab.widgets.sweep_panel import SweepPanel, parse_indices

PROMPT = "chat_gsm8k"

# --------------------------------------------------------------------------- synthetic data


def _problems(n: int = 6) -> list[Problem]:
    return [
        Problem(
            id=f"q{i}",
            question=f"Tom has {i + 2} apples and eats 1. How many are left?",
            answer=str(i + 1),
            level=1 + i % 2,
            source="arith",
        )
        for i in range(n)
    ]


def _synthetic_result() -> SweepResult:
    """2 layers x 3 heads, 6 questions; L1H2 breaks questions q0..q2, L0H1 fixes q5."""
    problems = _problems()
    heads = [Head(layer, head) for layer in (0, 1) for head in range(3)]
    rows = []
    for p in problems:
        base_ok = p.id != "q5"
        rows.append((p.id, "none", -1, -1, f"There are {p.answer} apples left.", p.answer, base_ok))
        for h in heads:
            ok = base_ok
            if h.label == "L1H2" and p.id in ("q0", "q1", "q2"):
                ok = False
            if h.label == "L0H1" and p.id == "q5":
                ok = True
            answer = p.answer if ok else "99"
            text = f"There are {answer} apples left." if ok else f"Tom ate {answer} apples."
            rows.append((p.id, h.label, h.layer, h.head, text, answer, ok))
    table = pd.DataFrame(
        rows,
        columns=["question_id", "config", "layer", "head", "completion", "extracted", "correct"],
    )
    table["n_tokens"] = 8
    table["finish_reason"] = "eos"
    table["extractor"] = "flexible:last_number"
    return SweepResult(table, {"heads": [h.label for h in heads]})


class _HashEncoder:
    """A tiny deterministic text encoder (character-class counts) for selector tests."""

    name = "hash8"
    dim = 8

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            digits = [int(c) for c in text if c.isdigit()]
            rows.append(
                [
                    len(text) / 50,
                    sum(digits) / 10,
                    len(digits),
                    text.count(" ") / 5,
                    text.count("a") / 5,
                    text.count("e") / 5,
                    float(len(text) % 7),
                    float(sum(map(ord, text)) % 11),
                ]
            )
        return torch.tensor(rows, dtype=torch.float32)


def _selector_sweep() -> tuple[pd.DataFrame, list[Problem]]:
    """Correctness table where L0H0 solves even questions, L0H1 odd ones, L0H2 none."""
    problems = [
        Problem(
            id=f"s{i}",
            question=f"Ann has {i} pens and {i % 3} cups.",
            answer=str(i),
            source="arith",
        )
        for i in range(12)
    ]
    rows = []
    for i, p in enumerate(problems):
        rows.append((p.id, "none", False))
        for label, ok in (("L0H0", i % 2 == 0), ("L0H1", i % 2 == 1), ("L0H2", False)):
            rows.append((p.id, label, ok))
    return pd.DataFrame(rows, columns=["question_id", "config", "correct"]), problems


# --------------------------------------------------------------------------- helpers


def test_parse_indices_forms_and_errors():
    assert parse_indices("0,5,10") == [0, 5, 10]
    assert parse_indices(" 0-2, 7 ") == [0, 1, 2, 7]
    assert parse_indices("3 3 1") == [3, 1]
    assert parse_indices("all") is None and parse_indices("") is None
    assert parse_indices((4, 2)) == [4, 2]
    with pytest.raises(ValueError, match="cannot read"):
        parse_indices("0,x")
    with pytest.raises(ValueError, match="empty range"):
        parse_indices("5-2")


def test_word_diff_round_trips_and_marks_changes():
    old = "Tom has 5 apples.\nSo 5 - 1 = 4. The answer is 4."
    new = "Tom has 5 apples.\nSo 5 + 1 = 6. The answer is 6 <b>"
    ops = word_diff(old, new)
    assert "".join(a for _, a, _ in ops) == old
    assert "".join(b for _, _, b in ops) == new
    left, right = diff_sides(old, new)
    assert ">-</del>" in left and ">+</ins>" in right
    assert ">4.</del>" in left and ">6.</ins>" in right
    assert left.count("<del ") == 3 and right.count("<ins ") == 3
    assert "&lt;b&gt;" in right and "<b>" not in right  # escaped
    page = word_diff_html(old, new, labels=("unpruned", "L0H1"))
    assert "L0H1" in page and "<ins " in page and "<del " in page and 'class="sl-diff"' in page
    assert diff_sides("same text", "same text") == ("same text", "same text")


def test_planned_deltas_keeps_full_grid_while_partial():
    result = _synthetic_result()
    heads = result.heads
    full = planned_deltas(result, heads)
    assert full["config"].tolist() == [h.label for h in heads]
    assert full.loc[full["config"] == "L1H2", "delta"].item() == pytest.approx(-0.5)
    partial = SweepResult(result.table[result.table["config"].isin(["none", "L0H0"])])
    planned = planned_deltas(partial, heads)
    assert len(planned) == 6
    assert planned["delta"].notna().tolist() == [True] + [False] * 5
    assert planned["n"].tolist() == [6, 0, 0, 0, 0, 0]
    no_baseline = SweepResult(result.table[result.table["config"] == "L0H0"])
    assert planned_deltas(no_baseline, heads)["delta"].isna().all()
    assert planned_deltas(None, heads)["delta"].isna().all()


def test_head_outcomes_and_frame_html():
    result = _synthetic_result()
    out = SweepResult.coerce(result).outcomes("L1H2", _problems())
    assert out["question_id"].tolist() == [f"q{i}" for i in range(6)]
    assert out["changed"].tolist() == [True, True, True, False, False, False]
    assert out.loc[0, "pruned_extracted"] == "99" and out.loc[0, "baseline_extracted"] == "1"
    assert out.loc[0, "gold"] == "1" and "Tom has 2 apples" in out.loc[0, "question"]
    with pytest.raises(ValueError, match="no rows for L5H0"):
        SweepResult.coerce(result).outcomes("L5H0")
    page = frame_html(out)
    assert page.count("</tr>") == 7 and "✓" in page and "✗" in page


# --------------------------------------------------------------------------- figures


def test_sync_figure_updates_in_place_or_replaces():
    widget = figure_widget(go.Figure(go.Heatmap(z=[[1.0]])))
    clicks = []
    widget.data[0].on_click(lambda *args: clicks.append(args))
    sync_figure(widget, go.Figure(go.Heatmap(z=[[2.0, 3.0]]), layout={"title": {"text": "new"}}))
    assert [list(r) for r in widget.data[0].z] == [[2.0, 3.0]]
    assert widget.layout.title.text == "new"
    assert widget.data[0]._click_callbacks  # the in-place update kept the handler
    sync_figure(widget, go.Figure([go.Scatter(y=[1, 2]), go.Scatter(y=[3])]))
    assert [t.type for t in widget.data] == ["scatter", "scatter"]
    assert list(widget.data[1].y) == [3]
    assert widget.layout.title.text is None  # layout keys the new figure lacks are dropped
    placeholder = figure_widget(
        go.Figure(layout={"annotations": [{"text": "run me"}], "xaxis": {"visible": False}})
    )
    sync_figure(placeholder, go.Figure(go.Heatmap(z=[[1.0]]), layout={"xaxis": {"title": "x"}}))
    assert placeholder.layout.annotations == () and placeholder.layout.xaxis.visible is None
    assert placeholder.data[0].type == "heatmap"


# --------------------------------------------------------------------------- heat map explorer


def test_heatmap_explorer_select_and_click():
    result = _synthetic_result()
    explorer = HeatmapExplorer(result, _problems())
    z = np.array(explorer.figure.data[0].z, dtype=float)
    assert z.shape == (2, 3)
    assert z[1, 2] == pytest.approx(-0.5)  # L1H2: 5/6 -> 2/6
    table = explorer.select(1, 2)
    assert explorer.selected == Head(1, 2)
    assert table["changed"].sum() == 3
    assert "L1H2" in explorer.header.value and "3 of 6 questions" in explorer.header.value
    assert explorer.table_html.value.count("</tr>") == 7
    assert explorer.question_box.options[0] == "q0"  # changed questions first
    assert "<ins " in explorer.diff_html.value and "<del " in explorer.diff_html.value
    assert ">1</del>" in explorer.diff_html.value and ">99</ins>" in explorer.diff_html.value
    explorer.question_box.value = "q4"  # unchanged: no highlighting
    assert "<ins" not in explorer.diff_html.value and "5 apples" in explorer.diff_html.value

    # A click in the browser arrives as a plotly points callback on the figure widget.
    explorer.figure._handler_js2py_pointsCallback(
        {
            "new": {
                "event_type": "plotly_click",
                "points": {
                    "xs": ["H1"],
                    "ys": ["L0"],
                    "point_indexes": [[0, 1]],
                    "trace_indexes": [0],
                },
            }
        }
    )
    assert explorer.selected == Head(0, 1)
    assert explorer.table.loc[explorer.table["question_id"] == "q5", "changed"].item()
    assert explorer.question_box.value == "q5"


def _with_placebos(result: SweepResult, flips: dict[str, list[str]]) -> SweepResult:
    """``result`` plus placebo runs: copies of the baseline, with the named questions flipped."""
    base = result.table[result.table["config"] == "none"]
    parts = [result.table]
    for label, questions in flips.items():
        copy = base.assign(config=label)
        flipped = copy["question_id"].isin(questions)
        copy.loc[flipped, "correct"] = ~copy.loc[flipped, "correct"].astype(bool)
        parts.append(copy)
    return SweepResult(pd.concat(parts, ignore_index=True), result.meta)


def test_heatmap_explorer_with_placebo_runs():
    # none~1 matches the baseline; none~2 flips q0 (right -> wrong): noise floor 1/6.
    result = _with_placebos(_synthetic_result(), {"none~1": [], "none~2": ["q0"]})
    assert result.placebos == ["none~1", "none~2"]
    explorer = HeatmapExplorer(result, _problems())
    main, veil = explorer.figure.data
    assert list(main.y) == ["L0", "L1"] and list(main.x) == ["H0", "H1", "H2"]
    assert np.array(main.z, dtype=float).shape == (2, 3)
    assert veil.name == "within placebo noise"
    assert explorer.figure.layout.meta["noise_floor"] == pytest.approx(1 / 6)
    explorer.select(1, 2)  # delta -0.5: above the floor
    assert "Above the placebo noise floor (|Δ| ≤ 0.167)." in explorer.header.value
    explorer.select(0, 1)  # delta +1/6: at the floor, within it
    assert "Within the placebo noise floor (|Δ| ≤ 0.167)." in explorer.header.value
    # A click that lands on the veil (the top trace) selects the cell under it.
    explorer.figure._handler_js2py_pointsCallback(
        {
            "new": {
                "event_type": "plotly_click",
                "points": {
                    "xs": ["H2"],
                    "ys": ["L1"],
                    "point_indexes": [[1, 2]],
                    "trace_indexes": [1],
                },
            }
        }
    )
    assert explorer.selected == Head(1, 2)
    plain = HeatmapExplorer(_synthetic_result(), _problems())
    plain.select(1, 2)
    assert "placebo" not in plain.header.value and len(plain.figure.data) == 1


def test_sweep_panel_plan_leaves_placebos_out():
    # The panel draws planned_deltas(result, heads): a result with placebo runs (say a resumed
    # store) keeps one row per planned head and no placebo row.
    result = _with_placebos(_synthetic_result(), {"none~1": ["q0"]})
    planned = planned_deltas(result, result.heads)
    assert planned["config"].tolist() == [h.label for h in result.heads]
    fig = heatmap(planned)
    assert list(fig.data[0].y) == ["L0", "L1"] and fig.layout.meta is None


# --------------------------------------------------------------------------- sweep panel


def _z(panel: SweepPanel) -> np.ndarray:
    return np.array(panel.figure.data[0].z, dtype=float)


def test_sweep_panel_runs_and_redraws_per_batch(embedded_model):
    problems = _problems(2)
    panel = SweepPanel(
        model=embedded_model,
        problems=problems,
        layers="0",
        heads="0,1",
        n_problems=2,
        max_new_tokens=6,
        batch_size=2,
        prompt=PROMPT,
        background=False,
    )
    assert panel.dataset_box.value == "given" and panel.model_box.value == embedded_model.name
    panel.run_button.click()
    result = panel.wait()
    assert result is panel.result and result.complete
    assert len(result.table) == 2 * 3
    assert set(result.table["config"]) == {"none", "L0H0", "L0H1"}
    assert panel.progress.value == 6 and panel.progress.description == "6 / 6"
    assert panel.redraws == 1 + 3 + 1  # the empty plan, one per batch, the final map
    z = _z(panel)
    assert z.shape == (1, 2) and np.isfinite(z).all()
    deltas = result.deltas()
    assert z[0].tolist() == pytest.approx(deltas["delta"].tolist())
    assert "Done: 6 answers" in panel.status.value
    assert not panel.run_button.disabled and panel.cancel_button.disabled


def test_sweep_panel_cancel_keeps_computed_rows(embedded_model):
    problems = _problems(3)
    panel = SweepPanel(
        model=embedded_model,
        problems=problems,
        layers="0",
        heads="0-2",
        n_problems=3,
        max_new_tokens=6,
        batch_size=4,
        prompt=PROMPT,
    )
    # Cancel as soon as the first batch is reported, from the sweep's own thread.
    panel.progress.observe(lambda change: panel.cancel_button.click(), names="value")
    panel.run_button.click()
    assert panel.running or panel.result is not None
    result = panel.wait(timeout=600)
    assert not result.complete
    assert len(result.table) == 4  # the batch in flight finished, nothing after it
    assert result.table["config"].tolist() == ["none", "none", "none", "L0H0"]
    assert "Cancelled: kept 4 of 12 answers" in panel.status.value
    z = _z(panel)
    assert z.shape == (1, 3)
    assert np.isfinite(z[0, 0]) and np.isnan(z[0, 1:]).all()  # L0H0 on one question only
    assert panel.progress.value == 4 and not panel.run_button.disabled


def test_sweep_panel_reports_bad_settings(embedded_model):
    panel = SweepPanel(model=embedded_model, problems=_problems(1), layers="0,x", background=False)
    panel.run_button.click()
    assert "cannot read" in panel.status.value and panel.result is None
    panel.layers_box.value = "0"
    panel.heads_box.value = "42"
    panel.run_button.click()
    assert "unknown heads [42]" in panel.status.value
    with pytest.raises(ValueError, match="unknown heads"):
        panel.wait()
    assert not panel.run_button.disabled


# --------------------------------------------------------------------------- selector trainer


def _trainer(epochs: int = 25) -> SelectorTrainer:
    sweep, problems = _selector_sweep()
    selector = SprintSelector(["L0H0", "L0H1", "L0H2"], encoder=_HashEncoder(), dim=4, seed=0)
    return SelectorTrainer(
        selector,
        sweep,
        problems,
        epochs=epochs,
        lr=0.05,
        background=False,
        val_fraction=0.25,
        patience=None,
    )


def test_selector_trainer_trains_and_draws_curves():
    trainer = _trainer()
    trainer.train_button.click()
    selector = trainer.wait()
    assert selector.net_ is not None
    history = trainer.history
    assert history["epoch"].tolist() == list(range(26))
    names = [t.name for t in trainer.figure.data]
    assert "train loss" in names and "val top-1 hit" in names
    train_loss = next(t for t in trainer.figure.data if t.name == "train loss")
    assert list(train_loss.x) == list(range(26))
    assert train_loss.y[-1] < train_loss.y[0]  # it learned something
    assert "Trained 25 epochs" in trainer.status.value
    assert trainer.redraws >= 1


def test_selector_trainer_redraws_every_epoch_when_fit_has_a_callback():
    trainer = _trainer(epochs=10)
    if not trainer.live:
        pytest.skip("SprintSelector.fit has no callback= yet: the curve is drawn once at the end")
    trainer.train()
    trainer.wait()
    assert trainer.redraws == 11 + 1  # epochs 0..10, then the final history


class _LiveSelector:
    """A selector double whose ``fit`` reports every epoch through ``callback`` (fit's API)."""

    def __init__(self) -> None:
        self.history = pd.DataFrame()
        self.report_: dict = {}

    def fit(self, sweep, problems, *, epochs, lr, callback=None, **kwargs):
        rows = []
        for epoch in range(epochs + 1):
            row = {
                "epoch": epoch,
                "train_loss": 1.0 / (1 + lr * epoch),
                "val_loss": 1.2,
                "train_top1_hit": 0.5,
                "val_top1_hit": 0.25,
            }
            rows.append(row)
            if callback is not None:
                callback(dict(row))
        self.history = pd.DataFrame(rows)
        self.report_ = {"epochs_run": epochs, "best_epoch": epochs, "n_train": 3, "n_val": 1}
        return self


def test_selector_trainer_live_curve_with_a_per_epoch_callback():
    selector = _LiveSelector()
    seen: list[int] = []
    trainer = SelectorTrainer(
        selector, pd.DataFrame(), [], epochs=6, lr=0.5, redraw_every=2, background=False
    )
    assert trainer.live
    original = trainer._redraw

    def spy(history):
        seen.append(len(history))
        original(history)

    trainer._redraw = spy
    trainer.train()
    assert trainer.wait() is selector
    assert seen == [1, 3, 5, 7, 7]  # epochs 0, 2, 4, 6 live, then the final history
    assert trainer.redraws == 5
    loss = next(t for t in trainer.figure.data if t.name == "train loss")
    assert list(loss.x) == list(range(7))
    assert "best epoch 6" in trainer.status.value


def test_selector_trainer_shows_fit_errors():
    sweep, problems = _selector_sweep()
    selector = SprintSelector(["L0H0", "L0H1"], encoder=_HashEncoder(), dim=4)
    trainer = SelectorTrainer(selector, sweep, [Problem("other", "x?", "1")], background=False)
    trainer.train_button.click()  # a button never raises: the error is shown
    assert "ValueError: no overlap" in trainer.status.value
    with pytest.raises(ValueError, match="no overlap"):
        trainer.wait()
    with pytest.raises(ValueError, match="no overlap"):  # called inline, it raises
        trainer.train()
    assert not trainer.train_button.disabled


# --------------------------------------------------------------------------- question inspector


@pytest.fixture(scope="module")
def fitted_selector() -> SprintSelector:
    sweep, problems = _selector_sweep()
    selector = SprintSelector(["L0H0", "L0H1", "L0H2"], encoder=_HashEncoder(), dim=4, seed=0)
    return selector.fit(sweep, problems, epochs=30, lr=0.05, val_fraction=0.0)


def test_question_inspector_generates_top_k_side_by_side(embedded_model, fitted_selector):
    problems = _problems(2)
    inspector = QuestionInspector(
        embedded_model,
        fitted_selector,
        problems,
        prompt=PROMPT,
        k=2,
        max_new_tokens=8,
        background=False,
    )
    ranking = inspector.ranking
    assert ranking["question_id"].unique().tolist() == ["q0"]
    expected = [h.label for h in fitted_selector.top_heads(problems[0], 3)]
    assert ranking["head"].tolist() == expected
    assert "Heads ranked by the selector" in inspector.rank_html.value
    inspector.generate_button.click()
    table = inspector.wait()
    assert table["config"].tolist() == ["none"] + expected[:2]
    assert table["rank"].tolist()[1:] == [1, 2]
    assert table["correct"].map(type).eq(bool).all()  # graded: the gold answer is known
    # Each pruned answer equals a separate generation under that head's mask.
    template = get_template(PROMPT)
    prompt = template.parts(problems[0].question, embedded_model.tokenizer)
    for config, text in zip(table["config"], table["completion"], strict=True):
        heads = [] if config == "none" else [config]
        alone = generate(
            embedded_model,
            [prompt],
            head_masks=mask_for(embedded_model, heads),
            max_new_tokens=8,
            stop=template.stop_strings(embedded_model.tokenizer),
        )
        assert alone[0].text == text
    page = inspector.output_html.value
    assert "unpruned" in page and f"prune {expected[0]} (rank 1" in page
    assert ("✓ correct" in page) or ("✗ wrong" in page)


def test_question_inspector_custom_question(embedded_model, fitted_selector):
    inspector = QuestionInspector(
        embedded_model,
        fitted_selector,
        _problems(1),
        prompt=PROMPT,
        k=1,
        max_new_tokens=4,
        background=False,
    )
    inspector.text_box.value = "What is 2 + 2?"
    assert inspector.question_box.value == CUSTOM
    problem = inspector.current_problem()
    assert problem.id.startswith("custom-") and problem.answer == ""
    assert inspector.ranking["question_id"].unique().tolist() == [problem.id]
    inspector.generate_button.click()
    table = inspector.wait()
    assert len(table) == 2 and table["correct"].isna().all()  # no gold: not graded
    assert "not graded" in inspector.output_html.value
    inspector.gold_box.value = "4"
    inspector.generate()
    table = inspector.wait()
    assert table["correct"].map(type).eq(bool).all()
    inspector.question_box.value = 0
    assert inspector.text_box.value == "" and inspector.current_problem().id == "q0"
    inspector.question_box.value = CUSTOM
    assert "type a question" in inspector.rank_html.value
    with pytest.raises(ValueError, match="type a question"):
        inspector.generate()


def test_widgets_repr_as_widgets():
    explorer = HeatmapExplorer(_synthetic_result())
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "sprint-lab-heatmap-explorer" in explorer._dom_classes
    assert not math.isnan(float(np.nanmin(np.array(explorer.figure.data[0].z, dtype=float))))


def test_jobs_on_one_model_wait_for_each_other(embedded_model, fitted_selector):
    inspector = QuestionInspector(
        embedded_model, fitted_selector, _problems(1), prompt=PROMPT, k=1, max_new_tokens=2
    )
    assert model_lock(embedded_model) is model_lock(embedded_model)
    with model_lock(embedded_model):  # another job (here: this thread) holds the model
        inspector.generate()
        deadline = time.monotonic() + 30
        while "Waiting for another job" not in inspector.status.value:
            assert time.monotonic() < deadline, inspector.status.value
            time.sleep(0.05)
        assert inspector.running and inspector.completions.empty
    table = inspector.wait(timeout=300)
    assert len(table) == 2 and "Generated 2 answers" in inspector.status.value
