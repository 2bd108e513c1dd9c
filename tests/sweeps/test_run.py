"""The sweep runner: deterministic, resumable, executor-agnostic, with honest paired statistics."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from sprint_lab import (
    BASELINE,
    Executor,
    LocalExecutor,
    SweepResult,
    all_heads,
    load_problems,
    sweep,
)
from sprint_lab.sweeps.batch import BatchRunner
from sprint_lab.sweeps.executor import RowSink, SweepJob, resolve_executor
from sprint_lab.viz.report import write_report

SETTINGS = dict(max_new_tokens=12, batch_size=6, progress=False)


@pytest.fixture(scope="module")
def problems():
    return load_problems("arith", limit=4, seed=3)


@pytest.fixture(scope="module")
def heads(embedded_model):
    return all_heads(embedded_model, layers=[0])[:3] + all_heads(embedded_model, layers=[20])[:1]


@pytest.fixture(scope="module")
def full(embedded_model, problems, heads):
    return sweep(embedded_model, problems, heads, **SETTINGS)


def test_table_shape_and_columns(full, problems, heads):
    table = full.table
    assert len(table) == len(problems) * (len(heads) + 1)
    assert list(table["config"].unique()) == [BASELINE] + [h.label for h in heads]
    assert not table.duplicated(["question_id", "config"]).any()
    for column in [
        "question_id",
        "config",
        "layer",
        "head",
        "completion",
        "extracted",
        "correct",
        "n_tokens",
        "level",
        "subject",
    ]:
        assert column in table.columns
    assert (table.loc[table.config == "none", ["layer", "head"]] == -1).all().all()
    assert full.complete and full.heads == heads


def test_same_seed_same_table_bit_for_bit(embedded_model, problems, heads, full):
    again = sweep(embedded_model, problems, heads, **SETTINGS)
    pd.testing.assert_frame_equal(full.table, again.table)


def test_batch_size_does_not_change_answers(embedded_model, problems, heads, full):
    other = sweep(embedded_model, problems, heads, **{**SETTINGS, "batch_size": 20})
    changed = (other.table["completion"] != full.table["completion"]).sum()
    assert changed <= 1  # at most a counted float near-tie across batch shapes (see generation)


def test_interrupt_and_resume(embedded_model, problems, heads, full, tmp_path):
    out = tmp_path / "store"
    cancel = threading.Event()
    batches = []

    def stop_after_first(progress):
        batches.append(progress.done)
        cancel.set()

    partial = sweep(
        embedded_model,
        problems,
        heads,
        out=out,
        callback=stop_after_first,
        cancel=cancel,
        strategy="verify",  # cancel, interrupt and resume on verify-then-decode too
        **SETTINGS,
    )
    assert not partial.complete and len(partial.table) == SETTINGS["batch_size"]

    def boom(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(embedded_model, problems, heads, out=out, callback=boom, strategy="verify",
              **SETTINGS)  # fmt: skip
    assert len(SweepResult.load(out).table) == 2 * SETTINGS["batch_size"]  # nothing lost

    redone = []
    resumed = sweep(
        embedded_model,
        problems,
        heads,
        out=out,
        callback=lambda p: redone.append(len(p.new_rows)),
        strategy="verify",
        **SETTINGS,
    )
    assert sum(redone) == len(full.table) - 2 * SETTINGS["batch_size"]
    assert resumed.complete
    pd.testing.assert_frame_equal(resumed.table, full.table)
    pd.testing.assert_frame_equal(SweepResult.load(out).table, full.table)


def test_store_refuses_overwrite_and_mixed_settings(embedded_model, problems, heads, tmp_path):
    out = tmp_path / "store"
    sweep(embedded_model, problems[:1], heads[:1], out=out, **SETTINGS)
    with pytest.raises(FileExistsError, match="resume=True"):
        sweep(embedded_model, problems[:1], heads[:1], out=out, resume=False, **SETTINGS)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sweep(embedded_model, problems[:1], heads[:1], out=out, **{**SETTINGS, "max_new_tokens": 5})


class LastBatchFirst:
    """A minimal executor written against the protocol: same batches, delivered in reverse."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, job: SweepJob, items, sink: RowSink) -> bool:
        runner = BatchRunner(
            job.model, job.problems, prompt=job.template, max_new_tokens=job.max_new_tokens,
            grade_mode=job.grade_mode,
        )  # fmt: skip
        batches = [items[i : i + job.batch_size] for i in range(0, len(items), job.batch_size)]
        for batch in reversed(batches):
            if job.cancelled():
                return False
            sink.emit(runner.run(batch), tag="custom-")
            self.calls += 1
        return True


