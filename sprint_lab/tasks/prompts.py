"""Named prompt templates (few-shot, chat, base-model CoT), each with its stop strings.

A template turns a question into prompt text split in two: a question-independent ``prefix``
(few-shot exemplars, system turn) and a question-specific ``suffix``. Generation code tokenizes
the two separately and concatenates the ids, so the prefix's KV cache can be shared by every
question; the boundary is therefore placed where tokenizing the parts separately gives the same
ids as tokenizing the whole text (before a newline, or before a chat special token).

Example:
    >>> from sprint_lab.tasks.prompts import get_template
    >>> tpl = get_template("fewshot_cot")
    >>> prefix, suffix = tpl.parts("What is 2 + 3?", None)
    >>> suffix
    '\\n\\nQ: What is 2 + 3?\\nA:'
    >>> tpl.stop
    ('Q:', '</s>', '<|im_end|>')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GSM8K_COT_EXEMPLARS",
    "PromptTemplate",
    "TEMPLATES",
    "get_template",
]

#: The 8 chain-of-thought exemplars of Wei et al. (2022), verbatim as in lm-evaluation-harness
#: ``lm_eval/tasks/gsm8k/gsm8k-cot.yaml`` (task ``gsm8k_cot``, version 3.0), in order.
GSM8K_COT_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant "
        "today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the "
        "parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
        "have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = "
        "74. After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
        "many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave "
        "Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many "
        "toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 "
        "more toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each "
        "day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So "
        "5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
        "more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
        "has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)

# lm-eval gsm8k_cot: doc_to_text is the YAML scalar 'Q: {{question}}\n\n  A:', which YAML folds
# to "Q: {{question}}\nA:"; target_delimiter " ", fewshot_delimiter "\n\n" (lm-eval defaults).
_COT_TEXT = "Q: {question}\nA:"
_TARGET_DELIMITER = " "
_FEWSHOT_DELIMITER = "\n\n"

_SYSTEM_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
_SYSTEM_GSM8K = "Solve the following question."


def _tokenizer_label(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", None) or ""
    return f"{type(tokenizer).__name__}({name!r})" if name else type(tokenizer).__name__


@dataclass(frozen=True)
class PromptTemplate:
    """A named way of turning a question into prompt text.

    Attributes:
        name: Registry name.
        stop: Stop strings for generation (see also :meth:`stop_strings`).
        needs_chat_template: Whether rendering needs ``tokenizer.apply_chat_template``.
        builder: ``(question, tokenizer) -> (prefix, suffix)``; called by :meth:`parts` after
            the chat-template checks. Write your own to add a template.
        description: One line on where the format comes from.

    Example:
        >>> tpl = get_template("base_cot")
        >>> tpl.render("What is 2 + 3?", None)
        "Question: What is 2 + 3?. Let's think step by step."
    """

    name: str
    stop: tuple[str, ...]
    needs_chat_template: bool
    builder: Callable[[str, Any], tuple[str, str]] = field(repr=False, compare=False)
    description: str = ""

    def parts(self, question: str, tokenizer: Any = None) -> tuple[str, str]:
        """Return ``(prefix, suffix)`` with ``prefix + suffix`` the full prompt.

        Args:
            question: The question text.
            tokenizer: A Hugging Face tokenizer (required when ``needs_chat_template``).

        Returns:
            The question-independent prefix and the question-specific suffix.

        Raises:
            ValueError: The template needs a chat template and ``tokenizer`` is ``None`` or has
                none.

        Example:
            >>> prefix, suffix = get_template("fewshot_cot").parts("1 + 1?")
            >>> prefix.startswith("Q: There are 15 trees"), suffix
            (True, '\\n\\nQ: 1 + 1?\\nA:')
        """
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        if self.needs_chat_template:
            if tokenizer is None:
                raise ValueError(
                    f"Prompt template {self.name!r} needs a tokenizer with a chat template; got "
                    "tokenizer=None"
                )
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError(
                    f"Prompt template {self.name!r} needs a chat template, but tokenizer "
                    f"{_tokenizer_label(tokenizer)} has none (tokenizer.chat_template is None). "
                    "Use an instruct/chat model, or a plain-text template such as 'fewshot_cot' "
                    "or 'base_cot'."
                )
        return self.builder(question, tokenizer)

    def render(self, question: str, tokenizer: Any = None) -> str:
        """The full prompt text, ``prefix + suffix``.

        Example:
            >>> get_template("fewshot_cot").render("1 + 1?").endswith("\\n\\nQ: 1 + 1?\\nA:")
            True
        """
        prefix, suffix = self.parts(question, tokenizer)
        return prefix + suffix

    def stop_strings(self, tokenizer: Any = None) -> tuple[str, ...]:
        """:attr:`stop` plus the tokenizer's EOS text (if any and not already there).

        Example:
            >>> get_template("base_cot").stop_strings()
            ('Question:', '</s>', '<|im_end|>')
        """
        eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
        if isinstance(eos, str) and eos and eos not in self.stop:
            return (*self.stop, eos)
        return self.stop


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _fewshot_cot(question: str, tokenizer: Any) -> tuple[str, str]:
    shots = _FEWSHOT_DELIMITER.join(
        _COT_TEXT.format(question=q) + _TARGET_DELIMITER + a for q, a in GSM8K_COT_EXEMPLARS
    )
    # lm-eval builds "shot1\n\n...shot8\n\n" + "Q: {question}\nA:". The split is made before the
    # "\n\n": byte-level BPE (GPT-2 style regex) tokenizes "\n\nQ" as "\n", "\n", "Q" but a
    # trailing "\n\n" as one token, so cutting after it would change the ids.
    return shots, _FEWSHOT_DELIMITER + _COT_TEXT.format(question=question)


def _base_cot(question: str, tokenizer: Any) -> tuple[str, str]:
    return "", f"Question: {question}. Let's think step by step."


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _special_strings(tokenizer: Any) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    specials.update(str(tok) for tok in added.values() if getattr(tok, "special", False))
    return [s for s in specials if s]


def _chat_parts(system: str, user: str, tokenizer: Any) -> tuple[str, str]:
    """Render a system + user conversation with an open assistant turn, split after the system
    turn (at the start of the next chat special token)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(full, str):
        raise ValueError(
            f"apply_chat_template of {_tokenizer_label(tokenizer)} did not return text"
        )
    try:
        system_only = tokenizer.apply_chat_template(messages[:1], tokenize=False)
    except Exception:  # noqa: BLE001 - some templates reject a lone system turn
        system_only = ""
    specials = _special_strings(tokenizer)
    if (
        isinstance(system_only, str)
        and system_only
        and full.startswith(system_only)
        and any(full.startswith(s, len(system_only)) for s in specials)
    ):
        cut = len(system_only)
    else:
        # Fallback: the part shared with a different user message, cut back to the start of the
        # last special token inside it (e.g. templates that fold the system text into the user
        # turn); an empty prefix if there is none.
        other = [messages[0], {"role": "user", "content": user + "\x00"}]
        alt = tokenizer.apply_chat_template(other, tokenize=False, add_generation_prompt=True)
        shared = _common_prefix(full, alt)
        cut = max((shared.rfind(s) for s in specials), default=-1)
        cut = max(cut, 0)
    return full[:cut], full[cut:]


