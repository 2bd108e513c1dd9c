"""The per-question cache every question encoder shares, and the base class that provides it.

Encoding a question is the costly part of scoring heads with the SPRINT selector, and the same
questions come back (train, validation, test, widgets), so vectors are cached by problem id.
Each entry also stores the sha1 of the question text it came from: an id whose text changed is
re-encoded (with a warning). With ``cache_dir`` the cache is mirrored to ``{cache_dir}/{name}.pt``
and reloaded by later encoders with the same name. :class:`CachedEncoder` gives any object with
``encode(list[str])`` the same cache.

Example:
    >>> class Lengths:
    ...     def encode(self, qs):
    ...         return torch.tensor([[float(len(q))] for q in qs])
    >>> from types import SimpleNamespace as P
    >>> enc = CachedEncoder(Lengths())
    >>> enc.encode_problems([P(id="a", question="abc")]).tolist(), enc.cached_ids()
    ([[3.0]], {'a'})
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["CachedEncoder", "QuestionEncoder", "as_texts"]


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _problem_fields(problem: Any) -> tuple[str, str]:
    """``(id, question)`` of a problem-like object (anything with ``.id`` and ``.question``)."""
    try:
        return str(problem.id), str(problem.question)
    except AttributeError as err:
        raise ValueError(
            f"expected a problem with .id and .question attributes, got {type(problem).__name__}"
        ) from err


class QuestionEncoder(ABC):
    """Base class: ``encode`` texts, and ``encode_problems`` with a per-question-id cache.

    Subclasses implement :meth:`encode`, :attr:`dim` and :attr:`name`. The cache maps a problem id
    to its vector and the sha1 of the question text it came from; an id whose text changed is
    re-encoded (with a warning). With ``cache_dir`` set, the cache is also kept in
    ``{cache_dir}/{name}.pt`` and reloaded by later encoders with the same name.

    Args:
        cache_dir: folder for the on-disk cache, or ``None`` for memory only.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._cache: dict[str, tuple[str, Tensor]] = {}
        self._disk_loaded = False

    @property
    @abstractmethod
    def name(self) -> str:
        """A short identifier such as ``"minilm"`` or ``"residual:L12"``."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one question vector."""

    @abstractmethod
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        """Encode raw question texts (float32, on CPU, no grad)."""

    # ------------------------------------------------------------------ cache
    @property
    def cache_path(self) -> Path | None:
        """The on-disk cache file, or ``None`` without ``cache_dir``."""
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_") or "encoder"
        return self.cache_dir / f"{slug}.pt"

    def _load_disk_cache(self) -> None:
        self._disk_loaded = True
        path = self.cache_path
        if path is None or not path.is_file():
            return
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if int(payload["dim"]) != self.dim:
            warnings.warn(
                f"ignoring {path}: dim {payload['dim']} != encoder dim {self.dim}", stacklevel=3
            )
            return
        for qid, key, vec in zip(payload["ids"], payload["keys"], payload["vectors"], strict=True):
            self._cache.setdefault(qid, (key, vec.clone()))

    def _save_disk_cache(self) -> None:
        path = self.cache_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = sorted(self._cache)
        vectors = (
            torch.stack([self._cache[i][1] for i in ids])
            if ids
            else torch.zeros(0, self.dim, dtype=torch.float32)
        )
        payload = {
            "name": self.name,
            "dim": self.dim,
            "ids": ids,
            "keys": [self._cache[i][0] for i in ids],
            "vectors": vectors,
        }
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def cached_ids(self) -> set[str]:
        """Problem ids whose vectors are in the cache."""
        if not self._disk_loaded:
            self._load_disk_cache()
        return set(self._cache)

    def clear_cache(self) -> None:
        """Forget the in-memory cache (the disk file, if any, is left alone)."""
        self._cache.clear()
        self._disk_loaded = True

    def encode_problems(self, problems: Iterable[Any]) -> Float[Tensor, "n_problems dim"]:
        """Encode problems (objects with ``.id`` and ``.question``), reusing cached vectors.

        Only problems missing from the cache (or whose question text changed) are encoded.

        Example:
            >>> from types import SimpleNamespace as P
            >>> class Lengths:
            ...     def encode(self, qs):
            ...         return torch.tensor([[float(len(q))] for q in qs])
            >>> enc = CachedEncoder(Lengths())
            >>> enc.encode_problems([P(id="a", question="1+1?"), P(id="b", question="2")]).shape
            torch.Size([2, 1])
        """
        items = [_problem_fields(p) for p in problems]
        if not self._disk_loaded:
            self._load_disk_cache()
        texts: dict[str, str] = {}
        for qid, text in items:
            if texts.setdefault(qid, text) != text:
                raise ValueError(f"problem id {qid!r} appears with two different question texts")
        todo: dict[str, str] = {}
        for qid, text in texts.items():
            hit = self._cache.get(qid)
            if hit is not None and hit[0] != _text_key(text):
                warnings.warn(
                    f"question text of id {qid!r} changed since it was cached; re-encoding",
                    stacklevel=2,
                )
            if hit is None or hit[0] != _text_key(text):
                todo[qid] = text
        if todo:
            fresh = self.encode(list(todo.values())).detach().to("cpu", torch.float32)
            if fresh.shape != (len(todo), self.dim):
                raise ValueError(
                    f"{self.name}.encode returned shape {tuple(fresh.shape)}, "
                    f"expected {(len(todo), self.dim)}"
                )
            for (qid, text), vec in zip(todo.items(), fresh, strict=True):
                self._cache[qid] = (_text_key(text), vec.clone())
            self._save_disk_cache()
        if not items:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        return torch.stack([self._cache[qid][1] for qid, _ in items])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def as_texts(questions: Sequence[str] | str) -> list[str]:
    """The questions as a list of strings (a single string is an error)."""
    if isinstance(questions, str):
        raise ValueError("encode expects a list of questions, not a single string")
    texts = list(questions)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"questions must be strings, got {type(text).__name__}")
    return texts


class CachedEncoder(QuestionEncoder):
    """Give any object with ``encode(list[str]) -> [n, dim]`` the id cache of this module.

    Args:
        encoder: the wrapped object; its ``dim`` and ``name`` are used when present (``dim`` is
            otherwise found by encoding one string, ``name`` defaults to the class name).
        cache_dir: optional folder for the on-disk per-question cache.

    Example:
        >>> class Lengths:
        ...     def encode(self, qs):
        ...         return torch.tensor([[float(len(q))] for q in qs])
        >>> from types import SimpleNamespace as P
        >>> CachedEncoder(Lengths()).encode_problems([P(id="a", question="abc")])
        tensor([[3.]])
    """

    def __init__(self, encoder: Any, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(cache_dir)
        if not callable(getattr(encoder, "encode", None)):
            raise ValueError(f"{type(encoder).__name__} has no encode() method")
        self.inner = encoder
        self._dim = int(encoder.dim) if getattr(encoder, "dim", None) is not None else None
        self._name = str(getattr(encoder, "name", None) or type(encoder).__name__)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        texts = as_texts(questions)
        vectors = torch.as_tensor(self.inner.encode(texts)).detach().to("cpu", torch.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"{self._name}.encode returned shape {tuple(vectors.shape)} for {len(texts)} texts"
            )
        return vectors
