"""The store's integrity: identity, one writer, saves that never destroy, named corruption."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from sprint_lab import SweepResult, load_problems, sweep
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.sweeps import store as store_module
from sprint_lab.sweeps.lock import StoreLock, StoreLockedError
from sprint_lab.sweeps.store import (
    CorruptStoreError,
    StaleRowsError,
    SweepExistsError,
    SweepStore,
)
from sprint_lab.viz.report import write_report

SETTINGS = dict(max_new_tokens=4, batch_size=2, progress=False)
HEADS = ["L0H1", "L2H3"]


@pytest.fixture(scope="module")
def problems():
    return load_problems("arith", limit=4, seed=5)


@pytest.fixture(scope="module")
def reference(tiny, problems):
    return sweep(tiny, problems, HEADS, **SETTINGS)


def _write_jsonl(path, golds):
    lines = [
        json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": gold})
        for i, gold in enumerate(golds)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_rows_carry_fingerprints_and_meta_records_them(reference, problems):
    table = reference.table
    prints = reference.meta["fingerprints"]
    assert set(prints) == {p.id for p in problems}
    assert (table["fingerprint"] == table["question_id"].map(prints)).all()
    assert len(reference.meta["model_fingerprint"]) == 64


def test_edited_jsonl_is_refused_then_recomputed(tiny, tmp_path):
    data = tmp_path / "my.jsonl"
    _write_jsonl(data, ["0", "2", "4"])
    out = tmp_path / "store"
    first = sweep(tiny, load_problems(str(data)), HEADS, out=out, **SETTINGS)
    assert first.complete
    _write_jsonl(data, ["0", "999", "4"])  # q1's gold edited under the same id
    edited = load_problems(str(data))
    with pytest.raises(StaleRowsError, match=r"3 stored row\(s\) of 1 question\(s\).*ids: q1"):
        sweep(tiny, edited, HEADS, out=out, **SETTINGS)
    again = sweep(tiny, edited, HEADS, out=out, recompute_stale=True, **SETTINGS)
    assert again.complete and len(again.table) == 9
    fresh = again.table.set_index(["question_id", "config"])
    assert fresh.loc[("q1", "none"), "fingerprint"] == again.meta["fingerprints"]["q1"]
    assert fresh.loc[("q1", "none"), "fingerprint"] != first.meta["fingerprints"]["q1"]
    assert not again.table.loc[again.table["question_id"] == "q1", "correct"].any()
    loaded = SweepResult.load(out)
    assert loaded.complete and loaded.equals(again)
    assert (
        len(SweepStore(out).read()) == 9
        and len(pd.concat(map(pd.read_parquet, SweepStore(out).parts()))) == 12
    )


def test_foreign_question_set_is_incomplete(tiny, problems, tmp_path):
    out = tmp_path / "store"
    sweep(tiny, problems[:2], HEADS, out=out, **SETTINGS)
    cancel = threading.Event()
    other = load_problems("arith", limit=4, seed=6)
    with pytest.warns(UserWarning, match="outside this sweep's plan"):
        partial = sweep(
            tiny, other, HEADS, out=out, cancel=cancel,
            callback=lambda progress: cancel.set(), **SETTINGS,
        )  # fmt: skip
    assert not partial.complete and len(partial.table) == 2
    assert set(partial.table["question_id"]) <= {p.id for p in other}
    loaded = SweepResult.load(out)
    assert not loaded.complete and len(loaded.table) == 2
    html = write_report(loaded, tmp_path / "report.html").read_text()
    assert "Incomplete sweep" in html


def test_a_running_writer_locks_out_a_second(tiny, problems, tmp_path):
    out = tmp_path / "store"
    with StoreLock(out, "sweep"):
        with pytest.raises(StoreLockedError, match=rf"sweep in progress by pid {os.getpid()}"):
            sweep(tiny, problems[:1], HEADS, out=out, **SETTINGS)
    assert not SweepStore(out).has_rows()
    assert sweep(tiny, problems[:1], HEADS, out=out, **SETTINGS).complete


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    code = (
        "import sys, time; from sprint_lab.sweeps.lock import StoreLock; "
        "StoreLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on "):
            StoreLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = StoreLock(tmp_path).acquire()
    assert lock.took_over is not None and lock.took_over["pid"] == holder.pid
    lock.release()


def _store_with_rows(tmp_path, settings="A", rows=3):
    table = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(rows)],
            "config": ["none"] * rows,
            "layer": -1,
            "head": -1,
            "correct": True,
            "n_tokens": 4,
        }
    )
    result = SweepResult(table, {"settings_fingerprint": settings})
    return result, result.save(tmp_path / "saved")


def test_a_failed_save_keeps_every_row(tmp_path):
    result, path = _store_with_rows(tmp_path)
    broken = result.table.assign(extracted=[1, "two", 3.0])  # mixed types: ArrowInvalid
    with pytest.raises(Exception, match="extracted|Conversion|convert"):
        SweepResult(broken, result.meta).save(path)
    assert SweepResult.load(path).equals(result)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_save_refuses_another_sweep_unless_overwrite(tmp_path):
    result, path = _store_with_rows(tmp_path)
    other = SweepResult(result.table.iloc[:1], {"settings_fingerprint": "B"})
    with pytest.raises(SweepExistsError, match="other settings; pass overwrite=True"):
        other.save(path)
    assert len(SweepResult.load(path).table) == 3
    result.save(path)  # the same sweep may be saved again
    other.save(path, overwrite=True)
    assert len(SweepResult.load(path).table) == 1
    file = tmp_path / "one.parquet"
    result.save(file)
    with pytest.raises(SweepExistsError):
        other.save(file)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(SweepExistsError, match="notes.txt"):
        result.save(path, overwrite=True)


def _flip_bytes(path, count=200):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle - count // 2, middle + count // 2):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_part_is_named_then_repaired(tiny, problems, reference, tmp_path):
    out = tmp_path / "store"
    sweep(tiny, problems, HEADS, out=out, **SETTINGS)
    victim = SweepStore(out).parts()[1]
    victim_rows = len(pd.read_parquet(victim))
    _flip_bytes(victim)
    with pytest.raises(CorruptStoreError, match=rf"{victim.name}: checksum mismatch"):
        SweepResult.load(out)
    with pytest.raises(CorruptStoreError, match="sprint-lab repair"):
        sweep(tiny, problems, HEADS, out=out, **SETTINGS)
    report = SweepStore(out).repair()
    assert [p.name for p, _ in report.quarantined] == [victim.name]
    assert (out / "quarantine" / victim.name).is_file() and not victim.exists()
    assert len(report.recompute) == victim_rows and "recompute" in str(report)
    resumed = sweep(tiny, problems, HEADS, out=out, **SETTINGS)
    assert resumed.complete and resumed.equals(reference)


def test_a_broken_meta_is_named_and_quarantined(tiny, problems, reference, tmp_path):
    out = tmp_path / "store"
    sweep(tiny, problems, HEADS, out=out, **SETTINGS)
    (out / "meta.json").write_text('{"model": "x", "heads": [')
    with pytest.raises(CorruptStoreError, match=r"meta\.json: unreadable settings file"):
        SweepResult.load(out)
    report = SweepStore(out).repair()
    assert [p.name for p, _ in report.quarantined] == ["meta.json"]
    resumed = sweep(tiny, problems, HEADS, out=out, **SETTINGS)  # fingerprints keep the rows
    assert resumed.complete and resumed.equals(reference)
    assert len(pd.concat(map(pd.read_parquet, SweepStore(out).parts()))) == len(reference.table)


def test_a_full_disk_leaves_no_temp_file_and_keeps_earlier_parts(tmp_path, monkeypatch):
    store = SweepStore(tmp_path)
    store.append(pd.DataFrame({"question_id": ["a"], "config": ["none"]}))

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        store.append(pd.DataFrame({"question_id": ["b"], "config": ["none"]}))
    assert sorted(p.name[:5] for p in tmp_path.iterdir()) == ["part-"]
    assert SweepStore(tmp_path).read()["question_id"].tolist() == ["a"]


def test_leftover_temp_files_are_cleaned_on_next_open(tiny, problems, tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    (out / ".tmp-1234abcd-part-x.parquet").write_bytes(b"half a file")
    sweep(tiny, problems[:1], HEADS, out=out, **SETTINGS)
    assert not list(out.glob(".tmp-*"))


def test_named_errors_have_exit_codes():
    assert issubclass(StaleRowsError, InputError) and issubclass(CorruptStoreError, SetupError)
    assert issubclass(StoreLockedError, SetupError) and issubclass(
        SweepExistsError, FileExistsError
    )


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_table(tiny_models, tmp_path):
    import numpy as np

    command = [
        sys.executable, "-m", "sprint_lab.cli", "sweep", "--model", str(tiny_models["llama"]),
        "--dtype", "float32", "--dataset", "arith", "--limit", "8", "--max-new-tokens", "6",
        "--batch-size", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", str(reference)], check=True, env=env, capture_output=True)
    expected = SweepResult.load(reference)
    n_parts = len(SweepStore(reference).parts())
    assert expected.complete and n_parts >= 20
    for seed in range(3):
        out = tmp_path / f"killed-{seed}"
        stop_after = int(np.random.default_rng(seed).integers(1, n_parts - 1))
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process = subprocess.Popen([*command, "--out", str(out)], env=env, **quiet)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if len(list(out.glob("part-*.parquet"))) >= stop_after:
                break
            time.sleep(0.005)
        process.kill()  # SIGKILL: no handler, no cleanup
        process.wait()
        stored = len(list(out.glob("part-*.parquet")))
        assert 0 < stored < n_parts, f"seed {seed}: killed after {stored} of {n_parts} parts"
        subprocess.run([*command, "--out", str(out)], check=True, env=env, capture_output=True)
        resumed = SweepResult.load(out)
        assert resumed.complete and resumed.equals(expected), f"seed {seed}"
        raw = pd.concat(map(pd.read_parquet, SweepStore(out).parts()), ignore_index=True)
        assert not raw.duplicated(["question_id", "config"]).any(), f"seed {seed}: duplicates"
        assert not list(out.glob(".tmp-*")), f"seed {seed}: temporary files left"
