"""Mean and resample ablation: what an ablated head outputs when it is not zeroed.

Zeroing a head (SPRINT's ablation) removes its output, but also puts the next layers' inputs
where the model never saw them. Interpretability papers control for that with two other kinds
(:data:`~sprint_lab.core.heads.ABLATION_KINDS`), both computed here and applied by the same gate
(:mod:`sprint_lab.core.gate`, ``z * m + (1 - m) * r``):

* ``"mean"``: the head's output is replaced by its **overall mean** over a reference set of
  prompts: the average of ``hook_z[layer, head]`` over every token position of every reference
  prompt, run unpruned (one position class: the same vector at every position and decoding
  step; a token-weighted mean, so long prompts weigh more). In a sweep the reference set is the
  sweep's own prompts.
* ``"resample"``: the head's output is replaced by its output **on another question**: the
  per-prompt mean (over that prompt's positions) of a *donor* question, chosen for each question
  by a seeded hash of the seed and the question's id, never the question itself
  (:meth:`HeadMeans.donor`). Averaging over the donor's positions makes the replacement
  independent of prompt lengths, which differ between questions.

:func:`head_means` runs each reference prompt alone (batch 1, no padding) and sums ``hook_z`` in
float64, so the reference does not depend on any batch; a sweep computes it once, in the
driver, and hands the same tensor to every executor and worker.

Example:
    >>> reference = head_means(model, ["2 + 2 =", "The cat sat"], ids=["a", "b"])
    >>> reference.mean().shape, reference.counts.tolist(), reference.donor("a", seed=0)
    (torch.Size([3, 4, 16]), [5, 3], 1)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import hook_z_name, mask_for
from sprint_lab.core.heads import Head
from sprint_lab.core.model import LabModel

__all__ = ["HeadMeans", "head_means", "replacement_for"]

PromptText = str | tuple[str, str]
"""A prompt's text, or a ``(prefix, suffix)`` pair (joined)."""


@dataclass(frozen=True)
class HeadMeans:
    """Per-prompt sums of every head's output over a reference set of prompts.

    Attributes:
        ids: one id per reference prompt (question ids in a sweep).
        sums: ``hook_z`` summed over each prompt's positions, float64.
        counts: each prompt's token count.
        fingerprint: a digest of the reference prompts' token ids (recorded in a sweep's meta).
    """

    ids: tuple[str, ...]
    sums: Float[Tensor, "n_prompts n_layers n_heads d_head"]
    counts: Int[Tensor, " n_prompts"]
    fingerprint: str

    def mean(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        """Every head's overall (token-weighted) mean output, float32 (computed once)."""
        return self._overall_mean

    @cached_property
    def _overall_mean(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        total = self.sums.sum(dim=0) / self.counts.sum().to(torch.float64)
        return total.to(torch.float32)

    def prompt_mean(self, index: int) -> Float[Tensor, "n_layers n_heads d_head"]:
        """Every head's mean output over the positions of reference prompt ``index``."""
        return (self.sums[index] / self.counts[index].to(torch.float64)).to(torch.float32)

    def donor(self, question_id: str, seed: int = 0) -> int:
        """The reference prompt whose outputs replace ``question_id``'s (never its own).

        The choice depends only on ``seed``, the question id and the reference ids, so a
        question gets the same donor whatever batch, shard or worker answers it.

        Raises:
            InputError: when the reference holds fewer than two prompts.
        """
        if len(self.ids) < 2:
            raise InputError("resample ablation needs a reference of at least two questions")
        own = self.ids.index(question_id) if question_id in self.ids else None
        choices = [k for k in range(len(self.ids)) if k != own]
        digest = hashlib.sha256(f"{int(seed)}\x00{question_id}".encode()).digest()
        return choices[int.from_bytes(digest[:8], "big") % len(choices)]


def _prompt_ids(model: LabModel, prompt: PromptText) -> list[int]:
    text = "".join(prompt) if isinstance(prompt, tuple) else str(prompt)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"reference prompt {text[:40]!r} has no tokens")
    return list(ids)


def head_means(
    model: LabModel, prompts: Sequence[PromptText], ids: Sequence[str] | None = None
) -> HeadMeans:
    """Run each prompt unpruned, alone, and sum every head's ``hook_z`` over its positions.

    Args:
        model: the model.
        prompts: reference prompts (texts or ``(prefix, suffix)`` pairs).
        ids: one id per prompt (default ``"0"``, ``"1"``, ...).

    Raises:
        InputError: for no prompts, an empty prompt, or an id count that does not match.
    """
    if not prompts:
        raise InputError("mean/resample ablation needs at least one reference prompt")
    ids = [str(k) for k in range(len(prompts))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(prompts):
        raise InputError(f"got {len(ids)} ids for {len(prompts)} reference prompts")
    shape = (model.n_layers, model.n_heads, model.d_head)
    sums = torch.zeros(len(prompts), *shape, dtype=torch.float64)
    counts = torch.zeros(len(prompts), dtype=torch.int64)
    digest = hashlib.sha256()
    captured: dict[int, Tensor] = {}

    def capture(layer: int):
        def hook(z: Tensor, hook: object) -> Tensor:  # z: [1, pos, n_heads, d_head]
            captured[layer] = z[0].detach().to("cpu", torch.float64).sum(dim=0)
            return z

        return hook

    hooks = [(hook_z_name(layer), capture(layer)) for layer in range(model.n_layers)]
    lock = getattr(model, "lock", None) or contextlib.nullcontext()
    with lock, torch.inference_mode(), model.bridge.hooks(fwd_hooks=hooks):
        for k, prompt in enumerate(prompts):
            token_ids = _prompt_ids(model, prompt)
            digest.update(repr(token_ids).encode())
            captured.clear()
            model.hf_model(torch.tensor([token_ids], device=model.device))
            sums[k] = torch.stack([captured[layer] for layer in range(model.n_layers)])
            counts[k] = len(token_ids)
    return HeadMeans(tuple(ids), sums, counts, digest.hexdigest()[:16])


def replacement_for(
    model: LabModel,
    heads: Sequence[Head],
    kind: str,
    reference: HeadMeans | None,
    question_id: str,
    seed: int = 0,
) -> Float[Tensor, "n_layers n_heads d_head"]:
    """What ``heads`` output under ablation ``kind`` for ``question_id`` (zeros elsewhere).

    Args:
        model: the model.
        heads: the configuration's heads.
        kind: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: the reference means (needed for ``"mean"`` and ``"resample"``).
        question_id: the question the row answers (picks the resample donor).
        seed: the resample pairing seed.

    Raises:
        InputError: for an unknown kind, or a missing reference.

    Example:
        >>> reference = head_means(model, ["2 + 2 =", "The cat sat"], ids=["a", "b"])
        >>> r = replacement_for(model, [Head(1, 2)], "resample", reference, "a")
        >>> torch.equal(r[1, 2], reference.prompt_mean(1)[1, 2]), bool(r[0].abs().sum() == 0)
        (True, True)
    """
    shape = (model.n_layers, model.n_heads, model.d_head)
    if kind == "zero":
        return torch.zeros(shape)
    if kind not in ("mean", "resample"):
        raise InputError(f"unknown ablation kind {kind!r}; use 'zero', 'mean' or 'resample'")
    if reference is None:
        raise InputError(f"{kind} ablation needs reference means (see head_means)")
    if kind == "mean":
        values = reference.mean()
    else:
        values = reference.prompt_mean(reference.donor(question_id, seed))
    ablated = 1 - mask_for(model, heads)  # 1 at the configuration's heads
    return values * ablated[..., None]
