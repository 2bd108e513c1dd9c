"""Tasks: where questions come from, how they are prompted, and how answers are graded.

Adding a dataset or a prompt template touches this folder only.
"""

from sprint_lab.tasks.arith import generate_arith
from sprint_lab.tasks.grading import Verdict, extract_answer, grade, is_correct
from sprint_lab.tasks.problems import (
    DatasetUnavailableError,
    Problem,
    ProblemFormatError,
    load_problems,
    problems_to_frame,
)
from sprint_lab.tasks.prompts import PromptTemplate, get_template

__all__ = [
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "PromptTemplate",
    "Verdict",
    "extract_answer",
    "generate_arith",
    "get_template",
    "grade",
    "is_correct",
    "load_problems",
    "problems_to_frame",
]
