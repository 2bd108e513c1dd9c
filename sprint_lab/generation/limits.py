"""Prompt length against the model's context window, checked before any forward pass.

A causal LM can attend over at most its context length of positions (Hugging Face
``config.max_position_embeddings``; TransformerLens ``cfg.n_ctx``). Answering a prompt of ``n``
tokens with up to ``max_new_tokens`` new ones needs ``n + max_new_tokens`` positions, so a prompt
over that budget would fail deep inside a forward pass (or silently degrade with positions past
what the model was trained on). These checks refuse it up front with a
:class:`PromptTooLongError` naming the prompts (question ids when known), their token counts and
the context, and saying what to change.

Counting tokens means tokenizing, and tokenizing a 10 MB question takes seconds. A cheaper bound
comes first: no token of the vocabulary stands for more characters than its longest entry
(``L`` characters; byte-level BPE writes one byte as one character, SentencePiece writes a space
as ``▁``), so a text of ``c`` characters has at least ``ceil(c / L)`` tokens. A prompt whose lower
bound already exceeds the budget is refused without being tokenized. (The bound assumes the
tokenizer's normaliser does not delete characters, which holds for byte-level BPE and
SentencePiece models.)

Example:
    >>> context_length(model)
    4096
    >>> check_prompt_lengths(model, ["Q: 2+2?\\nA:"], max_new_tokens=8)
    [10]
    >>> check_prompt_lengths(model, ["Q: 2+2?\\nA:"], max_new_tokens=4090)
    Traceback (most recent call last):
    ...
    sprint_lab.generation.limits.PromptTooLongError: prompt 0 (10 tokens) is too long ...
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError
from sprint_lab.tasks.prompts import PromptTemplate, get_template

__all__ = [
    "PromptLength",
    "PromptTooLongError",
    "check_problem_lengths",
    "check_prompt_chars",
    "check_prompt_lengths",
    "check_token_counts",
    "context_length",
    "max_chars_per_token",
]

MAX_LISTED = 10
"""How many offending prompts an error message lists by name (the rest are counted)."""

_TOKENIZE_CHUNK = 256
_CHARS_PER_TOKEN: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PromptLength:
    """How long one over-long prompt is.

    Attributes:
        label: how the prompt is named in messages: ``"question gsm8k-test-00007"`` or
            ``"prompt 3"``.
        n_chars: its length in characters.
        n_tokens: its exact token count, or ``None`` when it was refused by the character bound
            without being tokenized.
        min_tokens: a lower bound on its token count (``n_tokens`` when that is known).
    """

    label: str
    n_chars: int
    n_tokens: int | None
    min_tokens: int

    def describe(self) -> str:
        """``"question q7 (5,000 tokens)"``, or ``"prompt 0 (>= 123 tokens, 9,999 characters)"``."""
        if self.n_tokens is not None:
            return f"{self.label} ({_tokens(self.n_tokens)})"
        return f"{self.label} (>= {_tokens(self.min_tokens)}, {self.n_chars:,} characters)"


class PromptTooLongError(InputError):
    """A prompt's tokens plus ``max_new_tokens`` exceed the model's context length.

    An :class:`~sprint_lab.core.errors.InputError` (a ``ValueError``; ``sprint-lab`` exit code 2).

    Attributes:
        context: the model's context length in tokens.
        max_new_tokens: the generation limit the check used.
        prompts: one :class:`PromptLength` per offending prompt, in input order (empty when
            ``max_new_tokens`` alone leaves no room for any prompt).
    """

    def __init__(
        self,
        message: str,
        *,
        context: int = 0,
        max_new_tokens: int = 0,
        prompts: Sequence[PromptLength] = (),
    ) -> None:
        super().__init__(message)
        self.context = context
        self.max_new_tokens = max_new_tokens
        self.prompts = list(prompts)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the attributes (the error may cross to another process, e.g. Ray)."""
        return (type(self), (str(self),), self.__dict__)


def _tokens(n: int) -> str:
    return f"{n:,} token{'' if n == 1 else 's'}"


def _too_long(
    context: int, max_new_tokens: int, prompts: Sequence[PromptLength], what: str
) -> PromptTooLongError:
    """The error naming ``prompts`` (the first :data:`MAX_LISTED`, then a count)."""
    rule = (
        f"for the model's context of {_tokens(context)} with max_new_tokens={max_new_tokens} "
        f"(prompt tokens + max_new_tokens must be <= {context:,})"
    )
    if len(prompts) == 1:
        head = f"{prompts[0].describe()} is too long {rule}"
    else:
        listed = ", ".join(p.describe() for p in prompts[:MAX_LISTED])
        more = len(prompts) - MAX_LISTED
        listed += f" and {more} more" if more > 0 else ""
        head = f"{len(prompts)} {what}s are too long {rule}: {listed}"
    room = context - max(p.min_tokens for p in prompts)
    exact = all(p.n_tokens is not None for p in prompts)
    fixes = "shorten the prompt (a shorter question, fewer few-shot exemplars or a zero-shot "
    fixes += "template)"
    fixes += f" or lower max_new_tokens to at most {room}" if exact and room >= 1 else ""
    message = f"{head}. Fix: {fixes}."
    return PromptTooLongError(
        message, context=context, max_new_tokens=max_new_tokens, prompts=prompts
    )


