"""Question encoders: turn question texts into fixed-size vectors for the SPRINT selector.

SPRINT's selector scores heads from an embedding φ(x) of the raw question. The paper uses a
frozen sentence encoder (:class:`~sprint_lab.selection.minilm.MiniLMEncoder`, all-MiniLM-L6-v2:
mean pooling over the attention mask, then L2 normalisation);
:class:`~sprint_lab.selection.residual.ResidualEncoder` is a model-internal alternative that
mean-pools the language model's own residual stream after one block, so it needs no extra model.
Every encoder caches vectors by question id (:mod:`sprint_lab.selection.encoder_cache`).
:func:`get_encoder` builds one from a short spec through the :data:`ENCODER_KINDS` table.

Example:
    >>> enc = get_encoder("residual:1", model)
    >>> type(enc).__name__, enc.layer
    ('ResidualEncoder', 1)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

from sprint_lab.selection.encoder_cache import CachedEncoder, QuestionEncoder
from sprint_lab.selection.minilm import MINILM_ALIASES, MiniLMEncoder
from sprint_lab.selection.residual import ResidualEncoder

__all__ = [
    "ENCODER_KINDS",
    "CachedEncoder",
    "MiniLMEncoder",
    "QuestionEncoder",
    "ResidualEncoder",
    "get_encoder",
]


def _minilm(spec: str, model_name: str, arg: str, lab_model: Any) -> MiniLMEncoder | None:
    if model_name:
        return None
    return MiniLMEncoder(arg) if arg else MiniLMEncoder()


def _residual(spec: str, model_name: str, arg: str, lab_model: Any) -> ResidualEncoder:
    match = re.fullmatch(r"[Ll]?(-?\d+)", arg.strip())
    if match is None:
        raise ValueError(f"bad residual encoder spec {spec!r}; use e.g. 'residual:12'")
    if lab_model is None:
        raise ValueError(f"encoder {spec!r} needs the language model: pass lab_model=")
    loaded = str(getattr(lab_model, "name", "") or "")
    if model_name and loaded and loaded != model_name:
        warnings.warn(
            f"encoder {spec!r} was built on {model_name!r}, lab_model is {loaded!r}",
            stacklevel=3,
        )
    return ResidualEncoder(lab_model, int(match.group(1)))


#: Spec kind (the part before ``:``) -> builder ``(spec, model_name, arg, lab_model)``; a
#: builder returning ``None`` rejects the spec.
ENCODER_KINDS: dict[str, Callable[[str, str, str, Any], QuestionEncoder | None]] = {
    "minilm": _minilm,
    "residual": _residual,
    "resid": _residual,
}


def get_encoder(spec: Any = "minilm", lab_model: Any = None) -> Any:
    """Build an encoder from a short spec.

    * ``"minilm"`` -> :class:`MiniLMEncoder` (offline all-MiniLM-L6-v2);
      ``"minilm:<id or folder>"`` -> ``MiniLMEncoder(<id or folder>)``.
    * ``"residual:L12"``, ``"residual:12"``, ``"resid:12"`` -> ``ResidualEncoder(lab_model, 12)``.
    * an encoder object passes through: one with ``encode_problems`` as is, one with only
      ``encode`` wrapped in :class:`CachedEncoder` so it gets the id cache.

    Example:
        >>> get_encoder("resid:-1", model).name.endswith("residual:L2")
        True
    """
    if not isinstance(spec, str):
        if callable(getattr(spec, "encode_problems", None)):
            return spec
        if callable(getattr(spec, "encode", None)):
            return CachedEncoder(spec)
        raise ValueError(f"not an encoder spec or object: {spec!r}")
    text = spec.strip()
    if text.lower() in MINILM_ALIASES:
        return MiniLMEncoder()
    kind, _, arg = text.partition(":")
    model_name, _, kind = kind.rpartition("/")  # "<model>/residual:L3" is a ResidualEncoder name
    build = ENCODER_KINDS.get(kind.lower())
    encoder = None if build is None else build(spec, model_name, arg, lab_model)
    if encoder is None:
        raise ValueError(
            f"unknown encoder spec {spec!r}; use 'minilm', 'minilm:<model>', 'residual:<layer>' "
            "or pass an encoder object"
        )
    return encoder