def test_custom_executor_gives_the_local_table(embedded_model, problems, heads, full, tmp_path):
    custom = LastBatchFirst()
    assert isinstance(custom, Executor)
    seen = []
    result = sweep(
        embedded_model, problems, heads, executor=custom, out=tmp_path,
        callback=lambda p: seen.append(p.done), **SETTINGS,
    )  # fmt: skip
    n_batches = -(-len(full.table) // SETTINGS["batch_size"])
    assert custom.calls == n_batches and seen[-1] == len(full.table)
    assert result.complete
    pd.testing.assert_frame_equal(result.table, full.table)
    pd.testing.assert_frame_equal(SweepResult.load(tmp_path).table, full.table)
    assert all(p.name.startswith("part-custom-") for p in tmp_path.glob("part-*.parquet"))


def test_local_executor_object_equals_the_name(embedded_model, problems, heads, full):
    again = sweep(embedded_model, problems, heads, executor=LocalExecutor(), **SETTINGS)
    pd.testing.assert_frame_equal(again.table, full.table)


def test_executor_names_resolve_lazily():
    assert isinstance(resolve_executor("local"), LocalExecutor)
    assert type(resolve_executor("ray")).__name__ == "RayExecutor"
    executor = LocalExecutor(attention="bridge")
    assert resolve_executor(executor) is executor
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        resolve_executor("dask")
    with pytest.raises(ValueError, match="run"):
        resolve_executor(object())


def test_bad_heads_raise(embedded_model, problems):
    with pytest.raises(ValueError, match="valid layers"):
        sweep(embedded_model, problems, ["L99H0"], **SETTINGS)
    with pytest.raises(ValueError, match="twice"):
        sweep(embedded_model, problems, ["L0H0", "L0H0"], **SETTINGS)


def test_save_load_round_trip(full, tmp_path):
    path = full.save(tmp_path / "sweep.parquet")
    loaded = SweepResult.load(path)
    pd.testing.assert_frame_equal(loaded.table, full.table)
    assert loaded.meta == full.meta
    folder = full.save(tmp_path / "folder")
    pd.testing.assert_frame_equal(SweepResult.load(folder).table, full.table)


def test_deltas_are_paired_and_corrected(full, problems, heads):
    deltas = full.deltas()
    assert list(deltas["config"]) == [h.label for h in heads]
    base = full.table[full.table.config == "none"].set_index("question_id")["correct"]
    for _, row in deltas.iterrows():
        pruned = full.table[full.table.config == row.config].set_index("question_id")["correct"]
        assert row.n == len(problems)
        assert row.delta == pytest.approx(pruned.mean() - base.mean())
        assert row.ci_low <= row.delta <= row.ci_high
        assert 0 <= row.p_value <= row.q_value <= 1
    by_level = full.deltas(by="level")
    assert set(by_level["level"]) == {p.level for p in problems}
    with pytest.raises(ValueError, match="no such column"):
        full.deltas(by="colour")


def test_deltas_statistics_on_a_known_table():
    rows = []
    for q in range(20):
        rows.append(
            {"question_id": f"q{q}", "config": "none", "layer": -1, "head": -1, "correct": q < 10}
        )
        rows.append(
            {"question_id": f"q{q}", "config": "L1H2", "layer": 1, "head": 2, "correct": q < 18}
        )
    deltas = SweepResult(pd.DataFrame(rows)).deltas()
    row = deltas.iloc[0]
    assert row.delta == pytest.approx(0.4)
    # 8 discordant pairs, all in favour of pruning: exact two-sided p = 2 * 0.5**8
    assert row.p_value == pytest.approx(2 * 0.5**8)
    assert row.ci_low > 0


def test_report_html(full, tmp_path):
    path = write_report(full, tmp_path / "report.html")
    text = path.read_text()
    assert "plotly" in text.lower() and "L0H0" in text and "<table" in text


def test_verify_and_decode_strategies_give_the_same_table(embedded_model, problems, heads, full):
    assert full.meta["strategy"] == "decode" and full.meta["deterministic"] is True
    verified = sweep(embedded_model, problems, heads, strategy="verify", **SETTINGS)
    assert verified.meta["strategy"] == "verify"
    pd.testing.assert_frame_equal(verified.table, full.table)
    diverged = full.table.set_index("config")["diverged_at"]
    assert diverged.loc[BASELINE].isna().all()
    assert diverged.drop(BASELINE).notna().any()
    assert str(full.table["diverged_at"].dtype) == "Int64"
    with pytest.raises(ValueError, match="strategy='verify' is exact only with deterministic"):
        sweep(embedded_model, problems, heads, strategy="verify", deterministic=False, **SETTINGS)
