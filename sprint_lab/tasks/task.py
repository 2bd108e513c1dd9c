"""The task registry: a :class:`Task` is a data source, a prompt template and a grader in one.

A task knows where its problems come from (a loader and its splits), which prompt template
suits it (and so, through :mod:`sprint_lab.tasks.answers`, how its gold solutions are written
for teacher forcing) and how its completions are graded (a grader of
:mod:`sprint_lab.tasks.graders` and the default extraction mode). Built in:

- ``gsm8k`` (train, test; ``fewshot_cot``; grader ``gsm8k``): ``gsm8k/{split}.jsonl`` locally,
  else ``openai/gsm8k``.
- ``math500`` (test; ``chat_boxed``; ``math``): ``math500/test.jsonl``, else
  ``HuggingFaceH4/MATH-500``.
- ``math`` (train, test; ``chat_boxed``; ``math``): ``math/{split}.jsonl`` (PRM800K
  ``math_splits``), else ``EleutherAI/hendrycks_math``.
- ``arith`` (train, test; ``fewshot_cot``; ``gsm8k``): generated offline
  (:mod:`sprint_lab.tasks.arith`).

A path to a ``.jsonl`` file is a task too (:func:`get_task` builds it). Adding a dataset is
one :func:`register_task` call; :func:`~sprint_lab.tasks.problems.load_problems` and
:func:`~sprint_lab.tasks.grading.grade` find it by name.

Example:
    >>> task = get_task("math500")
    >>> task.splits, task.prompt, task.grader, task.answer_format.sentence
    (('test',), 'chat_boxed', 'math', 'The final answer is $\\\\boxed{{{answer}}}$.')
    >>> len(get_task("arith").load("test", None))
    1000
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sprint_lab.tasks.answers import AnswerFormat, get_answer_format
from sprint_lab.tasks.arith import ARITH_SPLITS, arith_split
from sprint_lab.tasks.graders import get_grader
from sprint_lab.tasks.hub import load_hub_gsm8k, load_hub_math, load_hub_math500
from sprint_lab.tasks.jsonl import load_jsonl_file
from sprint_lab.tasks.local import (
    data_root,
    load_local_gsm8k,
    load_local_math,
    load_local_math500,
    local_or_hub,
)
from sprint_lab.tasks.prompts import get_template
from sprint_lab.tasks.records import SOURCE_GRADERS, Problem, ProblemFormatError

__all__ = ["TASKS", "Task", "get_task", "list_tasks", "register_task", "unregister_task"]

#: ``loader(split, data folder or None) -> problems``.
Loader = Callable[[str, Path | None], list[Problem]]


@dataclass(frozen=True)
class Task:
    """A benchmark: where its problems come from, how to prompt them and how to grade them.

    Attributes:
        name: Registry name; also the ``source`` of its problems (which picks their grader).
        loader: ``(split, data folder or None) -> list[Problem]``; the folder is ``data_dir``,
            else ``$SPRINT_LAB_DATA``, else ``None`` (e.g. load from the hub).
        splits: Valid splits; empty when the split is ignored (a single file).
        prompt: Name of the prompt template that suits the task.
        grader: Name of its grader (``"gsm8k"`` numeric, ``"math"`` LaTeX).
        grade_mode: Default extraction mode of the grader.
        description: One line on the data.

    Example:
        >>> task = Task("tiny", lambda split, root: problems[:2], splits=("test",))
        >>> [p.id for p in task.load()] == [p.id for p in problems[:2]]
        True
    """

    name: str
    loader: Loader = field(repr=False, compare=False)
    splits: tuple[str, ...] = ("test",)
    prompt: str = "fewshot_cot"
    grader: str = "gsm8k"
    grade_mode: str = "flexible"
    description: str = ""

    @property
    def answer_format(self) -> AnswerFormat:
        """How gold solutions are written under :attr:`prompt` (for teacher forcing)."""
        return get_answer_format(self.prompt)

    def load(
        self, split: str = "test", data_dir: str | os.PathLike[str] | None = None
    ) -> list[Problem]:
        """All problems of ``split``, in file order.

        Args:
            split: One of :attr:`splits` (ignored when that is empty).
            data_dir: Local data folder; overrides ``$SPRINT_LAB_DATA``.

        Returns:
            The problems.

        Raises:
            ProblemFormatError: Unknown split or malformed data.
            DatasetUnavailableError: Neither local files nor the hub can provide the data.
        """
        if self.splits and split not in self.splits:
            raise ProblemFormatError(
                f"Dataset {self.name!r} has no split {split!r}; valid splits:"
                f" {', '.join(self.splits)}"
            )
        return self.loader(split, data_root(data_dir))


#: Registry of tasks by name, in registration order.
TASKS: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to :data:`TASKS`; problems with ``source == task.name`` use its grader.

    Args:
        task: The task.
        replace: Allow replacing a task of the same name.

    Returns:
        The task.

    Raises:
        ValueError: The name is taken, or the grader, grade mode or prompt is unknown.

    Example:
        >>> tiny = Task("tiny", lambda split, root: problems[:2], prompt="base_cot")
        >>> register_task(tiny).name, len(sl.load_problems("tiny"))
        ('tiny', 2)
        >>> unregister_task("tiny")
    """
    if task.name in TASKS and not replace:
        raise ValueError(f"a task named {task.name!r} is already registered")
    grader = get_grader(task.grader)
    if task.grade_mode not in grader.modes:
        raise ValueError(
            f"task {task.name!r}: grader {grader.name!r} has no mode {task.grade_mode!r}"
            f" (modes: {', '.join(grader.modes)})"
        )
    get_template(task.prompt)
    TASKS[task.name] = task
    SOURCE_GRADERS[task.name] = task.grader
    return task


