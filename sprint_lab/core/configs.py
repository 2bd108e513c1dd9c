"""Configurations as values: a set of heads, and how they are ablated.

A sweep row runs under one *configuration*. SPRINT's configurations are single heads zeroed,
but the experiments papers run need more: a head *set* (``"L3H5+L7H2"``, Michel et al.'s
iterative pruning), a whole layer (``"L12"``), and ablation kinds other than zeroing, the
controls that tell "this head carries information" from "zeroing knocks the model off its
distribution" (``"L3H5@mean"``, ``"L3H5@resample"``; :mod:`sprint_lab.core.ablation`).
:class:`Config` holds one; its :attr:`Config.label` is the string key the store, the statistics,
the selector and the figures share (grammar in :mod:`sprint_lab.core.heads`).

Example:
    >>> from types import SimpleNamespace
    >>> tiny = SimpleNamespace(n_layers=3, n_heads=2)
    >>> layer(tiny, 1).label, layer(tiny, 1).heads
    ('L1', (Head(layer=1, head=0), Head(layer=1, head=1)))
    >>> [c.label for c in as_configs(tiny, [["L0H1", "L2H0"], "L1@mean", (0, 0)])]
    ['L0H1+L2H0', 'L1@mean', 'L0H0']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.heads import (
    ABLATION_KINDS,
    CONFIG_SEPARATOR,
    Head,
    as_heads,
    config_label,
    kind_suffix,
    normalise_label,
    parse_config,
    split_kind,
)

__all__ = [
    "Candidate",
    "Config",
    "as_candidate",
    "as_candidates",
    "as_config",
    "as_configs",
    "candidate_from_label",
    "config_from_label",
    "layer",
]


@no_type_check  # validates its fields itself (ValueError naming the field)
@dataclass(frozen=True)
class Config:
    """One pruning configuration: ``heads`` ablated the ``kind`` way.

    Args:
        heads: the ablated heads (at least one).
        kind: one of :data:`~sprint_lab.core.heads.ABLATION_KINDS`.
        name: the heads part of the label when it is not the ``+``-joined head labels (``"L12"``
            for a whole layer).

    Example:
        >>> Config((Head(3, 5), Head(7, 2))).label, Config((Head(3, 5),), "mean").label
        ('L3H5+L7H2', 'L3H5@mean')
    """

    heads: tuple[Head, ...]
    kind: str = "zero"
    name: str | None = None

    def __post_init__(self) -> None:
        heads = tuple(as_heads(self.heads))
        if not heads:
            raise ValueError("a configuration ablates at least one head (the baseline is 'none')")
        if len(set(heads)) != len(heads):
            raise ValueError(f"configuration {self.name or heads} names a head twice")
        if self.kind not in ABLATION_KINDS:
            raise ValueError(f"unknown ablation kind {self.kind!r}; use one of {ABLATION_KINDS}")
        object.__setattr__(self, "heads", heads)

    @property
    def label(self) -> str:
        """The configuration's label (``"L3H5+L7H2"``, ``"L12@mean"``)."""
        if self.name is not None:
            return self.name + kind_suffix(self.kind)
        return config_label(self.heads, self.kind)

    @property
    def layers(self) -> list[int]:
        """The layers the configuration touches, ascending."""
        return sorted({head.layer for head in self.heads})

    def __str__(self) -> str:
        return self.label


def layer(model: Any, index: int, kind: str = "zero") -> Config:
    """Every head of layer ``index``, as one configuration labelled ``"L{index}"``.

    Raises:
        ValueError: for a layer the model does not have.

    Example:
        >>> layer(model, 2).label, len(layer(model, 2).heads)
        ('L2', 4)
    """
    if isinstance(index, bool) or int(index) != index or not 0 <= index < int(model.n_layers):
        raise ValueError(f"unknown layer {index!r}: the model has layers 0..{model.n_layers - 1}")
    heads = tuple(Head(int(index), h) for h in range(int(model.n_heads)))
    return Config(heads, kind, name=f"L{int(index)}")


