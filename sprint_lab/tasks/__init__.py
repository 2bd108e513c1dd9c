"""Tasks: where questions come from, how they are prompted, and how answers are graded.

A :class:`~sprint_lab.tasks.task.Task` bundles a data source, a default prompt template (and so
the answer format used for teacher forcing) and a grader; :func:`get_task` finds one by name or
builds one from a ``.jsonl`` path. Adding a dataset or a prompt template touches this folder
only: :func:`register_task`, :data:`~sprint_lab.tasks.prompts.TEMPLATES`,
:func:`~sprint_lab.tasks.answers.register_answer_format`,
:func:`~sprint_lab.tasks.graders.register_grader`.
"""

from sprint_lab.tasks.answers import AnswerFormat, GoldTarget, get_answer_format, gold_target
from sprint_lab.tasks.arith import generate_arith
from sprint_lab.tasks.graders import Grader, get_grader, register_grader
from sprint_lab.tasks.grading import Verdict, extract_answer, grade, is_correct
from sprint_lab.tasks.problems import (
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    load_problems,
    pick_problems,
    problems_to_frame,
)
from sprint_lab.tasks.prompts import PromptTemplate, get_template
from sprint_lab.tasks.task import (
    TASKS,
    Task,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)

__all__ = [
    "AnswerFormat",
    "DatasetUnavailableError",
    "GoldTarget",
    "Grader",
    "Problem",
    "ProblemFormatError",
    "PromptTemplate",
    "TASKS",
    "Task",
    "Verdict",
    "extract_answer",
    "generate_arith",
    "get_answer_format",
    "get_grader",
    "get_task",
    "get_template",
    "gold_target",
    "grade",
    "is_correct",
    "list_tasks",
    "load_problems",
    "pick_problems",
    "problems_to_frame",
    "register_grader",
    "register_task",
    "unregister_task",
]
