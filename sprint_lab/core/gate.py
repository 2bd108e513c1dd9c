"""The head gate: the one mechanism sprint_lab uses to switch attention heads off.

Each layer's attention output, just before the output projection ``o_proj``, is the
concatenation of the per-head outputs ``z`` (TransformerLens hook point
``blocks.{layer}.attn.hook_z``, shape ``[batch, pos, n_heads, d_head]``, one slot per *query*
head even under grouped-query attention). The gate multiplies ``z`` by a mask: 1 keeps a head,
0 ablates it (exactly like zeroing that head's ``o_proj`` input columns), and a differentiable
mask at 1 gives Michel et al.'s importance gradient. A mask is ``[n_layers, n_heads]`` (same for
the whole batch) or ``[batch, n_layers, n_heads]`` (one configuration per batch row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sprint_lab.core.heads import Head, as_heads

Mask = Float[Tensor, "n_layers n_heads"] | Float[Tensor, "batch n_layers n_heads"]


def hook_z_name(layer: int) -> str:
    """Name of the hook point the gate acts on: the input of layer ``layer``'s ``o_proj``.

    Example:
        >>> hook_z_name(3)
        'blocks.3.attn.hook_z'
    """
    return f"blocks.{layer}.attn.hook_z"


def check_head(model: Any, head: Head) -> None:
    """Raise ``ValueError`` naming the valid ranges if ``head`` does not exist in ``model``."""
    if not 0 <= head.layer < model.n_layers:
        raise ValueError(
            f"unknown layer {head.layer} in {head.label}: valid layers are 0..{model.n_layers - 1}"
        )
    if not 0 <= head.head < model.n_heads:
        raise ValueError(
            f"unknown head {head.head} in {head.label}: valid heads are 0..{model.n_heads - 1}"
        )


def mask_for(model: Any, heads: Iterable[Head | str | tuple[int, int]]) -> Tensor:
    """A ``[n_layers, n_heads]`` float mask with zeros at ``heads`` and ones elsewhere.

    Example:
        >>> from types import SimpleNamespace
        >>> mask_for(SimpleNamespace(n_layers=2, n_heads=3), ["L1H2"])
        tensor([[1., 1., 1.],
                [1., 1., 0.]])
    """
    mask = torch.ones(model.n_layers, model.n_heads)
    for head in as_heads(heads):
        check_head(model, head)
        mask[head.layer, head.head] = 0.0
    return mask


def masks_for(model: Any, configs: Iterable[Iterable[Head | str] | None]) -> Tensor:
    """Stack one mask per configuration into ``[batch, n_layers, n_heads]`` (``None``: no ablation).

    Example:
        >>> from types import SimpleNamespace
        >>> masks_for(SimpleNamespace(n_layers=1, n_heads=2), [None, ["L0H1"]]).tolist()
        [[[1.0, 1.0]], [[1.0, 0.0]]]
    """
    rows = [mask_for(model, config or ()) for config in configs]
    if not rows:
        return torch.ones(0, model.n_layers, model.n_heads)
    return torch.stack(rows)


def validate_mask(model: Any, mask: Tensor) -> Tensor:
    """Check a mask's shape against ``model`` and return it as a float tensor.

    Raises:
        ValueError: if the mask is not ``[n_layers, n_heads]`` or ``[batch, n_layers, n_heads]``.
    """
    mask = torch.as_tensor(mask)
    expected = (model.n_layers, model.n_heads)
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != expected:
        raise ValueError(
            f"head mask has shape {tuple(mask.shape)}; expected [n_layers, n_heads] = "
            f"{list(expected)} or [batch, n_layers, n_heads] = "
            f"[batch, {expected[0]}, {expected[1]}]"
        )
    if not mask.is_floating_point():
        mask = mask.float()
    return mask


class HeadGate:
    """A live head mask attached to a model's ``hook_z`` points.

    Use :func:`head_mask` or :func:`ablate` to create one; generation code that drops finished
    rows from a batch updates the per-row mask in place with :meth:`set_mask` (hooks read the
    current mask at every forward call, so the prompt and every decoding step are gated).
    Only layers where the mask differs from 1 are hooked, so a gate on one layer costs one
    multiply per forward pass.
    """

    def __init__(self, model: Any, mask: Tensor) -> None:
        self.model = model
        self._mask = validate_mask(model, mask)
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    @property
    def mask(self) -> Tensor:
        """The current mask, ``[n_layers, n_heads]`` or ``[batch, n_layers, n_heads]``."""
        return self._mask

    def set_mask(self, mask: Tensor) -> None:
        """Replace the mask. The set of hooked layers stays as it was when the gate opened."""
        self._mask = validate_mask(self.model, mask)
        self._cast.clear()

    def select_rows(self, rows: Tensor) -> None:
        """Keep only batch ``rows`` of a per-row mask (a shared mask is left alone)."""
        if self._mask.dim() == 3:
            self.set_mask(self._mask[rows.to(self._mask.device)])

    def active_layers(self) -> list[int]:
        """Layers whose mask is not all ones (or that need gradients)."""
        if self._mask.requires_grad:
            return list(range(self.model.n_layers))
        per_layer = self._mask.reshape(-1, *self._mask.shape[-2:]).ne(1).any(dim=0).any(dim=-1)
        return [int(layer) for layer in torch.nonzero(per_layer).flatten()]

    def _layer_factor(self, layer: int, z: Tensor) -> Tensor:
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

    def hooks(self) -> list[tuple[str, Any]]:
        """``(hook name, hook function)`` pairs for ``bridge.hooks(fwd_hooks=...)``."""

        def make(layer: int):
            def gate_hook(z: Tensor, hook: Any) -> Tensor:  # z: [batch, pos, n_heads, d_head]
                return z * self._layer_factor(layer, z)

            return gate_hook

        return [(hook_z_name(layer), make(layer)) for layer in self.active_layers()]


@contextmanager
def head_mask(model: Any, mask: Mask) -> Iterator[HeadGate]:
    """Multiply every head's output by ``mask`` while the block runs.

    The hooks are removed on every exit path: normal return, exception or
    ``KeyboardInterrupt``.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        mask: ``[n_layers, n_heads]`` or ``[batch, n_layers, n_heads]``; 0 ablates, 1 keeps.

    Yields:
        The :class:`HeadGate` (its mask can be replaced mid-generation).

    Example:
        >>> mask = torch.ones(model.n_layers, model.n_heads); mask[3, 5] = 0  # doctest: +SKIP
        >>> with head_mask(model, mask):                                        # doctest: +SKIP
        ...     logits = model.hf_model(tokens).logits
    """
    gate = HeadGate(model, mask)
    lock = getattr(model, "lock", None) or contextlib.nullcontext()
    with lock, model.bridge.hooks(fwd_hooks=gate.hooks()):  # one gate per model at a time
        yield gate


@contextmanager
def ablate(model: Any, heads: Iterable[Head | str | tuple[int, int]]) -> Iterator[HeadGate]:
    """Zero the outputs of ``heads`` (at every position and decoding step) inside the block.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        heads: ``Head`` objects, labels such as ``"L3H5"`` or ``(layer, head)`` pairs.

    Raises:
        ValueError: for a layer or head the model does not have.

    Example:
        >>> with ablate(model, ["L3H5"]):                    # doctest: +SKIP
        ...     print(generate(model, ["Q: 2+2?\\nA:"])[0].text)
    """
    with head_mask(model, mask_for(model, heads)) as gate:
        yield gate