@no_type_check  # reads user input of any type; unreadable items -> ValueError naming them
def as_config(model: Any, item: Any, kind: str | None = None) -> Config:
    """One configuration from a ``Config``, a ``Head``, a label or a list of heads.

    Args:
        model: anything with ``n_heads`` (to expand whole-layer labels such as ``"L12"``).
        item: ``Config``, ``Head``, ``"L3H5"``, ``"L3H5+L7H2@mean"``, ``"L12"``, ``(layer, head)``
            or a list of heads.
        kind: overrides the item's ablation kind.

    Raises:
        ValueError: for unreadable input.
    """
    if isinstance(item, Config):
        return item if kind is None else Config(item.heads, kind, item.name)
    if isinstance(item, Head):
        return Config((item,), kind or "zero")
    if isinstance(item, str):
        config = config_from_label(item, int(model.n_heads))
        return config if kind is None else Config(config.heads, kind, config.name)
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(v, int) for v in item):
        return Config(tuple(as_heads([item])), kind or "zero")
    if isinstance(item, Iterable):
        return Config(tuple(as_heads(list(item))), kind or "zero")
    raise ValueError(f"cannot read a configuration from {item!r}")


@no_type_check  # reads user input of any type
def as_configs(model: Any, items: Iterable[Any], kind: str | None = None) -> list[Config]:
    """Configurations from a list (see :func:`as_config`); a repeated label is refused.

    Raises:
        ValueError: for unreadable items or a configuration listed twice.
    """
    if isinstance(items, str | Config | Head):
        items = [items]
    configs = [as_config(model, item, kind) for item in items]
    labels = [c.label for c in configs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"configuration(s) listed twice: {repeated}")
    for config in configs:
        for head in config.heads:
            if head.layer >= int(model.n_layers) or head.head >= int(model.n_heads):
                raise ValueError(
                    f"unknown head {head.label} in {config.label}: the model has layers "
                    f"0..{model.n_layers - 1} and heads 0..{model.n_heads - 1}"
                )
    return configs


Candidate = Head | Config
"""A sweep's pruning candidate: a single zeroed head (a ``Head``, as SPRINT sweeps) or any
other configuration."""


def as_candidate(config: Config) -> Candidate:
    """``config`` as a ``Head`` when it zeroes one head (so single-head sweeps stay as they are).

    Example:
        >>> as_candidate(Config((Head(3, 5),))), as_candidate(Config((Head(3, 5),), "mean")).label
        (Head(layer=3, head=5), 'L3H5@mean')
    """
    if len(config.heads) == 1 and config.kind == "zero" and config.name is None:
        return config.heads[0]
    return config


@no_type_check  # reads user input of any type; unreadable items -> ValueError naming them
def as_candidates(items: Iterable[Any], n_heads: int | None = None) -> list[Candidate]:
    """Candidates from ``Head`` / :class:`Config` objects, labels or ``(layer, head)`` pairs,
    without a model (the selector's and the figures' way to read them).

    Args:
        items: the candidates.
        n_heads: heads per layer, needed only for whole-layer labels such as ``"L12"``.

    Raises:
        ValueError: for an unreadable item, one that prunes nothing, or a whole-layer label
            without ``n_heads``.

    Example:
        >>> [c.label for c in as_candidates(["l0h1", (1, 0), "L0H1+L1H0@mean", "L1"], n_heads=2)]
        ['L0H1', 'L1H0', 'L0H1+L1H0@mean', 'L1']
    """
    candidates: list[Candidate] = []
    for item in items:
        if isinstance(item, Config):
            candidates.append(as_candidate(item))
        elif isinstance(item, Head):
            candidates.append(item)
        elif isinstance(item, str):
            candidates.append(candidate_from_label(item, n_heads))
        else:
            candidates.extend(as_heads([item]))
    return candidates


def candidate_from_label(label: str, n_heads: int | None = None) -> Candidate:
    """The candidate a stored configuration label names.

    Args:
        label: a configuration label (not the baseline or a placebo).
        n_heads: heads per layer (needed for whole-layer labels such as ``"L12"``).

    Raises:
        ValueError: for an unreadable label.

    Example:
        >>> candidate_from_label("L0H1"), candidate_from_label("L1@mean", n_heads=2).label
        (Head(layer=0, head=1), 'L1@mean')
    """
    return as_candidate(config_from_label(label, n_heads))


def config_from_label(label: str, n_heads: int | None = None) -> Config:
    """The configuration a label names (whole-layer parts keep their name, ``"L12"``).

    Raises:
        ValueError: for an unreadable label, or one that prunes nothing (baseline, placebos).

    Example:
        >>> config_from_label("l1@mean", n_heads=2)
        Config(heads=(Head(layer=1, head=0), Head(layer=1, head=1)), kind='mean', name='L1')
    """
    text, kind = split_kind(normalise_label(label))
    heads = parse_config(text, n_heads=n_heads)
    if not heads:
        raise ValueError(f"{label!r} prunes nothing: it is not a candidate configuration")
    joined = CONFIG_SEPARATOR.join(h.label for h in heads)
    return Config(heads, kind, None if text == joined else text)
