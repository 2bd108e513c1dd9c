"""When a row stops: an end-of-sequence token, a stop string, or the token limit.

Stop strings are matched on decoded text, because a string such as ``"\\n\\nQ:"`` can be split
over tokens in many ways. Only the last few tokens are decoded at each step (enough tokens to
hold the longest stop string plus two, for tokens that decode to nothing on their own), so the
check costs the same at step 5 and step 500. The finished text is cut before the first stop
string it contains.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sprint_lab.core.model import LabModel


def eos_ids(model: LabModel) -> frozenset[int]:
    """The tokenizer's EOS id plus every EOS id of the model's generation config.

    Example:
        >>> model.tokenizer.eos_token_id in eos_ids(model)
        True
    """
    ids: set[int] = set()
    config_eos = getattr(model.hf_model.generation_config, "eos_token_id", None)
    for value in (model.tokenizer.eos_token_id, config_eos):
        if value is None:
            continue
        ids.update(value if isinstance(value, list | tuple) else [value])
    return frozenset(ids)


@dataclass(frozen=True)
class StopRule:
    """The stopping conditions of one :func:`~sprint_lab.generation.generator.generate` call.

    Attributes:
        tokenizer: decodes the generated tokens.
        stop: stop strings (empty strings dropped).
        eos: end-of-sequence token ids (never part of the answer).
        max_new_tokens: the token limit per answer.

    Example:
        >>> rule = StopRule.build(model.tokenizer, ["\\n", ""], {0}, max_new_tokens=5)
        >>> rule.stop, rule.reason([], 0), rule.cut("5\\nQ", "length")
        (('\\n',), 'eos', ('5', 'stop'))
    """

    tokenizer: Any
    stop: tuple[str, ...]
    eos: frozenset[int]
    max_new_tokens: int

    @classmethod
    def build(
        cls, tokenizer: Any, stop: Sequence[str] | None, eos: Iterable[int], max_new_tokens: int
    ) -> StopRule:
        """A rule with empty stop strings dropped."""
        return cls(tokenizer, tuple(s for s in (stop or ()) if s), frozenset(eos), max_new_tokens)

    @cached_property
    def window(self) -> int:
        """How many trailing tokens are decoded to look for a stop string."""
        return max((len(s) for s in self.stop), default=0) + 2

    def reason(self, generated: list[int], token: int) -> str | None:
        """Append ``token`` to ``generated`` (unless it is EOS); say why the row ends, if it does.

        Returns:
            ``"eos"``, ``"stop"``, ``"length"`` or ``None`` (the row goes on).
        """
        if token in self.eos:
            return "eos"
        generated.append(token)
        if self.stop:
            tail = self.tokenizer.decode(generated[-self.window :])
            if any(s in tail for s in self.stop):
                return "stop"
        if len(generated) >= self.max_new_tokens:
            return "length"
        return None

    def cut(self, text: str, reason: str) -> tuple[str, str]:
        """``text`` cut before its first stop string, and the finish reason that leaves."""
        if reason == "stop" or self.stop:
            cut = min((text.find(s) for s in self.stop if s in text), default=-1)
            if cut >= 0:
                return text[:cut], "stop"
        return text, reason
