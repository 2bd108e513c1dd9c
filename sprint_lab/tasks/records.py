"""The :class:`Problem` record every benchmark is turned into, and the loaders' error types.

Every benchmark becomes a list of :class:`Problem` records with a stable ``id`` and the gold
final answer as a string, so that prompting, generation and grading code never needs to know
where a question came from. A problem's grading kind (:attr:`Problem.task`) follows from its
``source`` through :data:`SOURCE_GRADERS`, which :func:`~sprint_lab.tasks.task.register_task`
fills; a source that no task registered is graded numerically, like GSM8K.

Example:
    >>> Problem(id="p1", question="What is 2+3?", answer="5").task
    'gsm8k'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from sprint_lab.core.errors import InputError, SetupError

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_GRADER",
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "SOURCE_GRADERS",
    "problems_to_frame",
]

#: Environment variable naming the folder of local JSON Lines benchmark files.
DATA_ENV_VAR = "SPRINT_LAB_DATA"

#: Grader of a problem whose ``source`` no registered task claims (numeric comparison).
DEFAULT_GRADER = "gsm8k"

#: Problem ``source`` -> grader name (``"gsm8k"`` numeric, ``"math"`` LaTeX); filled by
#: :func:`~sprint_lab.tasks.task.register_task` for every registered task.
SOURCE_GRADERS: dict[str, str] = {}


class ProblemFormatError(InputError):
    """A problem file or dataset name cannot be turned into :class:`Problem` records.

    The message names the file, the 1-based line number and the offending field when they apply.
    An :class:`~sprint_lab.core.errors.InputError` (a ``ValueError``; ``sprint-lab`` exit code 2).
    """


class DatasetUnavailableError(SetupError):
    """The requested data is neither in the local data directory nor reachable on the hub.

    A :class:`~sprint_lab.core.errors.SetupError` (a ``RuntimeError``; ``sprint-lab`` exit code
    3): the data must be downloaded or pointed at, the arguments themselves are fine.

    Example:
        >>> error = DatasetUnavailableError("math500/test.jsonl is missing")
        >>> isinstance(error, RuntimeError), error.exit_code
        (True, 3)
    """


@dataclass(frozen=True)
class Problem:
    """One math question with its gold final answer.

    Attributes:
        id: Stable identifier, unique within its dataset (e.g. ``"gsm8k-test-00007"``).
        question: The question text shown to the model.
        answer: Gold final answer as a string (a number for GSM8K, bare LaTeX for MATH).
        solution: Worked reference solution, if the dataset has one.
        level: Difficulty level (MATH: 1-5, arith: 1-5), if known.
        subject: Subject or template name, if known.
        source: Where the problem came from: ``"gsm8k"``, ``"math500"``, ``"math"``, ``"arith"``
            (any registered task name) or ``"custom"``.

    Example:
        >>> Problem(id="p1", question="What is 2+3?", answer="5").task
        'gsm8k'
        >>> Problem(id="p2", question="Simplify $\\\\frac{2}{4}$.", answer="\\\\frac12",
        ...         source="math500").task
        'math'
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    level: int | None = None
    subject: str | None = None
    source: str = "custom"

    @property
    def task(self) -> str:
        """Grader name: ``"math"`` (LaTeX, math-verify) or ``"gsm8k"`` (numeric comparison)."""
        return SOURCE_GRADERS.get(self.source, DEFAULT_GRADER)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields plus ``task`` as a plain dict.

        Example:
            >>> Problem(id="p1", question="1+1?", answer="2").to_dict()["task"]
            'gsm8k'
        """
        return {**asdict(self), "task": self.task}


def problems_to_frame(problems: Sequence[Problem]) -> pd.DataFrame:
    """One row per problem with columns ``id, question, answer, solution, level, subject,
    source, task``.

    Example:
        >>> problems_to_frame([Problem(id="a", question="1+1?", answer="2")]).loc[0, "answer"]
        '2'
    """
    columns = ["id", "question", "answer", "solution", "level", "subject", "source", "task"]
    frame = pd.DataFrame([p.to_dict() for p in problems], columns=columns)
    frame["level"] = frame["level"].astype("Int64")
    return frame
