"""Tests for sprint_lab.tasks.task (the task registry), answer formats and pick_problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint_lab.tasks.answers import (
    ANSWER_FORMATS,
    AnswerFormat,
    get_answer_format,
    gold_target,
    register_answer_format,
)
from sprint_lab.tasks.arith import generate_arith
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.problems import ProblemFormatError, load_problems, pick_problems
from sprint_lab.tasks.records import SOURCE_GRADERS, Problem
from sprint_lab.tasks.task import (
    TASKS,
    Task,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)


def test_builtin_tasks() -> None:
    assert list(TASKS)[:4] == ["gsm8k", "math500", "math", "arith"]
    expected = {
        "gsm8k": (("train", "test"), "fewshot_cot", "gsm8k"),
        "math500": (("test",), "chat_boxed", "math"),
        "math": (("train", "test"), "chat_boxed", "math"),
        "arith": (("train", "test"), "fewshot_cot", "gsm8k"),
    }
    for name, (splits, prompt, grader) in expected.items():
        task = get_task(name)
        assert (task.name, task.splits, task.prompt, task.grader) == (name, splits, prompt, grader)
        assert task.grade_mode == "flexible"
        assert get_task(task) is task
    frame = list_tasks()
    columns = ["name", "splits", "prompt", "grader", "grade_mode", "description"]
    assert list(frame.columns) == columns
    assert frame.set_index("name").loc["math500", "splits"] == "test"


def test_task_answer_format_follows_its_prompt() -> None:
    assert get_task("math500").answer_format == get_answer_format("chat_boxed")
    assert get_task("gsm8k").answer_format == AnswerFormat(" ", "The answer is {answer}.", " ")


def test_register_task_loads_and_grades_by_name() -> None:
    pool = generate_arith(6, seed=11)
    words = [
        Problem(id=f"w{i}", question=p.question, answer=p.answer, source="words") for i, p in
        enumerate(pool)
    ]  # fmt: skip
    task = Task("words", lambda split, root: list(words), splits=("test",), grader="gsm8k")
    assert register_task(task) is task
    try:
        assert load_problems("words") == words
        assert load_problems("words", limit=2, seed=0) == load_problems("words", limit=2, seed=0)
        assert words[0].task == "gsm8k"
        assert grade(f"#### {words[0].answer}", words[0], task="words", mode="strict").correct
        with pytest.raises(ProblemFormatError, match="no split 'train'; valid splits: test"):
            load_problems("words", "train")
        with pytest.raises(ValueError, match="already registered"):
            register_task(task)
        register_task(task, replace=True)
    finally:
        unregister_task("words")
    assert "words" not in SOURCE_GRADERS
    with pytest.raises(ProblemFormatError, match="Unknown dataset name 'words'"):
        load_problems("words")


def test_register_task_validates() -> None:
    loader = lambda split, root: []  # noqa: E731
    with pytest.raises(ValueError, match="Unknown grader 'nope'"):
        register_task(Task("bad", loader, grader="nope"))
    with pytest.raises(ValueError, match="has no mode 'first'"):
        register_task(Task("bad", loader, grader="gsm8k", grade_mode="first"))
    with pytest.raises(ValueError, match="Unknown prompt template 'nope'"):
        register_task(Task("bad", loader, prompt="nope"))
    assert "bad" not in TASKS


def test_a_registered_source_picks_the_grader() -> None:
    task = Task("latexy", lambda split, root: [], grader="math", prompt="chat_boxed")
    register_task(task)
    try:
        problem = Problem(id="l", question="?", answer=r"\frac12", source="latexy")
        assert problem.task == "math"
        assert grade(r"\boxed{0.5}", problem).correct
    finally:
        unregister_task("latexy")
    assert Problem(id="l", question="?", answer="1", source="latexy").task == "gsm8k"


def test_jsonl_path_task(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n", encoding="utf-8")
    for name in (path, str(path)):
        task = get_task(name)
        assert task.name == str(path) and task.splits == ()
        assert task.load("anything") == [Problem(id="mine-00000", question="1 + 1?", answer="2")]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        get_task(tmp_path / "nope.jsonl")
    with pytest.raises(ProblemFormatError, match="Unknown dataset name 'mine'.*or a path"):
        get_task("mine")


def test_answer_formats() -> None:
    problem = Problem("p", "q", " 7 ", "3 + 4 = <<3+4=7>>7 apples.\nSo 7.\n#### 7")
    assert gold_target(problem, "fewshot_cot").text == " 3 + 4 = 7 apples. So 7. The answer is 7."
    assert gold_target(problem, "base_cot") == gold_target(problem)
    boxed = gold_target(problem, "chat_boxed")
    assert boxed.text == "3 + 4 = 7 apples.\nSo 7.\nThe final answer is $\\boxed{7}$."
    assert boxed.answer == "7"
    assert gold_target(problem, "chat_gsm8k").text == "3 + 4 = 7 apples.\nSo 7.\n#### 7"
    assert gold_target(Problem("p", "q", "7"), "chat_gsm8k").text == "#### 7"
    assert get_answer_format("my_own_template") == get_answer_format("fewshot_cot")
    fmt = register_answer_format("my_own_template", AnswerFormat("", "Answer: {answer}", "\n"))
    try:
        assert get_answer_format("my_own_template") is fmt
        target = fmt.target("a\nb", "7")
        assert (target.text, target.answer) == ("a\nb\nAnswer: 7", "7")
    finally:
        del ANSWER_FORMATS["my_own_template"]
    with pytest.raises(ValueError, match="empty gold answer"):
        gold_target(Problem("p", "q", "  "))
    with pytest.raises(ValueError, match="Unknown prompt template"):
        gold_target(problem, "my_own_template")


def test_pick_problems() -> None:
    easy = pick_problems("arith", "train", 10, max_level=2, seed=3)
    assert len(easy) == 10 and {p.level for p in easy} == {1, 2}
    assert easy == pick_problems("arith", "train", 10, max_level=2, seed=3)
    full = load_problems("arith", "test")
    assert pick_problems("arith", "test") == full
    assert pick_problems("arith", "test", max_level=1) == [p for p in full if p.level == 1]
    with pytest.raises(ValueError, match="no arith test problem has level <= 0"):
        pick_problems("arith", "test", 3, max_level=0)
