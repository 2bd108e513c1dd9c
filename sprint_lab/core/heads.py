"""Attention heads as values.

A candidate for pruning is one *query* head in one layer, written ``L{layer}H{head}``.
Under grouped-query attention several query heads share one key/value group; sprint_lab
always counts query heads, as the SPRINT authors did (``config.num_attention_heads``).

A *configuration* is what one row of a sweep runs under: the unpruned baseline
(:data:`BASELINE`, label ``"none"``) or a set of pruned heads, ablated in one of the
:data:`ABLATION_KINDS`. Its label is the one key that the store, the statistics, the selector and
the figures share; :func:`config_label` writes it and :func:`parse_config` is the one parser of
it. The grammar: head labels joined by ``+`` (``"L3H5+L7H2"``), ``"L12"`` for every head of a
layer, then ``@mean`` or ``@resample`` for a kind other than zeroing (``"L3H5@mean"``).

A *placebo* (label ``"none~1"``, ``"none~2"``, ...; :func:`placebo_label`) prunes nothing, yet
runs as a configuration of its own: its rows sit in their own positions of mixed batches, as a
pruned head's do. With batch-invariant generation its answers equal the baseline's, so its
"delta" measures how much of a head's delta the arithmetic of batching alone could produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sprint_lab.core.boundary import no_type_check

_LABEL = re.compile(r"^\s*L(\d+)\s*H(\d+)\s*$", re.IGNORECASE)
_LAYER_LABEL = re.compile(r"^\s*L(\d+)\s*$", re.IGNORECASE)

BASELINE = "none"
"""The configuration label of the unpruned model."""

PLACEBO_MARK = "~"
"""Separates the baseline label from a placebo's number: ``"none~1"``."""

_PLACEBO = re.compile(rf"^{BASELINE}{PLACEBO_MARK}([1-9][0-9]*)$")

CONFIG_SEPARATOR = "+"
"""Joins the head labels of a multi-head configuration: ``"L3H5+L7H2"``."""

KIND_MARK = "@"
"""Separates a configuration's heads from its ablation kind: ``"L3H5@mean"``."""

ABLATION_KINDS = ("zero", "mean", "resample")
"""How a configuration ablates its heads (:mod:`sprint_lab.core.ablation`): ``"zero"`` (SPRINT's,
the default, no mark in the label), ``"mean"`` or ``"resample"``."""


@no_type_check  # validates its fields itself (bools, floats, negatives -> ValueError)
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


@no_type_check  # reads user input of any type; unreadable items -> ValueError naming them
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
            out.append(Head(_index(item[0], item), _index(item[1], item)))
        else:
            raise ValueError(f"cannot read a head from {item!r}")
    return out


