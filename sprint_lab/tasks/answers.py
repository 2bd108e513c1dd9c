"""Answer formats: the gold solution written the way a prompt template's exemplars answer.

Teacher forcing (the log-prob importance proxy, screening by gold log-prob) scores the gold
worked solution as a continuation of the prompt. For the score to mean anything the continuation
must look like what the model was shown: ``fewshot_cot`` exemplars end with ``"The answer is
N."``, ``chat_boxed`` with ``$\\boxed{N}$``, ``chat_gsm8k`` with ``#### N``. Each template name
maps to one :class:`AnswerFormat`; a custom template gets the ``fewshot_cot`` format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sprint_lab.tasks.prompts import PromptTemplate, get_template

_CALCULATOR = re.compile(r"<<[^<>]*>>")
#: template name -> (text before the solution, final-answer sentence, line joiner)
_ANSWER_FORMATS: dict[str, tuple[str, str, str]] = {
    "fewshot_cot": (" ", "The answer is {answer}.", " "),
    "base_cot": (" ", "The answer is {answer}.", " "),
    "chat_boxed": ("", "The final answer is $\\boxed{{{answer}}}$.", "\n"),
    "chat_gsm8k": ("", "#### {answer}", "\n"),
}
_DEFAULT_FORMAT = _ANSWER_FORMATS["fewshot_cot"]


@dataclass(frozen=True)
class GoldTarget:
    """The teacher-forced continuation of a prompt and where its final answer sits.

    Attributes:
        text: the text appended after the prompt (the worked solution in the template's style).
        answer_start: character offset of the final answer in ``text``.
        answer_end: end offset (exclusive) of the final answer.

    Example:
        >>> t = GoldTarget(" 3 + 4 = 7. The answer is 7.", 26, 27)
        >>> t.answer
        '7'
    """

    text: str
    answer_start: int
    answer_end: int

    @property
    def answer(self) -> str:
        """The final-answer span of :attr:`text`."""
        return self.text[self.answer_start : self.answer_end]


def gold_target(problem: Any, prompt: str | PromptTemplate = "fewshot_cot") -> GoldTarget:
    """The gold worked solution written the way ``prompt``'s exemplars answer.

    Calculator annotations ``<<48/2=24>>`` are removed and a final ``#### N`` line is dropped in
    favour of the template's answer sentence: ``" ... The answer is N."`` (lines joined by
    spaces) for ``fewshot_cot``/``base_cot`` and custom templates, ``"...\\nThe final answer is
    $\\boxed{N}$."`` for ``chat_boxed`` and ``"...\\n#### N"`` for ``chat_gsm8k``. A problem
    without a solution gets the answer sentence alone. ``N`` is ``problem.answer``.

    Args:
        problem: a :class:`~sprint_lab.tasks.problems.Problem` (``solution`` and ``answer`` are used).
        prompt: template name or object.

    Returns:
        The :class:`GoldTarget`.

    Example:
        >>> from sprint_lab.tasks.problems import Problem
        >>> p = Problem("p", "Tom has 3 apples...", "7", "3 + 4 = <<3+4=7>>7 apples.\\n#### 7")
        >>> gold_target(p).text
        ' 3 + 4 = 7 apples. The answer is 7.'
    """
    name = get_template(prompt).name
    lead, sentence, joiner = _ANSWER_FORMATS.get(name, _DEFAULT_FORMAT)
    answer = str(problem.answer).strip()
    if not answer:
        raise ValueError(f"problem {problem.id!r} has an empty gold answer")
    body = _CALCULATOR.sub("", problem.solution or "")
    if "####" in body:
        body = body.rsplit("####", 1)[0]
    lines = [line.strip() for line in body.splitlines()]
    body = joiner.join(line for line in lines if line)
    head = lead + body + (joiner if body else "")
    before, after = sentence.split("{answer}")
    before, after = before.replace("{{", "{"), after.replace("}}", "}")
    start = len(head) + len(before)
    return GoldTarget(head + before + answer + after, start, start + len(answer))