def unregister_task(name: str) -> None:
    """Remove a task (and its problems' grader entry) from the registry.

    Raises:
        KeyError: No task has that name.

    Example:
        >>> _ = register_task(Task("scratch", lambda split, root: []))
        >>> unregister_task("scratch"); "scratch" in TASKS
        False
    """
    del TASKS[name]
    SOURCE_GRADERS.pop(name, None)


def _looks_like_path(name: str) -> bool:
    return name.endswith((".jsonl", ".json")) or "/" in name or os.sep in name


def _file_task(path: Path) -> Task:
    if not path.is_file():
        raise FileNotFoundError(f"Problem file {str(path)!r} does not exist")
    return Task(
        name=str(path),
        loader=lambda split, root: load_jsonl_file(path),
        splits=(),
        description=f"problems of {path.name} (each row's source picks its grader)",
    )


def get_task(name_or_path: str | os.PathLike[str] | Task) -> Task:
    """Look a task up by name, or build one from a ``.jsonl`` file (a :class:`Task` is returned
    unchanged).

    Args:
        name_or_path: A registered name, a path to a ``.jsonl`` file (see
            :func:`~sprint_lab.tasks.jsonl.load_jsonl_file`), or a task.

    Returns:
        The task.

    Raises:
        ProblemFormatError: Unknown name (the message lists the registered ones).
        FileNotFoundError: ``name_or_path`` looks like a path that does not exist.

    Example:
        >>> get_task("gsm8k").splits
        ('train', 'test')
    """
    if isinstance(name_or_path, Task):
        return name_or_path
    if isinstance(name_or_path, os.PathLike) or (
        isinstance(name_or_path, str) and _looks_like_path(name_or_path)
    ):
        return _file_task(Path(name_or_path))
    if isinstance(name_or_path, str) and name_or_path in TASKS:
        return TASKS[name_or_path]
    valid = ", ".join(repr(n) for n in TASKS)
    raise ProblemFormatError(
        f"Unknown dataset name {name_or_path!r}: expected one of {valid}, or a path to a .jsonl"
        " file"
    )


def list_tasks() -> pd.DataFrame:
    """One row per registered task: ``name, splits, prompt, grader, grade_mode, description``.

    Example:
        >>> list_tasks().set_index("name")["grader"].to_dict()
        {'gsm8k': 'gsm8k', 'math500': 'math', 'math': 'math', 'arith': 'gsm8k'}
    """
    columns = ["name", "splits", "prompt", "grader", "grade_mode", "description"]
    rows = [
        (t.name, ", ".join(t.splits), t.prompt, t.grader, t.grade_mode, t.description)
        for t in TASKS.values()
    ]
    return pd.DataFrame(rows, columns=columns)


def _load_arith(split: str, root: Path | None) -> list[Problem]:
    return arith_split(split)


register_task(
    Task(
        name="gsm8k",
        loader=local_or_hub(load_local_gsm8k, load_hub_gsm8k),
        splits=("train", "test"),
        description="GSM8K grade-school word problems; gold = the number after '####'",
    )
)
register_task(
    Task(
        name="math500",
        loader=local_or_hub(load_local_math500, load_hub_math500),
        splits=("test",),
        prompt="chat_boxed",
        grader="math",
        description="the 500 PRM800K MATH test problems (HuggingFaceH4/MATH-500)",
    )
)
register_task(
    Task(
        name="math",
        loader=local_or_hub(load_local_math, load_hub_math),
        splits=("train", "test"),
        prompt="chat_boxed",
        grader="math",
        description="full MATH (PRM800K math_splits locally, EleutherAI/hendrycks_math on the hub)",
    )
)
register_task(
    Task(
        name="arith",
        loader=_load_arith,
        splits=tuple(sorted(ARITH_SPLITS, reverse=True)),
        description="offline generated word problems, levels 1-5 (sprint_lab.tasks.arith)",
    )
)
