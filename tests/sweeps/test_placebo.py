"""Placebos: unpruned configurations run like pruned ones, to measure batch noise."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from sprint_lab import SweepResult, load_problems, sweep
from sprint_lab.core.heads import is_placebo, parse_config, placebo_label
from sprint_lab.sweeps.rows import config_labels

HEADS = ["L0H1", "L1H2", "L2H3"]
SETTINGS = dict(max_new_tokens=6, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def problems():
    return load_problems("arith", limit=5, seed=2)


@pytest.fixture(scope="module")
def with_placebos(tiny, problems):
    return sweep(tiny, problems, HEADS, placebos=2, **SETTINGS)


def test_labels_and_plan_spread_placebos_between_heads():
    assert placebo_label(3) == "none~3" and is_placebo("none~3") and parse_config("none~3") == ()
    with pytest.raises(ValueError, match="placebo numbers start at 1"):
        placebo_label(0)
    from sprint_lab.core.heads import Head

    heads = [Head(0, h) for h in range(6)]
    labels = config_labels(heads, placebos=2)
    assert labels[0] == "none" and labels.index("none~1") == 3 and labels.index("none~2") == 6
    with pytest.raises(ValueError, match="placebos must be a whole number"):
        config_labels(heads, placebos=-1)


def test_placebo_rows_deltas_and_check(with_placebos, problems):
    result = with_placebos
    assert result.placebos == ["none~1", "none~2"] and [h.label for h in result.heads] == HEADS
    assert len(result.table) == len(problems) * (1 + 2 + len(HEADS)) and result.complete
    deltas = result.deltas()
    placebo_rows = deltas[deltas["config"].map(is_placebo)]
    assert list(placebo_rows["config"]) == ["none~1", "none~2"]
    assert (placebo_rows[["layer", "head"]] == -1).all().all()
    assert not result.top_heads(10)["config"].map(is_placebo).any()
    assert list(result.correctness().columns) == ["none", *HEADS]
    check = result.placebo_check()
    assert list(check["config"]) == ["none~1", "none~2"] and (check["n"] == len(problems)).all()
    # float32 on the tiny model: placebos answer token for token like the baseline
    base = result.table[result.table["config"] == "none"].set_index("question_id")["completion"]
    for label in result.placebos:
        rows = result.table[result.table["config"] == label].set_index("question_id")
        assert rows["completion"].equals(base), label
    assert (check["mismatched"] == 0).all() and (check["delta"] == 0).all()
    assert (placebo_rows["delta"] == 0).all()


def test_a_placebo_that_differs_is_shown(with_placebos):
    table = with_placebos.table.copy()
    flipped = (table["config"] == "none~1") & (table["question_id"] == table["question_id"].iloc[0])
    table.loc[flipped, "completion"] = "a different answer"
    table.loc[flipped, "correct"] = ~table.loc[flipped, "correct"]
    broken = SweepResult(table, with_placebos.meta)
    check = broken.placebo_check().set_index("config")
    assert check.loc["none~1", "mismatched"] == 1 and check.loc["none~1", "delta"] != 0
    assert check.loc["none~2", "mismatched"] == 0
    deltas = broken.deltas().set_index("config")
    assert deltas.loc["none~1", "delta"] != 0 and deltas.loc["none~1", "discordance"] > 0


def test_placebos_survive_the_store_and_resume(tiny, problems, with_placebos, tmp_path):
    out = tmp_path / "store"
    first = sweep(tiny, problems, HEADS, out=out, **SETTINGS)  # no placebos yet
    assert first.placebos == []
    again = sweep(tiny, problems, HEADS, out=out, placebos=2, **SETTINGS)
    assert again.complete and again.meta["placebos"] == 2
    loaded = SweepResult.load(out)
    assert loaded.complete and loaded.placebos == ["none~1", "none~2"]
    pd.testing.assert_frame_equal(loaded.table, with_placebos.table)


def test_power_and_mde(with_placebos):
    report = with_placebos.power(0.05)
    assert report["n_questions"] == 5 and report["n_heads"] == len(HEADS)
    assert 0 <= report["power"] < 0.5
    assert "mde" in with_placebos.deltas().columns


def test_deterministic_sweep_placebos_equal_the_baseline_in_bfloat16(tiny_models, problems):
    from sprint_lab import load_model

    model = load_model(tiny_models["llama"], dtype="bfloat16")
    result = sweep(
        model, problems, HEADS, placebos=2, deterministic=True, prompt="chat_gsm8k",
        max_new_tokens=8, batch_size=4, progress=False,
    )  # fmt: skip
    assert result.meta["deterministic"] is True
    check = result.placebo_check()
    assert (check["mismatched"] == 0).all() and (check["n"] == len(problems)).all()
    single = sweep(
        model, problems, HEADS, deterministic=True, prompt="chat_gsm8k", max_new_tokens=8,
        batch_size=1, progress=False,
    )  # fmt: skip
    mixed = result.table[~result.table["config"].str.startswith("none~")].reset_index(drop=True)
    assert mixed["completion"].tolist() == single.table["completion"].tolist()


def test_breaking_batch_invariance_makes_the_placebo_check_fail(tiny, problems, monkeypatch):
    """Logits that depend on the batch's size (what batch-dependent kernels do) show up in the
    placebo check: the same unpruned configuration answers differently in another batch."""
    lm_head = tiny.hf_model.lm_head

    def batch_dependent(module, inputs, output):
        # each row's noise depends on its place in the batch and on the batch's size
        generator = torch.Generator().manual_seed(output.shape[0])
        noise = torch.randn(output.shape, generator=generator, dtype=torch.float32)
        return output + 3 * noise.to(output.dtype)

    handle = lm_head.register_forward_hook(batch_dependent)
    try:
        broken = sweep(tiny, problems, HEADS, placebos=2, **{**SETTINGS, "batch_size": 4})
    finally:
        handle.remove()
    check = broken.placebo_check()
    assert check["mismatched"].sum() > 0, check
    deltas = broken.deltas().set_index("config")
    assert "none~1" in deltas.index and "mismatched" in check.columns
