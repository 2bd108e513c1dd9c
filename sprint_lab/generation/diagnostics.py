"""Tell float-rounding near-ties apart from real bugs when two greedy decodes disagree.

Batching changes matrix shapes and so the order of floating-point sums; when the top two next
tokens are almost tied, that rounding can flip a greedy choice. ``first_divergence`` finds the
first differing token of two decodes and re-scores the shared context in a single forward pass
to measure the gap between the two best logits there: a tiny gap is a near-tie, a large one is a
bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sprint_lab.core.gate import LayerHeadMask, head_mask
from sprint_lab.core.model import LabModel

NEAR_TIE = 1e-3


@dataclass(frozen=True)
class Divergence:
    """Where two token sequences first differ and how close the call was there.

    Attributes:
        step: index of the first differing generated token (``None`` when equal).
        top2_gap: top-1 minus top-2 logit at that step, teacher-forced on the shared context.
    """

    step: int | None
    top2_gap: float | None

    @property
    def near_tie(self) -> bool:
        """True when the sequences are equal, or the split happened at a near-tie."""
        return self.step is None or (self.top2_gap is not None and self.top2_gap < NEAR_TIE)


def first_divergence(
    model: LabModel,
    prompt_ids: Sequence[int],
    tokens_a: Sequence[int],
    tokens_b: Sequence[int],
    mask: LayerHeadMask | None = None,
) -> Divergence:
    """Compare two greedy continuations of ``prompt_ids`` (run unbatched, under ``mask``).

    Args:
        model: the model that produced both continuations.
        prompt_ids: the prompt's token ids.
        tokens_a: one continuation (e.g. decoded in a batch).
        tokens_b: the other (e.g. decoded alone).
        mask: the head mask both ran under (``None``: no ablation).

    Returns:
        The first differing step (a length mismatch counts as one) and the top-2 logit gap there.

    Example:
        >>> d = first_divergence(model, [5, 6, 7], [1, 2, 3], [1, 2, 4])
        >>> d.step, d.top2_gap >= 0
        (2, True)
        >>> first_divergence(model, [5, 6, 7], [1, 2], [1, 2]).near_tie
        True
    """
    step = next(
        (i for i, (a, b) in enumerate(zip(tokens_a, tokens_b, strict=False)) if a != b), None
    )
    if step is None:
        if len(tokens_a) == len(tokens_b):
            return Divergence(None, None)
        step = min(len(tokens_a), len(tokens_b))
    context = list(prompt_ids) + list(tokens_a[:step])
    mask = torch.ones(model.n_layers, model.n_heads) if mask is None else mask
    with torch.inference_mode(), head_mask(model, mask):
        ids = torch.tensor([context], device=model.device)
        logits = model.hf_model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    top2 = torch.topk(logits, 2).values
    return Divergence(step, float(top2[0] - top2[1]))
