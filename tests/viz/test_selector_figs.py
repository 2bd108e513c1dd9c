"""Tests for sprint_lab.viz.selector_figs (a stand-in selector with known scores and vectors)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from sprint_lab.viz.selector_figs import embedding_map, question_head_preferences, selector_history


def make_selector(n_questions: int = 6) -> tuple[NS, list[NS]]:
    import torch

    heads = [NS(label=f"L{layer}H{h}", layer=layer, head=h) for layer in (0, 3) for h in (0, 1)]
    problems = [
        NS(
            id=f"q{i}",
            question=f"Question {i}: " + "compute <x> " * 20,
            level=1 + i % 3,
            subject="algebra" if i % 2 else "geometry",
        )
        for i in range(n_questions)
    ]
    # Mean score per head column: col 2 highest, then 0, 3, 1. Best head per question varies.
    scores = torch.tensor(
        [
            [0.2, 0.0, 0.9, 0.1],
            [0.8, 0.1, 0.3, 0.0],
            [0.1, 0.0, 0.7, 0.6],
            [0.9, 0.0, 0.2, 0.1],
            [0.3, 0.2, 0.95, 0.2],
            [0.1, 0.3, 0.2, 0.5],
        ][:n_questions]
    )
    rng = np.random.default_rng(0)
    qvec = torch.tensor(rng.normal(size=(n_questions, 5)), dtype=torch.float32)
    hvec = torch.tensor(rng.normal(size=(len(heads), 5)), dtype=torch.float32)
    history = pd.DataFrame(
        {
            "epoch": [3, 1, 2],
            "train_loss": [0.6, 1.0, 0.8],
            "val_loss": [0.9, 1.1, 1.0],
            "val_top1_hit": [0.3, 0.1, 0.2],
            "train_top1_hit": [0.5, 0.2, 0.3],
        }
    )
    selector = NS(
        heads=heads,
        history=history,
        head_vectors=hvec,
        scores=lambda ps: scores[: len(ps)],
        question_vectors=lambda ps: qvec[: len(ps)],
    )
    return selector, problems


def test_selector_history_two_panels() -> None:
    selector, _ = make_selector()
    fig = selector_history(selector)
    names = {t.name: t for t in fig.data}
    assert set(names) == {"train loss", "val loss", "train top-1 hit", "val top-1 hit"}
    assert names["val loss"].yaxis == "y" and names["val top-1 hit"].yaxis == "y2"
    assert list(names["train loss"].x) == [1, 2, 3]  # sorted by epoch
    assert fig.layout.yaxis2.tickformat == ".0%"
    partial = selector.history[["epoch", "val_loss"]]
    assert [t.name for t in selector_history(partial).data] == ["val loss"]
    with pytest.raises(ValueError, match="empty"):
        selector_history(selector.history.iloc[:0])


def test_question_head_preferences_sorting_and_hover() -> None:
    selector, problems = make_selector()
    fig = question_head_preferences(selector, problems, max_chars=40)
    (trace,) = fig.data
    assert list(trace.x) == ["L3H0", "L0H0", "L3H1", "L0H1"]  # by mean score
    # rows grouped by best head (in column order), best score first within a group
    assert list(trace.y) == ["q4", "q0", "q2", "q3", "q1", "q5"]
    z = np.asarray(trace.z)
    assert z.shape == (6, 4) and z[0, 0] == pytest.approx(0.95)
    hover = trace.customdata[0][0]
    assert hover.startswith("Question 4:") and hover.endswith("…") and len(hover) < 60
    assert "&lt;x&gt;" in hover  # escaped for the hover label
    assert "%{customdata}" in trace.hovertemplate


def test_question_head_preferences_top_and_unsorted() -> None:
    selector, problems = make_selector()
    top = question_head_preferences(selector, problems, top=2).data[0]
    assert list(top.x) == ["L3H0", "L0H0"]
    raw = question_head_preferences(selector, problems, sort_by=None).data[0]
    assert list(raw.x) == ["L0H0", "L0H1", "L3H0", "L3H1"]
    assert list(raw.y) == [p.id for p in problems]
    with pytest.raises(ValueError, match="sort_by"):
        question_head_preferences(selector, problems, sort_by="alpha")
    with pytest.raises(ValueError, match="shape"):
        question_head_preferences(selector, problems[:3] + problems)


def test_embedding_map_pca_and_groups() -> None:
    selector, problems = make_selector()
    fig = embedding_map(selector, problems)
    assert [t.name for t in fig.data] == ["Level 1", "Level 2", "Level 3", "heads"]
    heads = fig.data[-1]
    assert list(heads.text) == ["L0H0", "L0H1", "L3H0", "L3H1"]
    assert heads.marker.symbol == "diamond"
    points = np.vstack([np.column_stack([t.x, t.y]) for t in fig.data])
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-9)  # PCA on the union
    assert sum(len(t.x) for t in fig.data[:-1]) == len(problems)
    assert "PC1" in fig.layout.xaxis.title.text


def test_embedding_map_subject_fallback_and_bad_method() -> None:
    selector, problems = make_selector()
    no_level = [NS(id=p.id, question=p.question, subject=p.subject) for p in problems]
    fig = embedding_map(selector, no_level)
    assert [t.name for t in fig.data] == ["algebra", "geometry", "heads"]
    plain = embedding_map(selector, problems, color_by=None)
    assert [t.name for t in plain.data] == ["questions", "heads"]
    with pytest.raises(ValueError, match="pca"):
        embedding_map(selector, problems, method="tsne")