def _index(value: Any, item: Any) -> int:
    """An int index; bools and non-integral numbers are refused (``(True, 1)``, ``(0.9, 1.9)``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"cannot read a head from {item!r}: indices must be ints, got {value!r}")
    return value


def config_label(
    heads: Iterable[Head | str | tuple[int, int]] | Head | None, kind: str = "zero"
) -> str:
    """The label of a configuration: ``"none"`` for no heads, else head labels joined by ``+``
    (and ``@kind`` for an ablation kind other than ``"zero"``).

    Example:
        >>> config_label(None), config_label(Head(3, 5)), config_label(["L3H5", (7, 2)])
        ('none', 'L3H5', 'L3H5+L7H2')
        >>> config_label(["L3H5"], kind="mean")
        'L3H5@mean'
    """
    if heads is None:
        return BASELINE
    labels = [heads.label] if isinstance(heads, Head) else [h.label for h in as_heads(heads)]
    if not labels:
        return BASELINE
    return CONFIG_SEPARATOR.join(labels) + kind_suffix(kind)


def kind_suffix(kind: str) -> str:
    """The label suffix of an ablation kind: ``""`` for ``"zero"``, else ``"@kind"``.

    Raises:
        ValueError: for a kind outside :data:`ABLATION_KINDS`.

    Example:
        >>> kind_suffix("zero"), kind_suffix("mean")
        ('', '@mean')
    """
    if kind not in ABLATION_KINDS:
        raise ValueError(f"unknown ablation kind {kind!r}; use one of {ABLATION_KINDS}")
    return "" if kind == "zero" else f"{KIND_MARK}{kind}"


def split_kind(label: str) -> tuple[str, str]:
    """A label's heads part and its ablation kind (``"zero"`` when unmarked).

    Raises:
        ValueError: for an unknown kind.

    Example:
        >>> split_kind("L3H5+L7H2@mean"), split_kind("L3H5")
        (('L3H5+L7H2', 'mean'), ('L3H5', 'zero'))
    """
    text = str(label).strip()
    heads, mark, kind = text.partition(KIND_MARK)
    if not mark:
        return text, "zero"
    kind = kind.strip().lower()
    if kind not in ABLATION_KINDS or kind == "zero":
        known = ", ".join(k for k in ABLATION_KINDS if k != "zero")
        raise ValueError(f"unknown ablation kind {kind!r} in {label!r}; use @{known} or none")
    return heads.strip(), kind


def config_kind(label: str) -> str:
    """The ablation kind of a configuration label (``"zero"`` for the baseline).

    Example:
        >>> config_kind("L3H5@resample"), config_kind("L3H5"), config_kind("none")
        ('resample', 'zero', 'zero')
    """
    return split_kind(label)[1]


def parse_config(label: str, n_heads: int | None = None) -> tuple[Head, ...]:
    """The pruned heads of a configuration label (``()`` for the baseline and placebos).

    Args:
        label: ``"none"``, ``"none~k"``, or ``+``-joined parts, each a head (``"L3H5"``) or a
            whole layer (``"L12"``), optionally followed by ``@mean`` / ``@resample``.
        n_heads: heads per layer, needed to expand a whole-layer part.

    Raises:
        ValueError: for an unreadable label, or a whole-layer part without ``n_heads``.

    Example:
        >>> parse_config("none")
        ()
        >>> parse_config("L3H5+L7H2")
        (Head(layer=3, head=5), Head(layer=7, head=2))
        >>> parse_config("L1@mean", n_heads=2)
        (Head(layer=1, head=0), Head(layer=1, head=1))
    """
    text, _ = split_kind(label)
    if text == BASELINE or is_placebo(text):
        return ()
    heads: list[Head] = []
    for part in text.split(CONFIG_SEPARATOR):
        layer = _LAYER_LABEL.match(part)
        if layer is None:
            heads.append(Head.parse(part))
            continue
        if n_heads is None:
            raise ValueError(
                f"{label!r} names a whole layer (L{layer.group(1)}): expanding it needs the "
                "model's n_heads"
            )
        heads.extend(Head(int(layer.group(1)), h) for h in range(int(n_heads)))
    if len(set(heads)) != len(heads):
        raise ValueError(f"configuration {label!r} names a head twice")
    return tuple(heads)


def normalise_label(label: str) -> str:
    """A configuration label in its one spelling (``"l0h1"`` -> ``"L0H1"``), without a model.

    Example:
        >>> normalise_label(" l3h5 + L7H2 @Mean"), normalise_label("l12"), normalise_label("none~1")
        ('L3H5+L7H2@mean', 'L12', 'none~1')
    """
    text, kind = split_kind(label)
    if text == BASELINE or is_placebo(text):
        return text
    parts = []
    for part in text.split(CONFIG_SEPARATOR):
        layer = _LAYER_LABEL.match(part)
        parts.append(f"L{int(layer.group(1))}" if layer else Head.parse(part).label)
    return CONFIG_SEPARATOR.join(parts) + kind_suffix(kind)


def placebo_label(index: int) -> str:
    """The label of the ``index``-th placebo (1-based): an unpruned run of its own.

    Example:
        >>> placebo_label(1), parse_config(placebo_label(2)), is_placebo("none~2")
        ('none~1', (), True)
    """
    if isinstance(index, bool) or int(index) != index or index < 1:
        raise ValueError(f"placebo numbers start at 1, got {index!r}")
    return f"{BASELINE}{PLACEBO_MARK}{int(index)}"


def is_placebo(label: str) -> bool:
    """Whether ``label`` names a placebo configuration (``"none~1"``, ...).

    Example:
        >>> is_placebo("none~1"), is_placebo("none"), is_placebo("L0H1")
        (True, False, False)
    """
    return _PLACEBO.match(str(label).strip()) is not None


def is_baseline(label: str) -> bool:
    """Whether ``label`` names the unpruned configuration.

    Example:
        >>> is_baseline("none"), is_baseline("L0H1")
        (True, False)
    """
    return str(label).strip() == BASELINE


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