def _check_room(context: int, max_new_tokens: int) -> None:
    """Refuse a ``max_new_tokens`` that leaves no position for even a one-token prompt."""
    if max_new_tokens >= context:
        raise PromptTooLongError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context "
            f"of {_tokens(context)} (prompt tokens + max_new_tokens must be <= {context:,}). "
            f"Fix: lower max_new_tokens to below {context:,} minus the longest prompt's tokens.",
            context=context,
            max_new_tokens=max_new_tokens,
        )


@no_type_check  # reads any model-like object; an unusable config value means "unknown"
def context_length(model: Any) -> int | None:
    """The model's context length in tokens, or ``None`` when it does not say (no check then).

    Read from the Hugging Face ``config.max_position_embeddings``, else the TransformerLens
    bridge's ``cfg.n_ctx``.

    Example:
        >>> context_length(model)
        4096
    """
    config = getattr(getattr(model, "hf_model", None), "config", None)
    cfg = getattr(getattr(model, "bridge", None), "cfg", None)
    for value in (getattr(config, "max_position_embeddings", None), getattr(cfg, "n_ctx", None)):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_chars_per_token(tokenizer: Any) -> int | None:
    """The most characters one token of ``tokenizer`` can stand for (its longest vocabulary entry).

    ``None`` when the vocabulary cannot be read. Computed once per tokenizer.

    Example:
        >>> max_chars_per_token(model.tokenizer)
        81
    """
    try:
        return _CHARS_PER_TOKEN[tokenizer]
    except (KeyError, TypeError):
        pass
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    longest = max((len(str(token)) for token in vocab), default=0)
    if longest < 1:
        return None
    try:
        _CHARS_PER_TOKEN[tokenizer] = longest
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return longest


def _labels(n: int, ids: Sequence[object] | None, what: str) -> list[str]:
    if ids is None:
        return [f"{what} {i}" for i in range(n)]
    if len(ids) != n:
        raise InputError(f"got {len(ids)} ids for {n} {what}s: pass one id per {what}")
    return [f"{what} {i}" for i in ids]


@no_type_check  # validates the lengths it is given (counts, ids) itself
def check_prompt_chars(
    model: Any,
    texts: Sequence[str],
    max_new_tokens: int,
    *,
    ids: Sequence[object] | None = None,
    what: str = "prompt",
) -> None:
    """Refuse texts certainly too long for the context by their character counts.

    A text of ``c`` characters has at least ``ceil(c / max_chars_per_token)`` tokens; when that
    bound plus ``max_new_tokens`` exceeds the context, the text cannot fit and is not tokenized.
    If some text is refused so, the other texts are tokenized (they are short enough for that
    to be quick) so that the error names every prompt that does not fit. When no text is
    refused, nothing is tokenized: the texts may still be too long, which
    :func:`check_token_counts` decides once they are tokenized.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        texts: the full prompts (prefix + suffix).
        max_new_tokens: the generation limit.
        ids: names of the texts in messages (question ids); default: their indices.
        what: what a text is called in messages (``"prompt"``, ``"question"``).

    Raises:
        PromptTooLongError: naming every text that cannot fit, when one is certainly too long
            by its characters (also when ``max_new_tokens`` alone fills the context).

    Example:
        >>> check_prompt_chars(model, ["x" * 10_000_000], 16, ids=["huge"], what="question")
        Traceback (most recent call last):
        ...
        sprint_lab.generation.limits.PromptTooLongError: question huge (>= ... characters) is ...
    """
    context = context_length(model)
    if context is None or not texts:
        return
    _check_room(context, int(max_new_tokens))
    budget = context - int(max_new_tokens)
    if max(len(text) for text in texts) <= budget:  # nothing to prove from the characters
        return
    per_token = max_chars_per_token(model.tokenizer)
    if per_token is None:
        return
    min_tokens = [math.ceil(len(text) / per_token) for text in texts]
    if all(n <= budget for n in min_tokens):
        return
    labels = _labels(len(texts), ids, what)
    rest = [i for i, n in enumerate(min_tokens) if n <= budget]
    counts = dict(zip(rest, _count_tokens(model.tokenizer, [texts[i] for i in rest]), strict=True))
    over = []
    for i, (label, text) in enumerate(zip(labels, texts, strict=True)):
        if i not in counts:
            over.append(PromptLength(label, len(text), None, min_tokens[i]))
        elif counts[i] > budget:
            over.append(PromptLength(label, len(text), counts[i], counts[i]))
    raise _too_long(context, int(max_new_tokens), over, what)


