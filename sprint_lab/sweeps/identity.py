"""Fingerprints: what produced a stored row, so a resumed sweep never serves a stale answer.

A sweep row is a function of the question record, the prompt the template renders for it, the
model's weights, their dtype and the generation and grading settings. Each row therefore carries
a ``fingerprint``: a short SHA-256 over

* the **settings** (:func:`settings_fingerprint`): the model's weights hash
  (:func:`model_fingerprint`, the bytes of every parameter in order, so a fine-tuned or
  re-quantised checkpoint under the same name differs), dtype, tokenizer, ``max_new_tokens``,
  stop strings, grade mode, batch-invariant or not, and :data:`ROW_SCHEME` (bumped when
  generation itself changes what it produces);
* the **question** (:func:`question_fingerprints`): every field of its record (text, gold answer,
  solution, level, subject, source) and the exact prompt text rendered for it.

Resuming compares each stored row's fingerprint with the one the current settings and data give:
rows that match are kept, rows that differ (an edited ``my.jsonl`` under the same ids, another
template) are *stale* and are recomputed or refused, never served.

Example:
    >>> template = sl.get_template("fewshot_cot")
    >>> settings = settings_fingerprint(model, template, 16, "flexible")
    >>> prints = question_fingerprints(model, problems[:2], template, settings)
    >>> len(prints[problems[0].id]), prints[problems[0].id] != prints[problems[1].id]
    (16, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem
    from sprint_lab.tasks.prompts import PromptTemplate

__all__ = [
    "FINGERPRINT_CHARS",
    "ROW_SCHEME",
    "model_fingerprint",
    "question_fingerprints",
    "settings_fingerprint",
]

ROW_SCHEME = 1
"""Version of what a row means; bump when generation or grading changes its output."""

FINGERPRINT_CHARS = 16
"""Hex characters kept of each row fingerprint (64 bits)."""

_MODEL_HASHES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_CHUNK_BYTES = 1 << 24


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_fingerprint(model: LabModel) -> str:
    """SHA-256 of the model's parameters (names, shapes, dtypes and bytes), cached per model.

    Hashing reads every weight once (about a second per GB); the value is cached on the model
    object, so a session pays it once.

    Example:
        >>> model_fingerprint(model) == model_fingerprint(model), len(model_fingerprint(model))
        (True, 64)
    """
    cached = _MODEL_HASHES.get(model)
    if cached is not None:
        return cached
    import torch

    hasher = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in model.hf_model.named_parameters():
            hasher.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype};".encode())
            flat = parameter.detach().reshape(-1)
            step = max(1, _CHUNK_BYTES // max(1, flat.element_size()))
            for start in range(0, flat.numel(), step):
                chunk = flat[start : start + step].cpu().contiguous()
                hasher.update(chunk.view(torch.uint8).numpy().tobytes())
    value = hasher.hexdigest()
    _MODEL_HASHES[model] = value
    return value


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    return {
        "class": type(tokenizer).__name__,
        "vocab": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
        "special": getattr(tokenizer, "special_tokens_map", None),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


def settings_fingerprint(
    model: LabModel,
    template: PromptTemplate,
    max_new_tokens: int,
    grade_mode: str,
    deterministic: bool = False,
) -> str:
    """SHA-256 of everything shared by a sweep's rows (weights, dtype, generation, grading)."""
    return _digest(
        {
            "deterministic": bool(deterministic),
            "scheme": ROW_SCHEME,
            "weights": model_fingerprint(model),
            "dtype": str(model.dtype),
            "tokenizer": _tokenizer_identity(model.tokenizer),
            "template": template.name,
            "stop": list(template.stop_strings(model.tokenizer)),
            "max_new_tokens": int(max_new_tokens),
            "grade_mode": grade_mode,
        }
    )


def question_fingerprints(
    model: LabModel, problems: Sequence[Problem], template: PromptTemplate, settings: str
) -> dict[str, str]:
    """Each question id's row fingerprint: its record, its rendered prompt and the settings."""
    prints = {}
    for problem in problems:
        record = dataclasses.asdict(problem) if dataclasses.is_dataclass(problem) else vars(problem)
        prefix, suffix = template.parts(problem.question, model.tokenizer)
        payload = {"settings": settings, "record": record, "prompt": prefix + suffix}
        prints[problem.id] = _digest(payload)[:FINGERPRINT_CHARS]
    return prints
