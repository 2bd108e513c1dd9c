"""The head gate: the one mechanism sprint_lab uses to switch attention heads off.

Each layer's attention output, just before the output projection ``o_proj``, is the
concatenation of the per-head outputs ``z`` (TransformerLens hook point
``blocks.{layer}.attn.hook_z``, shape ``[batch, pos, n_heads, d_head]``, one slot per *query*
head even under grouped-query attention). The gate multiplies ``z`` by a mask: 1 keeps a head,
0 ablates it (exactly like zeroing that head's ``o_proj`` input columns), and a differentiable
mask at 1 gives Michel et al.'s importance gradient. A mask is ``[n_layers, n_heads]`` (same for
the whole batch) or ``[batch, n_layers, n_heads]`` (one configuration per batch row).

With a *replacement* ``r`` (``[n_layers, n_heads, d_head]`` or one per row) the gate is the
affine map ``z * m + (1 - m) * r``: an ablated head's output becomes ``r`` instead of zero, at
every position and decoding step. That is mean ablation (``r`` = the head's mean output over
reference prompts) and resample ablation (``r`` = its output on another question;
:mod:`sprint_lab.core.ablation`). Without a replacement the gate computes ``z * m`` exactly as
before, and a row whose replacement is all zeros gets the same values as ``z * m``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sprint_lab.core.errors import InputError
from sprint_lab.core.heads import Head, as_heads
from sprint_lab.core.model import LabModel

LayerHeadMask = Float[Tensor, "n_layers n_heads"]
"""One configuration: a factor per (layer, head)."""

MaskBatch = Float[Tensor, "batch n_layers n_heads"]
"""One configuration per batch row (or a stack of distinct configurations)."""

Mask = LayerHeadMask | MaskBatch
"""What the gate takes: one mask for the whole batch, or one per row."""

ReplacementBatch = Float[Tensor, "batch n_layers n_heads d_head"]
"""Per-row replacement outputs of the ablated heads (zeros for zero ablation)."""

Replacement = Float[Tensor, "n_layers n_heads d_head"] | ReplacementBatch
"""What an ablated head outputs instead of zero: one for the batch, or one per row."""

GateHook = Callable[[Float[Tensor, "batch pos n_heads d_head"], object], Tensor]
"""A ``hook_z`` forward hook: ``(z, hook point) -> gated z``."""


def hook_z_name(layer: int) -> str:
    """Name of the hook point the gate acts on: the input of layer ``layer``'s ``o_proj``.

    Example:
        >>> hook_z_name(3)
        'blocks.3.attn.hook_z'
    """
    return f"blocks.{layer}.attn.hook_z"


def check_head(model: LabModel, head: Head) -> None:
    """Raise ``ValueError`` naming the valid ranges if ``head`` does not exist in ``model``.

    Example:
        >>> check_head(model, Head(3, 0))
        Traceback (most recent call last):
        ...
        ValueError: unknown layer 3 in L3H0: valid layers are 0..2
    """
    if not 0 <= head.layer < model.n_layers:
        raise ValueError(
            f"unknown layer {head.layer} in {head.label}: valid layers are 0..{model.n_layers - 1}"
        )
    if not 0 <= head.head < model.n_heads:
        raise ValueError(
            f"unknown head {head.head} in {head.label}: valid heads are 0..{model.n_heads - 1}"
        )


def mask_for(model: LabModel, heads: Iterable[Head | str | tuple[int, int]]) -> LayerHeadMask:
    """A ``[n_layers, n_heads]`` float mask with zeros at ``heads`` and ones elsewhere.

    Example:
        >>> mask_for(model, ["L1H2", (2, 0)])
        tensor([[1., 1., 1., 1.],
                [1., 1., 0., 1.],
                [0., 1., 1., 1.]])
    """
    mask = torch.ones(model.n_layers, model.n_heads)
    for head in as_heads(heads):
        check_head(model, head)
        mask[head.layer, head.head] = 0.0
    return mask


def masks_for(model: LabModel, configs: Iterable[Iterable[Head | str] | None]) -> MaskBatch:
    """Stack one mask per configuration into ``[batch, n_layers, n_heads]`` (``None``: no ablation).

    Example:
        >>> masks = masks_for(model, [None, ["L0H1"]])
        >>> masks.shape, masks[1, 0].tolist()
        (torch.Size([2, 3, 4]), [1.0, 0.0, 1.0, 1.0])
    """
    rows = [mask_for(model, config or ()) for config in configs]
    if not rows:
        return torch.ones(0, model.n_layers, model.n_heads)
    return torch.stack(rows)


def _non_finite_message(mask: Tensor) -> str:
    """Where the first NaN/inf of ``mask`` is, and how many there are (only built on failure)."""
    bad = ~torch.isfinite(mask.detach())
    position = [int(i) for i in torch.nonzero(bad)[0]]
    value = float(mask.detach()[tuple(position)])
    layer, head = position[-2:]
    row = f"batch row {position[0]}, " if mask.dim() == 3 else ""
    count = int(bad.sum())
    more = f" ({count} non-finite entries in all)" if count > 1 else ""
    return (
        f"head mask holds {value} at {row}layer {layer} head {head} (L{layer}H{head}){more}; "
        "mask entries must be finite numbers (0 ablates a head, 1 keeps it)"
    )


def validate_mask(model: LabModel, mask: Tensor) -> Mask:
    """Check a mask's shape and values against ``model`` and return it as a float tensor.

    Args:
        model: the model the mask is for.
        mask: any tensor (or nested list); integer and boolean masks become float.

    Raises:
        InputError: (a ``ValueError``) if the mask is not ``[n_layers, n_heads]`` or
            ``[batch, n_layers, n_heads]``, or holds NaN or infinite values (the message names
            the first such layer and head).

    Example:
        >>> validate_mask(model, torch.ones(3, 4, dtype=torch.long)).dtype
        torch.float32
        >>> bad = torch.ones(2, 3, 4); bad[1, 2, 0] = float("nan")
        >>> validate_mask(model, bad)
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: head mask holds nan at batch row 1, layer 2 head 0 ...
    """
    mask = torch.as_tensor(mask)
    expected = (model.n_layers, model.n_heads)
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != expected:
        raise InputError(
            f"head mask has shape {tuple(mask.shape)}; expected [n_layers, n_heads] = "
            f"{list(expected)} or [batch, n_layers, n_heads] = "
            f"[batch, {expected[0]}, {expected[1]}]"
        )
    if not mask.is_floating_point():
        mask = mask.float()
    if not bool(torch.isfinite(mask).all()):  # one reduction; locate the problem only on failure
        raise InputError(_non_finite_message(mask))
    return mask


class HeadGate:
    """A live head mask attached to a model's ``hook_z`` points.

    Use :func:`head_mask` or :func:`ablate` to create one; generation code that drops finished
    rows from a batch updates the per-row mask in place with :meth:`set_mask` (hooks read the
    current mask at every forward call, so the prompt and every decoding step are gated).
    Only layers where the mask differs from 1 are hooked, so a gate on one layer costs one
    multiply per forward pass (and one multiply-add with a replacement).
    """

    def __init__(self, model: LabModel, mask: Mask, replacement: Replacement | None = None) -> None:
        self.model = model
        self._mask = validate_mask(model, mask)
        self._replacement = validate_replacement(model, self._mask, replacement)
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self._cast_replacement: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    @property
    def mask(self) -> Mask:
        """The current mask, ``[n_layers, n_heads]`` or ``[batch, n_layers, n_heads]``."""
        return self._mask

    @property
    def replacement(self) -> Replacement | None:
        """What ablated heads output instead of zero, or ``None`` (zero ablation)."""
        return self._replacement

    def set_mask(self, mask: Mask, replacement: Replacement | None = None) -> None:
        """Replace the mask (and the replacement, ``None`` for zero ablation).

        The set of hooked layers stays as it was when the gate opened.
        """
        self._mask = validate_mask(self.model, mask)
        self._replacement = validate_replacement(self.model, self._mask, replacement)
        self._cast.clear()
        self._cast_replacement.clear()

    def select_rows(self, rows: Int[Tensor, " kept"]) -> None:
        """Keep only batch ``rows`` of a per-row mask and replacement (shared ones stay).

        Rows of checked tensors need no new check, so this runs in the decoding loop cheaply.
        """
        if self._mask.dim() == 3:
            self._mask = self._mask[rows.to(self._mask.device)]
        if self._replacement is not None and self._replacement.dim() == 4:
            self._replacement = self._replacement[rows.to(self._replacement.device)]
        self._cast.clear()
        self._cast_replacement.clear()

    def active_layers(self) -> list[int]:
        """Layers whose mask is not all ones (or that need gradients)."""
        if self._mask.requires_grad:
            return list(range(self.model.n_layers))
        per_layer = self._mask.reshape(-1, *self._mask.shape[-2:]).ne(1).any(dim=0).any(dim=-1)
        return [int(layer) for layer in torch.nonzero(per_layer).flatten()]

    def _layer_factor(
        self, layer: int, z: Float[Tensor, "batch pos n_heads d_head"]
    ) -> Float[Tensor, "#batch 1 n_heads 1"]:
        key = (z.dtype, z.device)
        mask = self._cast.get(key)
        if mask is None:
            mask = self._mask.to(device=z.device, dtype=z.dtype)
            if not self._mask.requires_grad:
                self._cast[key] = mask
        layer_mask = mask[..., layer, :]  # [n_heads] or [batch, n_heads]
        if layer_mask.dim() == 1:
            return layer_mask[None, None, :, None]
        if layer_mask.shape[0] != z.shape[0]:
            raise ValueError(
                f"per-row head mask has {layer_mask.shape[0]} rows but the batch has {z.shape[0]}"
            )
        return layer_mask[:, None, :, None]

    def _layer_offset(
        self, layer: int, z: Float[Tensor, "batch pos n_heads d_head"]
    ) -> Float[Tensor, "#batch 1 n_heads d_head"] | None:
        """``(1 - m) * r`` of ``layer``, shaped to add to ``z`` (``None`` without a replacement)."""
        if self._replacement is None:
            return None
        key = (z.dtype, z.device)
        offset = self._cast_replacement.get(key)
        if offset is None:
            mask = self._mask.to(device=z.device, dtype=z.dtype)
            replacement = self._replacement.to(device=z.device, dtype=z.dtype)
            offset = (1 - mask)[..., None] * replacement
            if not self._mask.requires_grad:  # a differentiable mask is re-read every call
                self._cast_replacement[key] = offset
        layer_offset = offset[..., layer, :, :]  # [n_heads, d_head] or [batch, n_heads, d_head]
        if layer_offset.dim() == 2:
            return layer_offset[None, None]
        if layer_offset.shape[0] != z.shape[0]:
            raise ValueError(
                f"per-row replacement has {layer_offset.shape[0]} rows but the batch has "
                f"{z.shape[0]}"
            )
        return layer_offset[:, None]

    def hooks(self) -> list[tuple[str, GateHook]]:
        """``(hook name, hook function)`` pairs for ``bridge.hooks(fwd_hooks=...)``."""

        def make(layer: int) -> GateHook:
            def gate_hook(z: Tensor, hook: object) -> Tensor:  # z: [batch, pos, n_heads, d_head]
                gated = z * self._layer_factor(layer, z)
                offset = self._layer_offset(layer, z)
                return gated if offset is None else gated + offset

            return gate_hook

        return [(hook_z_name(layer), make(layer)) for layer in self.active_layers()]


def validate_replacement(
    model: LabModel, mask: Tensor, replacement: Tensor | None
) -> Replacement | None:
    """Check a replacement's shape against ``model`` and ``mask``; return it as a float tensor.

    Raises:
        InputError: for a shape other than ``[n_layers, n_heads, d_head]`` or
            ``[batch, n_layers, n_heads, d_head]``, a batch that differs from a per-row mask's,
            or NaN/inf values.

    Example:
        >>> validate_replacement(model, torch.ones(3, 4), torch.zeros(3, 4, 2))
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: head replacement has shape (3, 4, 2); expected ...
    """
    if replacement is None:
        return None
    replacement = torch.as_tensor(replacement)
    expected = (model.n_layers, model.n_heads, model.d_head)
    if replacement.dim() not in (3, 4) or tuple(replacement.shape[-3:]) != expected:
        raise InputError(
            f"head replacement has shape {tuple(replacement.shape)}; expected [n_layers, n_heads, "
            f"d_head] = {list(expected)} or [batch, n_layers, n_heads, d_head]"
        )
    if replacement.dim() == 4 and mask.dim() == 3 and replacement.shape[0] != mask.shape[0]:
        raise InputError(
            f"head replacement has {replacement.shape[0]} rows but the mask has {mask.shape[0]}"
        )
    if not replacement.is_floating_point():
        replacement = replacement.float()
    if not bool(torch.isfinite(replacement).all()):
        raise InputError("head replacement holds NaN or infinite values")
    return replacement


@contextmanager
def head_mask(
    model: LabModel, mask: Mask, replacement: Replacement | None = None
) -> Iterator[HeadGate]:
    """Multiply every head's output by ``mask`` while the block runs.

    The hooks are removed on every exit path: normal return, exception or
    ``KeyboardInterrupt``.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        mask: ``[n_layers, n_heads]`` or ``[batch, n_layers, n_heads]``; 0 ablates, 1 keeps.
        replacement: what ablated heads output instead of zero (``z * m + (1 - m) * r``),
            ``[n_layers, n_heads, d_head]`` or one per row; ``None`` zeroes them.

    Yields:
        The :class:`HeadGate` (its mask can be replaced mid-generation).

    Example:
        >>> mask = torch.ones(model.n_layers, model.n_heads); mask[1, 3] = 0
        >>> tokens = torch.tensor([[5, 6, 7]])
        >>> with torch.no_grad(), head_mask(model, mask) as gate:
        ...     logits = model.hf_model(tokens).logits
        >>> gate.active_layers(), logits.shape[:2]
        ([1], torch.Size([1, 3]))
    """
    gate = HeadGate(model, mask, replacement)
    lock = getattr(model, "lock", None) or contextlib.nullcontext()
    with lock, model.bridge.hooks(fwd_hooks=gate.hooks()):  # one gate per model at a time
        yield gate


@contextmanager
def ablate(model: LabModel, heads: Iterable[Head | str | tuple[int, int]]) -> Iterator[HeadGate]:
    """Zero the outputs of ``heads`` (at every position and decoding step) inside the block.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        heads: ``Head`` objects, labels such as ``"L3H5"`` or ``(layer, head)`` pairs.

    Raises:
        ValueError: for a layer or head the model does not have.

    Example:
        >>> with ablate(model, ["L2H1"]) as gate:
        ...     answer = sl.generate(model, ["Q: 2+2?\\nA:"], max_new_tokens=2)[0]
        >>> gate.mask[2].tolist(), answer.n_tokens
        ([1.0, 0.0, 1.0, 1.0], 2)
    """
    with head_mask(model, mask_for(model, heads)) as gate:
        yield gate