@no_type_check  # validates the lengths it is given (counts, ids) itself
def check_token_counts(
    model: Any,
    token_counts: Sequence[int],
    max_new_tokens: int,
    *,
    ids: Sequence[object] | None = None,
    chars: Sequence[int] | None = None,
    what: str = "prompt",
) -> None:
    """Refuse prompts whose token count plus ``max_new_tokens`` exceeds the context.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        token_counts: tokens of each prompt.
        max_new_tokens: the generation limit.
        ids: names of the prompts in messages (question ids); default: their indices.
        chars: character counts of the prompts (for the error's details).
        what: what a prompt is called in messages (``"prompt"``, ``"question"``).

    Raises:
        PromptTooLongError: naming every prompt over the budget.

    Example:
        >>> check_token_counts(model, [10, 4000], 100, ids=["q1", "q2"], what="question")
        Traceback (most recent call last):
        ...
        sprint_lab.generation.limits.PromptTooLongError: question q2 (4,000 tokens) is too long ...
    """
    context = context_length(model)
    if context is None:
        return
    _check_room(context, int(max_new_tokens))
    budget = context - int(max_new_tokens)
    if not any(int(n) > budget for n in token_counts):
        return
    labels = _labels(len(token_counts), ids, what)
    sizes = list(chars) if chars is not None else [0] * len(token_counts)
    over = [
        PromptLength(label, int(n_chars), int(n), int(n))
        for label, n, n_chars in zip(labels, token_counts, sizes, strict=True)
        if int(n) > budget
    ]
    raise _too_long(context, int(max_new_tokens), over, what)


def _count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts`` (no special tokens added, as generation tokenizes them).

    Each distinct text is tokenized once, in batches.
    """
    distinct = list(dict.fromkeys(texts))
    counts: list[int] = []
    for start in range(0, len(distinct), _TOKENIZE_CHUNK):
        chunk = distinct[start : start + _TOKENIZE_CHUNK]
        counts.extend(len(ids) for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"])
    count_of = dict(zip(distinct, counts, strict=True))
    return [count_of[text] for text in texts]


def _full_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, tuple) and len(prompt) == 2 and all(isinstance(p, str) for p in prompt):
        return prompt[0] + prompt[1]
    raise InputError(
        f"a prompt is a string or a (prefix, suffix) pair of strings, got {type(prompt).__name__}"
    )


@no_type_check  # validates the prompts (strings or pairs) and ids itself
def check_prompt_lengths(
    model: Any,
    prompts: Sequence[str | tuple[str, str]],
    max_new_tokens: int,
    *,
    ids: Sequence[object] | None = None,
    what: str = "prompt",
) -> list[int]:
    """Check that every prompt plus ``max_new_tokens`` fits the context; return token counts.

    Texts certainly too long are refused by their character count before anything is
    tokenized (:func:`check_prompt_chars`); the rest are tokenized as generation tokenizes them
    (the whole ``prefix + suffix``, no special tokens added).

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        prompts: strings or ``(prefix, suffix)`` pairs.
        max_new_tokens: the generation limit.
        ids: names of the prompts in messages (question ids); default: their indices.
        what: what a prompt is called in messages (``"prompt"``, ``"question"``).

    Returns:
        The token count of each prompt.

    Raises:
        PromptTooLongError: naming every prompt whose tokens + ``max_new_tokens`` exceed the
            context (the first ten by name, then a count).

    Example:
        >>> check_prompt_lengths(model, [("Q: 1+1?\\nA: 2\\n\\n", "Q: 2+2?\\nA:")], 16)
        [24]
    """
    texts = [_full_text(prompt) for prompt in prompts]
    check_prompt_chars(model, texts, max_new_tokens, ids=ids, what=what)
    counts = _count_tokens(model.tokenizer, texts)
    check_token_counts(
        model, counts, max_new_tokens, ids=ids, chars=[len(t) for t in texts], what=what
    )
    return counts


@no_type_check  # validates problems and template itself
def check_problem_lengths(
    model: Any,
    problems: Sequence[Any],
    template: PromptTemplate | str,
    max_new_tokens: int,
) -> list[int]:
    """Check every problem's rendered prompt against the context, before a sweep computes.

    Each prompt is rendered as the sweep renders it, ``template.parts(question, tokenizer)``,
    and counted whole (prefix + suffix).

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: objects with ``.id`` and ``.question`` (e.g. :class:`~sprint_lab.tasks.Problem`).
        template: a :class:`~sprint_lab.tasks.prompts.PromptTemplate` or its registry name.
        max_new_tokens: the sweep's generation limit.

    Returns:
        The prompt token count of each problem.

    Raises:
        PromptTooLongError: naming the question ids of every prompt too long (the first ten,
            then a count).

    Example:
        >>> counts = check_problem_lengths(model, problems, "fewshot_cot", 256)
        >>> len(counts) == len(problems), min(counts) > 500
        (True, True)
        >>> check_problem_lengths(model, problems, "fewshot_cot", 4000)
        Traceback (most recent call last):
        ...
        sprint_lab.generation.limits.PromptTooLongError: 4 questions are too long ...
    """
    template = get_template(template)
    rendered = [template.parts(problem.question, model.tokenizer) for problem in problems]
    return check_prompt_lengths(
        model,
        rendered,
        max_new_tokens,
        ids=[problem.id for problem in problems],
        what="question",
    )
