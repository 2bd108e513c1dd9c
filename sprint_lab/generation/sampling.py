"""Choosing the next token: greedy argmax, or temperature / top-k / top-p sampling seeded per row.

Each row that samples owns a ``torch.Generator`` seeded from ``(seed, prompt, sample)``, so a
row's tokens do not depend on which other rows share its batch (batch size and the order in
which rows finish change nothing). Top-k keeps the ``k`` largest logits; top-p (nucleus) keeps
the smallest set of most likely tokens whose probability mass reaches ``p`` (the token that
crosses ``p`` included).

The settings are checked when a :class:`Sampler` is made, so a bad one fails before any forward
pass: the temperature must be a finite number ``>= 0`` (``0`` is greedy decoding), ``top_k``
``None`` or an integer ``>= 0`` (``0``: no cut) and ``top_p`` ``None`` or a number in ``(0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError

_SEED_MODULUS = 2**63 - 1


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@no_type_check  # validates its fields itself (bools, strings, NaN, negatives -> InputError)
@dataclass(frozen=True)
class Sampler:
    """How the next token is picked from the logits.

    Attributes:
        temperature: ``0`` for greedy decoding; otherwise the softmax temperature (finite, > 0).
        top_k: keep the ``k`` most likely tokens when sampling (``None`` or ``0``: all).
        top_p: nucleus mass in ``(0, 1]`` (``None`` or ``1``: all).

    Raises:
        InputError: (a ``ValueError``) for a negative, NaN or infinite temperature, a ``top_k``
            that is not an integer ``>= 0`` (``True`` included) or a ``top_p`` outside
            ``(0, 1]``.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
        >>> Sampler().pick(logits, [None, None]).tolist()
        [1, 0]
        >>> sampler = Sampler(temperature=1.0, top_k=1)
        >>> sampler.pick(logits, [sampler.generator(0, 0, 0), sampler.generator(0, 1, 0)]).tolist()
        [1, 0]
        >>> Sampler(temperature=-1)
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: temperature must be >= 0 (0 is greedy), got -1
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        temperature, top_k, top_p = self.temperature, self.top_k, self.top_p
        if not _is_number(temperature) or not math.isfinite(temperature):
            raise InputError(
                f"temperature must be a finite number >= 0 (0 is greedy), got {temperature!r}"
            )
        if temperature < 0:
            raise InputError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 0
        ):
            raise InputError(
                f"top_k must be None or an integer >= 0 (0 keeps every token), got {top_k!r}"
            )
        if top_p is not None and not (_is_number(top_p) and 0 < top_p <= 1):  # NaN fails too
            raise InputError(
                f"top_p must be None or a number in (0, 1] (1 keeps every token), got {top_p!r}"
            )

    @property
    def greedy(self) -> bool:
        """Whether tokens are picked by argmax (no generator needed)."""
        return self.temperature == 0

    def generator(self, seed: int, prompt_index: int, sample_index: int) -> torch.Generator | None:
        """The CPU generator of one (prompt, sample) row, or ``None`` when decoding greedily."""
        if self.greedy:
            return None
        generator = torch.Generator(device="cpu")
        generator.manual_seed(
            (seed * 1_000_003 + prompt_index * 7919 + sample_index) % _SEED_MODULUS
        )
        return generator

    def pick(
        self,
        logits: Float[Tensor, "batch vocab"],
        generators: Sequence[torch.Generator | None],
    ) -> Int[Tensor, " batch"]:
        """The next token of every row (``generators`` aligned with the rows of ``logits``)."""
        if self.greedy:
            return logits.argmax(dim=-1)
        probs = self.filtered_logits(logits).softmax(dim=-1)
        picks = [torch.multinomial(probs[i], 1, generator=gen) for i, gen in enumerate(generators)]
        return torch.cat(picks)

    def filtered_logits(self, logits: Float[Tensor, "batch vocab"]) -> Float[Tensor, "batch vocab"]:
        """Float32 logits divided by the temperature, ``-inf`` outside top-k and top-p.

        Example:
            >>> Sampler(temperature=2.0, top_k=2).filtered_logits(torch.tensor([[4.0, 2.0, 0.0]]))
            tensor([[2., 1., -inf]])
        """
        logits = logits.float() / self.temperature
        if self.top_k is not None and self.top_k > 0:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            # keep the first token over top_p
            remove = cumulative - sorted_logits.softmax(dim=-1) >= self.top_p
            sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return logits
