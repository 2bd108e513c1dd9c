"""The Parquet store: atomic appends, deduplicated reads, resume keys, settings checks."""

from __future__ import annotations

import pandas as pd
import pytest

from sprint_lab.sweeps.store import IDENTITY_KEYS, KEY, SweepStore


def _rows(questions: list[str], config: str = "none", correct: bool = True) -> pd.DataFrame:
    return pd.DataFrame(
        {"question_id": questions, "config": [config] * len(questions), "correct": correct}
    )


def test_append_and_read(tmp_path):
    store = SweepStore(tmp_path / "s")
    assert not store.has_rows() and store.read().empty and store.done_keys() == set()
    first = store.append(_rows(["a", "b"]))
    store.append(_rows(["a"], "L0H1"), tag="ray-")
    assert first.name.startswith("part-") and first.suffix == ".parquet"
    assert any(p.name.startswith("part-ray-") for p in store.parts())
    assert len(store.parts()) == 2
    assert not list(store.path.glob(".*.tmp"))  # temporary files were renamed
    table = store.read()
    pairs = set(zip(table["question_id"], table["config"], strict=True))
    assert len(table) == 3 and pairs == {("a", "none"), ("b", "none"), ("a", "L0H1")}


def test_duplicates_are_dropped_keeping_the_first(tmp_path):
    store = SweepStore(tmp_path)
    store.append(_rows(["a"], correct=True))
    store.append(_rows(["a"], correct=False))  # a retried shard wrote the pair again
    parts = [pd.read_parquet(p) for p in store.parts()]
    table = store.read()
    assert len(table) == 1 and not table.duplicated(KEY).any()
    first_written = pd.concat(parts, ignore_index=True).iloc[0]
    assert table.iloc[0]["correct"] == first_written["correct"]


def test_done_keys(tmp_path):
    store = SweepStore(tmp_path)
    store.append(_rows(["a", "b"]))
    store.append(_rows(["b"], "L1H2"))
    assert store.done_keys() == {("a", "none"), ("b", "none"), ("b", "L1H2")}


def test_meta_and_compatibility(tmp_path):
    store = SweepStore(tmp_path / "new")
    assert store.read_meta() == {}
    meta = {"model": "m", "max_new_tokens": 8, "seed": 0, "heads": ["L0H0"]}
    store.write_meta(meta)
    assert store.meta_path.is_file() and store.read_meta() == meta
    store.check_compatible({**meta, "heads": ["L0H1"]})  # the head list may grow
    store.check_compatible({"model": "m"})  # settings missing on one side are not compared
    assert "max_new_tokens" in IDENTITY_KEYS
    with pytest.raises(ValueError, match="max_new_tokens: stored 8 vs now 5"):
        store.check_compatible({**meta, "max_new_tokens": 5})


def test_a_file_is_not_a_store(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        SweepStore(path)
