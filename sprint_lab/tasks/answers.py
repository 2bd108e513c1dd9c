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

from sprint_lab.tasks.prompts import PromptTemplate, get_template
from sprint_lab.tasks.records import Problem

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "GoldTarget",
    "get_answer_format",
    "gold_target",
    "register_answer_format",
]

_CALCULATOR = re.compile(r"<<[^<>]*>>")


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


@dataclass(frozen=True)
class AnswerFormat:
    """How a template's exemplars write a worked solution and its final answer.

    Attributes:
        lead: Text before the solution (``" "`` after ``"A:"``, nothing after a chat turn).
        sentence: The final-answer sentence, with ``{answer}`` where the answer goes (other
            braces doubled, as in :meth:`str.format`).
        joiner: What joins the solution's lines (and the last line to the sentence).

    Example:
        >>> fmt = AnswerFormat(" ", "The answer is {answer}.", " ")
        >>> fmt.target("", "7").text
        ' The answer is 7.'
    """

    lead: str
    sentence: str
    joiner: str

    def target(self, solution: str, answer: str) -> GoldTarget:
        """The worked ``solution`` (without calculator notes or ``####`` line) plus the sentence.

        Args:
            solution: The gold worked solution (may be empty).
            answer: The gold final answer, already stripped and non-empty.

        Returns:
            The :class:`GoldTarget`.

        Example:
            >>> get_answer_format("chat_gsm8k").target("3 + 4 = <<3+4=7>>7\\n#### 7", "7").text
            '3 + 4 = 7\\n#### 7'
        """
        body = _CALCULATOR.sub("", solution)
        if "####" in body:
            body = body.rsplit("####", 1)[0]
        lines = [line.strip() for line in body.splitlines()]
        body = self.joiner.join(line for line in lines if line)
        head = self.lead + body + (self.joiner if body else "")
        before, after = self.sentence.split("{answer}")
        before, after = before.replace("{{", "{"), after.replace("}}", "}")
        start = len(head) + len(before)
        return GoldTarget(head + before + answer + after, start, start + len(answer))


#: Template name -> its answer format; a template without one uses ``fewshot_cot``'s.
ANSWER_FORMATS: dict[str, AnswerFormat] = {}


def register_answer_format(template: str, answer_format: AnswerFormat) -> AnswerFormat:
    """Register (or replace) the answer format of the prompt template named ``template``.

    Example:
        >>> fmt = register_answer_format("my_template", AnswerFormat("", "Answer: {answer}", "\\n"))
        >>> get_answer_format("my_template").sentence
        'Answer: {answer}'
        >>> del ANSWER_FORMATS["my_template"]
    """
    ANSWER_FORMATS[template] = answer_format
    return answer_format


def get_answer_format(prompt: str | PromptTemplate = "fewshot_cot") -> AnswerFormat:
    """The answer format of a template (name or object); ``fewshot_cot``'s for unknown ones.

    Example:
        >>> get_answer_format("chat_boxed").sentence
        'The final answer is $\\\\boxed{{{answer}}}$.'
    """
    name = prompt.name if isinstance(prompt, PromptTemplate) else prompt
    return ANSWER_FORMATS.get(name, ANSWER_FORMATS["fewshot_cot"])


register_answer_format("fewshot_cot", AnswerFormat(" ", "The answer is {answer}.", " "))
register_answer_format("base_cot", AnswerFormat(" ", "The answer is {answer}.", " "))
register_answer_format(
    "chat_boxed", AnswerFormat("", "The final answer is $\\boxed{{{answer}}}$.", "\n")
)
register_answer_format("chat_gsm8k", AnswerFormat("", "#### {answer}", "\n"))


def gold_target(problem: Problem, prompt: str | PromptTemplate = "fewshot_cot") -> GoldTarget:
    """The gold worked solution written the way ``prompt``'s exemplars answer.

    Calculator annotations ``<<48/2=24>>`` are removed and a final ``#### N`` line is dropped in
    favour of the template's answer sentence: ``" ... The answer is N."`` (lines joined by
    spaces) for ``fewshot_cot``/``base_cot`` and custom templates, ``"...\\nThe final answer is
    $\\boxed{N}$."`` for ``chat_boxed`` and ``"...\\n#### N"`` for ``chat_gsm8k``. A problem
    without a solution gets the answer sentence alone. ``N`` is ``problem.answer``.

    Args:
        problem: the problem (its ``solution`` and ``answer`` are used).
        prompt: template name or object.

    Returns:
        The :class:`GoldTarget`.

    Example:
        >>> p = Problem("p", "Tom has 3 apples...", "7", "3 + 4 = <<3+4=7>>7 apples.\\n#### 7")
        >>> gold_target(p).text
        ' 3 + 4 = 7 apples. The answer is 7.'
    """
    answer_format = get_answer_format(get_template(prompt))
    answer = str(problem.answer).strip()
    if not answer:
        raise ValueError(f"problem {problem.id!r} has an empty gold answer")
    return answer_format.target(problem.solution or "", answer)
