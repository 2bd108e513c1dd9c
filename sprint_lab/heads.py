"""Attention heads as values.

A candidate for pruning is one *query* head in one layer, written ``L{layer}H{head}``.
Under grouped-query attention several query heads share one key/value group; sprint_lab
always counts query heads, as the SPRINT authors did (``config.num_attention_heads``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_LABEL = re.compile(r"^\s*L(\d+)\s*H(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Head:
    """One query head: ``Head(layer=3, head=5)`` is labelled ``"L3H5"``.

    Example:
        >>> Head(3, 5).label
        'L3H5'
        >>> Head.parse("L3H5") == Head(3, 5)
        True
    """

    layer: int
    head: int

    def __post_init__(self) -> None:
        for name in ("layer", "head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Head.{name} must be a non-negative int, got {value!r}")

    @property
    def label(self) -> str:
        """The head's label, ``"L{layer}H{head}"``."""
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, text: str | Head) -> Head:
        """Parse a label such as ``"L3H5"`` (a ``Head`` passes through).

        Raises:
            ValueError: if ``text`` is not of the form ``L<layer>H<head>``.
        """
        if isinstance(text, Head):
            return text
        match = _LABEL.match(str(text))
        if match is None:
            raise ValueError(f"not a head label: {text!r} (expected e.g. 'L3H5')")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return self.label


def as_heads(heads: Iterable[Head | str | tuple[int, int]]) -> list[Head]:
    """Normalise heads given as ``Head``, labels or ``(layer, head)`` pairs.

    Example:
        >>> as_heads(["L0H1", (2, 3)])
        [Head(layer=0, head=1), Head(layer=2, head=3)]
    """
    out = []
    for item in heads:
        if isinstance(item, Head):
            out.append(item)
        elif isinstance(item, str):
            out.append(Head.parse(item))
        elif isinstance(item, tuple | list) and len(item) == 2:
            out.append(Head(int(item[0]), int(item[1])))
        else:
            raise ValueError(f"cannot read a head from {item!r}")
    return out


def all_heads(model: Any, layers: Iterable[int] | None = None) -> list[Head]:
    """Every query head of ``layers`` (default: all layers), in layer-major order.

    Args:
        model: a ``LabModel`` (anything with ``n_layers`` and ``n_heads``).
        layers: the layers to include; each must exist in the model.

    Example:
        >>> from types import SimpleNamespace
        >>> all_heads(SimpleNamespace(n_layers=2, n_heads=2))
        [Head(layer=0, head=0), Head(layer=0, head=1), Head(layer=1, head=0), Head(layer=1, head=1)]
    """
    n_layers, n_heads = int(model.n_layers), int(model.n_heads)
    chosen = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    for layer in chosen:
        if not 0 <= layer < n_layers:
            raise ValueError(f"unknown layer {layer}: the model has layers 0..{n_layers - 1}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"layers repeat: {chosen}")
    return [Head(layer, head) for layer in chosen for head in range(n_heads)]
