"""SweepResult on hand-made tables: the row schema, deltas, the correctness pivot, outcomes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sprint_lab import BASELINE, Head, SweepResult
from sprint_lab.sweeps.result import DELTA_COLUMNS, OUTCOME_COLUMNS
from sprint_lab.sweeps.rows import (
    COLUMNS,
    config_position,
    group_columns,
    make_row,
    order_table,
)

CONFIGS = [BASELINE, "L0H1", "L1H0"]
CORRECT = {  # question -> correctness under each configuration
    "q0": [True, False, True],
    "q1": [True, True, True],
    "q2": [False, False, True],
}


def _table() -> pd.DataFrame:
    rows = []  # in sweep order: configuration-major, baseline first
    for c, config in enumerate(CONFIGS):
        for qid, verdicts in CORRECT.items():
            correct = verdicts[c]
            layer, head = config_position(config)
            rows.append(
                {
                    "question_id": qid,
                    "config": config,
                    "layer": layer,
                    "head": head,
                    "completion": f"{qid}/{config}",
                    "extracted": "1" if correct else "2",
                    "correct": correct,
                    "n_tokens": 3,
                    "finish_reason": "stop",
                    "extractor": "last_number",
                    "level": 1 if qid != "q2" else 2,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def result() -> SweepResult:
    return SweepResult(_table(), {"model": "tiny"})


def test_make_row_follows_the_schema():
    problem = SimpleNamespace(id="q7", level=3, subject=None)
    completion = SimpleNamespace(text="= 4", n_tokens=2, finish_reason="stop")
    verdict = SimpleNamespace(correct=1, extracted="4", extractor="last_number")
    row = make_row(problem, "L2H3", completion, verdict, group_columns([problem]))
    assert list(row) == COLUMNS + ["level"]
    assert (row["layer"], row["head"], row["correct"], row["level"]) == (2, 3, True, 3)
    assert config_position(BASELINE) == (-1, -1)
    base = make_row(problem, BASELINE, completion, verdict)
    assert (base["layer"], base["head"]) == (-1, -1) and list(base) == COLUMNS


def test_order_table_puts_the_baseline_first_and_fixes_dtypes(result):
    shuffled = result.table.sample(frac=1.0, random_state=0)
    ordered = order_table(shuffled, heads=[Head(0, 1), Head(1, 0)])
    pd.testing.assert_frame_equal(ordered, result.table)
    assert list(order_table(pd.DataFrame()).columns) == COLUMNS


def test_deltas(result):
    deltas = result.deltas(n_boot=200)
    assert list(deltas.columns) == DELTA_COLUMNS
    assert list(deltas["config"]) == ["L0H1", "L1H0"]
    assert deltas["delta"].tolist() == pytest.approx([-1 / 3, 1 / 3])
    assert (deltas["n"] == 3).all()
    by_level = result.deltas(by="level", n_boot=200)
    assert sorted(set(by_level["level"])) == [1, 2]
    with pytest.raises(ValueError, match="no baseline"):
        SweepResult(result.table[result.table["config"] != BASELINE]).deltas()


def test_correctness_pivot(result):
    matrix = result.correctness()
    assert list(matrix.columns) == CONFIGS and list(matrix.index) == list(CORRECT)
    assert matrix.dtypes.eq(bool).all()
    assert matrix.to_numpy().tolist() == list(CORRECT.values())
    assert result.correctness([Head(1, 0), "l0h1"]).columns.tolist() == ["L1H0", "L0H1"]
    partial = SweepResult(result.table.drop(index=[0]))  # q0 lacks its baseline answer
    assert list(partial.correctness().index) == ["q1", "q2"]
    loose = partial.correctness(complete=False)
    assert np.isnan(loose.loc["q0", BASELINE]) and loose.loc["q0", "L1H0"] == 1.0
    with pytest.raises(ValueError, match="no rows for heads"):
        result.correctness(["L5H5"])
    with pytest.raises(ValueError, match="repeated"):
        SweepResult(pd.concat([result.table, result.table.iloc[:1]])).correctness()


def test_outcomes(result):
    problems = [SimpleNamespace(id=q, question=f"what is {q}?", answer=1) for q in CORRECT]
    out = result.outcomes("L0H1", problems)
    assert list(out.columns) == OUTCOME_COLUMNS
    assert out["changed"].tolist() == [True, False, False]
    assert out["question"].tolist()[0] == "what is q0?"
    assert out["baseline_extracted"].tolist() == ["1", "1", "2"]
    pd.testing.assert_frame_equal(result.outcomes(Head(0, 1)), result.outcomes("L0H1"))
    with pytest.raises(ValueError, match="no rows for L5H0"):
        result.outcomes("L5H0")


def test_coerce(result):
    assert SweepResult.coerce(result) is result
    holder = SimpleNamespace(table=result.table, meta={"a": 1})
    assert SweepResult.coerce(holder).meta == {"a": 1}
    bare = result.table[["question_id", "config", "correct"]]
    coerced = SweepResult.coerce(bare)
    pd.testing.assert_frame_equal(coerced.table[["layer", "head"]], result.table[["layer", "head"]])
    with pytest.raises(ValueError, match="missing columns"):
        SweepResult.coerce(bare.drop(columns="correct"))
    with pytest.raises(ValueError, match="DataFrame"):
        SweepResult.coerce([1, 2])
    deltas = result.deltas(n_boot=50)
    assert SweepResult.deltas_of(deltas) is deltas
    pd.testing.assert_frame_equal(SweepResult.deltas_of(result), result.deltas())
    with pytest.raises(TypeError, match="deltas"):
        SweepResult.deltas_of("L0H1")


def test_parquet_round_trip(result, tmp_path):
    path = result.save(tmp_path / "sweep.parquet")
    loaded = SweepResult.load(path)
    pd.testing.assert_frame_equal(loaded.table, result.table)
    assert loaded.meta == result.meta and loaded.complete
    folder = result.save(tmp_path / "folder")
    pd.testing.assert_frame_equal(SweepResult.load(folder).table, result.table)
    with pytest.raises(FileNotFoundError):
        SweepResult.load(tmp_path / "nothing.parquet")
