"""The SPRINT selector's training objective and an optional head-vector penalty.

A question x is scored against every candidate head c by s(x, c) = -‖q(x) - v_c‖² / τ. Several
heads may solve a question, so the loss is *multi-positive* contrastive:
``-log(Σ_{c correct} e^{s} / Σ_{c candidate} e^{s})``, which is small as soon as *some* correct
head is close to q; it is computed with two logsumexps, so large scores stay finite.
:func:`head_repulsion` penalises head vectors that crowd together (off unless the selector's
``diversity`` is positive).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["head_repulsion", "multi_positive_loss"]


def multi_positive_loss(
    scores: Float[Tensor, "n_questions n_heads"], positives: Bool[Tensor, "n_questions n_heads"]
) -> Float[Tensor, ""]:
    """Mean over questions of ``-log(Σ_{positives} e^s / Σ_{all} e^s)`` (computed with logsumexp).

    Raises:
        ValueError: if some question has no positive head (its loss would be infinite).

    Example:
        >>> s = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
        >>> round(float(multi_positive_loss(s, torch.tensor([[True, True, False, False]]))), 4)
        0.6931
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)}")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every question needs at least one positive head")
    pos = torch.logsumexp(scores.masked_fill(~positives, float("-inf")), dim=1)
    return (torch.logsumexp(scores, dim=1) - pos).mean()


def head_repulsion(
    vectors: Float[Tensor, "n_heads dim"], temperature: float = 1.0
) -> Float[Tensor, ""]:
    """Mean of ``exp(-‖v_i - v_j‖² / τ)`` over head pairs i < j: large when head vectors crowd.

    Example:
        >>> float(head_repulsion(torch.zeros(3, 2)))
        1.0
    """
    n = vectors.shape[0]
    if n < 2:
        return vectors.sum() * 0.0
    d2 = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    i, j = torch.triu_indices(n, n, offset=1)
    return torch.exp(-d2[i, j] / temperature).mean()
