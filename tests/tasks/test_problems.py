"""Tests for sprint_lab.tasks.problems (loaders, subsets, errors) and sprint_lab.tasks.arith."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from sprint_lab.tasks.arith import ARITH_SPLITS, arith_split, generate_arith
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import (
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    load_problems,
    problems_to_frame,
    stratified_subset,
)


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ GSM8K


def test_gsm8k_test_split(shared_data_dir: Path) -> None:
    problems = load_problems("gsm8k", "test", data_dir=shared_data_dir)
    assert len(problems) == 1319
    first = problems[0]
    assert first.id == "gsm8k-test-00000"
    assert first.answer == "18"
    assert first.question.startswith("Janet")
    assert first.solution is not None and first.solution.endswith("#### 18")
    assert (first.source, first.task, first.level) == ("gsm8k", "gsm8k", None)
    assert len({p.id for p in problems}) == 1319
    # thousands separators are removed from the gold answer
    assert all("," not in p.answer for p in problems)
    assert any("," in p.solution.split("####")[-1] for p in problems)


def test_gsm8k_train_and_env_var(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPRINT_LAB_DATA", str(shared_data_dir))
    train = load_problems("gsm8k", "train")
    assert len(train) == 7473
    assert train[-1].id == "gsm8k-train-07472"


def test_gsm8k_limit_keeps_ids_and_order(shared_data_dir: Path) -> None:
    full = load_problems("gsm8k", data_dir=shared_data_dir)
    sub = load_problems("gsm8k", limit=25, seed=3, data_dir=shared_data_dir)
    assert len(sub) == 25
    index = {p.id: i for i, p in enumerate(full)}
    positions = [index[p.id] for p in sub]
    assert positions == sorted(positions)
    assert all(full[index[p.id]] == p for p in sub)
    assert sub == load_problems("gsm8k", limit=25, seed=3, data_dir=shared_data_dir)
    assert sub != load_problems("gsm8k", limit=25, seed=4, data_dir=shared_data_dir)


# ---------------------------------------------------------------------------------- MATH500


def test_math500(shared_data_dir: Path) -> None:
    problems = load_problems("math500", data_dir=shared_data_dir)
    assert len(problems) == 500
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert (first.level, first.subject, first.source, first.task) == (
        2,
        "Precalculus",
        "math500",
        "math",
    )
    levels = collections.Counter(p.level for p in problems)
    assert [levels[lv] for lv in range(1, 6)] == [43, 90, 105, 128, 134]


def test_math500_has_only_a_test_split(shared_data_dir: Path) -> None:
    with pytest.raises(ProblemFormatError, match="no split 'train'.*valid splits: test"):
        load_problems("math500", "train", data_dir=shared_data_dir)


def test_math500_limit_is_stratified_and_deterministic(shared_data_dir: Path) -> None:
    sub = load_problems("math500", limit=50, seed=0, data_dir=shared_data_dir)
    levels = collections.Counter(p.level for p in sub)
    # 50 * (43, 90, 105, 128, 134) / 500 = 4.3, 9, 10.5, 12.8, 13.4 -> largest remainders
    assert [levels[lv] for lv in range(1, 6)] == [4, 9, 11, 13, 13]
    again = load_problems("math500", limit=50, seed=0, data_dir=shared_data_dir)
    other = load_problems("math500", limit=50, seed=1, data_dir=shared_data_dir)
    assert [p.id for p in sub] == [p.id for p in again]
    assert [p.id for p in sub] != [p.id for p in other]
    full_ids = [p.id for p in load_problems("math500", data_dir=shared_data_dir)]
    positions = [full_ids.index(p.id) for p in sub]
    assert positions == sorted(positions)


def test_math_train_without_local_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match=r"math.*train\.jsonl.*does not exist"):
        load_problems("math", "train", data_dir=tmp_path)


# ------------------------------------------------------------------------- hub fallback


def test_hub_failure_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.delenv("SPRINT_LAB_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DatasetUnavailableError) as info:
        load_problems("gsm8k")
    message = str(info.value)
    assert "openai/gsm8k" in message
    assert "HF_HUB_OFFLINE" in message
    assert "SPRINT_LAB_DATA" in message and "data_dir=" in message
    with pytest.raises(DatasetUnavailableError, match="EleutherAI/hendrycks_math"):
        load_problems("math", "train")


# ------------------------------------------------------------------------------ JSONL files


def test_generic_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"question": "1 + 1?", "answer": 2}),
            "",
            json.dumps({"problem": "Half of 1?", "answer": r"\frac12", "level": "Level 3",
                        "subject": "Algebra", "id": "half", "source": "math",
                        "solution": r"\boxed{\frac12}"}),
        ],
    )  # fmt: skip
    problems = load_problems(path)
    assert problems[0] == Problem(id="mine-00000", question="1 + 1?", answer="2")
    assert problems[1] == Problem(
        id="half",
        question="Half of 1?",
        answer=r"\frac12",
        solution=r"\boxed{\frac12}",
        level=3,
        subject="Algebra",
        source="math",
    )
    assert problems[1].task == "math"
    assert load_problems(str(path), limit=1, seed=0)[0].id in {"mine-00000", "half"}


def test_malformed_json_line(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "bad.jsonl", [json.dumps({"question": "q", "answer": "1"}), "{not json"]
    )
    with pytest.raises(ProblemFormatError, match=r"bad\.jsonl: line 2: malformed JSON"):
        load_problems(path)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"question": "q", "answer": "1"}).encode()
    bad = json.dumps({"question": "Caf\u00e9?", "answer": "1"}, ensure_ascii=False)
    path.write_bytes(good + b"\n" + good + b"\n" + bad.encode("latin-1") + b"\n")
    with pytest.raises(ProblemFormatError, match=r"latin1\.jsonl: line 3: not valid UTF-8"):
        load_problems(path)
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", ["{}"])
    (tmp_path / "gsm8k" / "test.jsonl").write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(ProblemFormatError, match=r"test\.jsonl: line 1: not valid UTF-8"):
        load_problems("gsm8k", data_dir=tmp_path)


def test_missing_field(tmp_path: Path) -> None:
    rows = [json.dumps({"question": "q", "answer": "1"})] * 2 + [json.dumps({"question": "q"})]
    path = _write_jsonl(tmp_path / "missing.jsonl", rows)
    with pytest.raises(ProblemFormatError, match=r"missing\.jsonl: line 3: missing field 'answer'"):
        load_problems(path)
    path = _write_jsonl(tmp_path / "noq.jsonl", [json.dumps({"answer": "1"})])
    with pytest.raises(ProblemFormatError, match=r"line 1: missing field 'question' or 'problem'"):
        load_problems(path)


def test_bad_field_types(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [json.dumps({"question": ["q"], "answer": "1"})])
    with pytest.raises(ProblemFormatError, match=r"line 1: field 'question' must be a string"):
        load_problems(path)
    path = _write_jsonl(tmp_path / "l.jsonl", [json.dumps({"question": "q", "answer": "1",
                                                           "level": "hard"})])  # fmt: skip
    with pytest.raises(ProblemFormatError, match=r"line 1: field 'level'"):
        load_problems(path)


def test_gsm8k_file_errors(tmp_path: Path) -> None:
    good = json.dumps({"question": "q", "answer": "1 + 1 = 2\n#### 2"})
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [good, json.dumps({"question": "q"})])
    with pytest.raises(ProblemFormatError, match=r"test\.jsonl: line 2: missing field 'answer'"):
        load_problems("gsm8k", data_dir=tmp_path)
    no_hashes = json.dumps({"question": "q", "answer": "2"})
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [good, good, no_hashes])
    with pytest.raises(ProblemFormatError, match=r"line 3: field 'answer' has no '####'"):
        load_problems("gsm8k", data_dir=tmp_path)
    _write_jsonl(tmp_path / "math500" / "test.jsonl", [json.dumps({"problem": "p", "answer": "1"})])
    with pytest.raises(ProblemFormatError, match=r"line 1: missing field 'unique_id'"):
        load_problems("math500", data_dir=tmp_path)


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProblemFormatError, match=r"Unknown dataset name 'gsm9k'.*'gsm8k', "
                                                 r"'math500', 'math', 'arith'"):  # fmt: skip
        load_problems("gsm9k")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_problems(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_problems("arith", limit=-1)


def test_stratified_subset_without_levels() -> None:
    problems = [Problem(id=f"p{i}", question="q", answer="1") for i in range(30)]
    sub = stratified_subset(problems, 7, seed=5)
    assert len(sub) == 7
    assert [p.id for p in sub] == [p.id for p in problems if p in sub]
    assert sub == stratified_subset(problems, 7, seed=5)
    assert stratified_subset(problems, 100) == problems
    assert stratified_subset(problems, 0) == []


def test_problems_to_frame() -> None:
    frame = problems_to_frame(generate_arith(5, seed=2))
    assert list(frame.columns) == [
        "id", "question", "answer", "solution", "level", "subject", "source", "task"
    ]  # fmt: skip
    assert frame.shape == (5, 8)
    assert frame["level"].tolist() == [1, 2, 3, 4, 5]
    assert set(frame["task"]) == {"gsm8k"}


# ------------------------------------------------------------------------------------ arith


def test_arith_is_deterministic() -> None:
    a = generate_arith(60, seed=7)
    assert a == generate_arith(60, seed=7)
    assert generate_arith(20, seed=7) == a[:20]
    assert [p.question for p in a] != [p.question for p in generate_arith(60, seed=8)]
    assert a[0].id == "arith-7-00000" and a[59].id == "arith-7-00059"
    assert len({p.question for p in a}) == 60


def test_arith_levels_and_fields() -> None:
    problems = generate_arith(100, seed=0)
    assert collections.Counter(p.level for p in problems) == {lv: 20 for lv in range(1, 6)}
    assert {p.subject for p in problems} >= {"shopping", "rates", "sharing", "ages", "savings"}
    for p in problems:
        assert p.source == "arith" and p.task == "gsm8k"
        assert int(p.answer) >= 2
        assert p.solution is not None and p.solution.endswith(f"\n#### {p.answer}")
        steps = p.solution.count("<<")
        assert steps >= 4 if p.level == 5 else steps == {1: 1, 2: 1, 3: 2, 4: 3}[p.level]
        if p.level == 1:  # one addition or subtraction of two numbers under 10
            expr = p.solution.split("<<")[1].split("=")[0]
            assert re.fullmatch(r"[2-9][+-][2-9]", expr), p.solution
    assert generate_arith(6, seed=1, levels=(2,))[5].level == 2
    with pytest.raises(ValueError, match="levels"):
        generate_arith(3, levels=(0, 6))


def test_arith_split_loading_and_disjointness() -> None:
    test = load_problems("arith", "test")
    train = load_problems("arith", "train")
    assert len(test) == ARITH_SPLITS["test"][1]
    assert len(train) > 0.95 * ARITH_SPLITS["train"][1]
    assert not {p.question for p in test} & {p.question for p in train}
    assert not {p.id for p in test} & {p.id for p in train}
    sub = load_problems("arith", "test", limit=50, seed=4)
    assert sub == load_problems("arith", "test", limit=50, seed=4)
    assert collections.Counter(p.level for p in sub) == {lv: 10 for lv in range(1, 6)}
    assert arith_split("test") == test


def test_every_arith_solution_grades_correct() -> None:
    problems = arith_split("test") + arith_split("train")
    for mode in ("flexible", "strict"):
        wrong = [p.id for p in problems if not grade(p.solution, p, mode=mode).correct]
        assert wrong == [], mode