def _chat_boxed(question: str, tokenizer: Any) -> tuple[str, str]:
    return _chat_parts(_SYSTEM_BOXED, question, tokenizer)


def _chat_gsm8k(question: str, tokenizer: Any) -> tuple[str, str]:
    return _chat_parts(_SYSTEM_GSM8K, question + "\n", tokenizer)


_CHAT_STOP = ("<|im_end|>",)

#: Registry of the named templates.
TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate(
            name="fewshot_cot",
            stop=("Q:", "</s>", "<|im_end|>"),
            needs_chat_template=False,
            description="lm-eval gsm8k_cot: 8 fixed Wei et al. exemplars, 'Q: ...\\nA: ...'",
            builder=_fewshot_cot,
        ),
        PromptTemplate(
            name="chat_boxed",
            stop=_CHAT_STOP,
            needs_chat_template=True,
            description="Qwen2.5-Math / SPRINT MATH: system 'Please reason step by step, and "
            "put your final answer within \\boxed{}.', user = question",
            builder=_chat_boxed,
        ),
        PromptTemplate(
            name="chat_gsm8k",
            stop=_CHAT_STOP,
            needs_chat_template=True,
            description="SPRINT GSM8K: system 'Solve the following question.', user = question "
            "+ '\\n'",
            builder=_chat_gsm8k,
        ),
        PromptTemplate(
            name="base_cot",
            stop=("Question:", "</s>", "<|im_end|>"),
            needs_chat_template=False,
            description="SPRINT base models: \"Question: {question}. Let's think step by "
            'step." (no exemplars; the period follows the question verbatim)',
            builder=_base_cot,
        ),
    )
}


def get_template(name_or_template: str | PromptTemplate) -> PromptTemplate:
    """Look a template up by name (a :class:`PromptTemplate` is returned unchanged).

    Templates:

    - ``fewshot_cot``: lm-eval ``gsm8k_cot`` (v3.0): the 8 Wei et al. exemplars as
      ``"Q: {question}\\nA: {target}"`` joined by ``"\\n\\n"``, then ``"Q: {question}\\nA:"``;
      stops ``Q:``, ``</s>``, ``<|im_end|>``. (The YAML's ``'Q: {{question}}\\n\\n  A:'`` is a
      folded YAML scalar, so lm-eval's prompt has a single newline before ``A:``.)
    - ``chat_boxed``: chat template, system "Please reason step by step, and put your final
      answer within \\boxed{}.", user = question, generation prompt; stop ``<|im_end|>`` and the
      tokenizer's EOS (:meth:`PromptTemplate.stop_strings`).
    - ``chat_gsm8k``: chat template, system "Solve the following question.", user = question +
      ``"\\n"`` (SPRINT's GSM8K prompt for instruct models).
    - ``base_cot``: SPRINT's prompt for base models, ``"Question: {question}. Let's think step
      by step."``, no exemplars; stop ``Question:``.

    Args:
        name_or_template: A registry name or a template.

    Returns:
        The template.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).

    Example:
        >>> get_template("chat_boxed").needs_chat_template
        True
    """
    if isinstance(name_or_template, PromptTemplate):
        return name_or_template
    try:
        return TEMPLATES[name_or_template]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in TEMPLATES)
        raise ValueError(
            f"Unknown prompt template {name_or_template!r}: expected one of {valid}"
        ) from None
