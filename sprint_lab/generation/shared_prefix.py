"""Shared-prefix attention: many rows, few prefixes, each prefix's keys and values read once.

A sweep batch holds many questions under a few head masks, and every prompt starts with the
same few-shot prefix. Ordinary batched decoding keeps one copy of the prefix's keys and values
per row and re-reads every copy at every step, which dominates decoding on a CPU. Here each
distinct (prefix, mask) keeps one copy, and the queries of all rows that share it meet it in one
matmul (the shared-prefix / cascade attention of Hydragen and FlashInfer); the prefix and the
per-row suffix scores share one softmax, so the result is ordinary causal attention.

The Hugging Face attention module still computes the projections, rotary embeddings and the
output projection ``o_proj``, whose input is TransformerLens' ``blocks.{layer}.attn.hook_z``
(the bridge routes ``o_proj`` through its hook point), so the head gate applies unchanged.
Only attention-internal bridge hooks (``hook_q``, ``hook_attn_scores``, ``hook_pattern``, ...)
do not fire on this path; :func:`shared_prefix_supported` tells whether a model can use it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

ATTENTION_NAME = "sprint_lab_shared_prefix"
STATE_KWARG = "sprint_lab_state"

KV = tuple[Tensor, Tensor]  # keys, values: [rows, n_kv_heads, pos, d_head]


class SharedPrefixState:
    """Keys and values of one batch: shared prefixes per group plus a per-row suffix store.

    Args:
        n_layers: number of layers.
        row_group: ``[batch]`` index of each row's prefix group.
        prefix: per layer, ``(keys, values)`` of shape ``[n_groups, n_kv_heads, prefix_len,
            d_head]``, or ``None`` for no prefix.
        capacity: suffix positions to reserve per row (prompt body plus new tokens).

    The suffix store is allocated on the first forward pass (when the head counts are known)
    and written in place, so decoding never concatenates caches.
    """

    def __init__(
        self,
        n_layers: int,
        row_group: Int[Tensor, " batch"],
        prefix: list[KV] | None,
        capacity: int,
    ) -> None:
        self.n_layers = n_layers
        self.prefix = prefix
        self.capacity = capacity
        self.length = 0  # suffix positions already stored
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers
        self.valid: Bool[Tensor, "batch capacity"] | None = None
        self._pending = 0
        self._mask: tuple[tuple, Tensor] | None = None  # per forward pass, see _suffix_mask
        self._set_rows(row_group)

    @property
    def batch_size(self) -> int:
        return int(self.row_group.shape[0])

    def _set_rows(self, row_group: Tensor) -> None:
        self.row_group = row_group
        self.groups: list[tuple[int, Tensor | None]] = []
        if self.prefix is None:
            return
        present = torch.unique(row_group).tolist()
        if len(present) == 1 and int(self.prefix[0][0].shape[0]) == 1:
            self.groups = [(present[0], None)]  # every row shares the only prefix
            return
        for group in present:
            self.groups.append((group, torch.nonzero(row_group == group).flatten()))

    def begin(self, valid: Bool[Tensor, "batch new"]) -> None:
        """Declare which of the positions about to be appended are real (not padding)."""
        if self.valid is None:
            self.valid = torch.zeros(
                (self.batch_size, self.capacity), dtype=torch.bool, device=valid.device
            )
        n = valid.shape[1]
        if self.length + n > self.capacity:
            raise RuntimeError(
                f"shared-prefix state holds {self.capacity} positions; cannot append {n} "
                f"after {self.length}"
            )
        self.valid[:, self.length : self.length + n] = valid
        self._pending = n
        self._mask = None  # built by the first layer, then reused

    def commit(self) -> None:
        """Advance past the positions of the forward pass that just ran."""
        self.length += self._pending
        self._pending = 0

    def select_rows(self, rows: Int[Tensor, " kept"]) -> None:
        """Keep only ``rows`` (finished rows leave the batch)."""
        for layer in range(self.n_layers):
            if self.keys[layer] is not None:
                self.keys[layer] = self.keys[layer].index_select(0, rows)
                self.values[layer] = self.values[layer].index_select(0, rows)
        if self.valid is not None:
            self.valid = self.valid.index_select(0, rows)
        self._set_rows(self.row_group.index_select(0, rows.to(self.row_group.device)))

    def stored(self) -> list[KV]:
        """Per layer, the stored suffix keys and values ``[batch, n_kv_heads, length, d_head]``."""
        return [
            (k[:, :, : self.length], v[:, :, : self.length])
            for k, v in zip(self.keys, self.values, strict=True)
        ]

    def attend(
        self,
        layer: int,
        query: Float[Tensor, "batch n_heads new d_head"],
        key: Float[Tensor, "batch n_kv_heads new d_head"],
        value: Float[Tensor, "batch n_kv_heads new d_head"],
        scaling: float,
    ) -> Float[Tensor, "batch new n_heads d_head"]:
        """Store this step's keys/values and attend over prefix + suffix (causal, padding off)."""
        batch, n_heads, new, d_head = query.shape
        n_kv = key.shape[1]
        group_size = n_heads // n_kv
        if self.keys[layer] is None:
            shape = (batch, n_kv, self.capacity, d_head)
            self.keys[layer] = key.new_zeros(shape)
            self.values[layer] = value.new_zeros(shape)
        start, end = self.length, self.length + new
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, start:end] = key
        values[:, :, start:end] = value
        # queries grouped by their kv head: [batch, n_kv, group_size * new, d_head]
        q = query.reshape(batch, n_kv, group_size * new, d_head)
        mask = self._suffix_mask(group_size, query.dtype, query.device)
        out, lse = _flash(q, keys[:, :, :end], values[:, :, :end], mask, scaling)
        if self.prefix is not None:
            prefix_out, prefix_lse = self._prefix_attention(q, *self.prefix[layer], scaling)
            total = torch.logaddexp(lse, prefix_lse)
            out = (
                out.float() * (lse - total).exp()[..., None]
                + prefix_out.float() * (prefix_lse - total).exp()[..., None]
            )
            out = out.to(query.dtype)
        # [batch, n_kv, g * new, d_head] -> [batch, new, n_heads, d_head]
        return out.reshape(batch, n_heads, new, d_head).transpose(1, 2)

    def _suffix_mask(
        self, group_size: int, dtype: torch.dtype, device: torch.device
    ) -> Float[Tensor, "batch 1 rows cols"]:
        """Additive mask over the stored suffix: padding and future positions get -inf.

        Built once per forward pass (every layer sees the same positions). Rows are the grouped
        queries ``[group_size * new]``.
        """
        key = (group_size, dtype, device)
        if self._mask is not None and self._mask[0] == key:
            return self._mask[1]
        start, end = self.length, self.length + self._pending
        positions = torch.arange(end, device=device)
        causal = positions[None, :] <= positions[start:end, None]  # [new, end]
        allowed = self.valid[:, None, None, :end] & causal  # [batch, 1, new, end]
        # a padding query may see nothing real; let every position see itself (no empty softmax)
        allowed = allowed | (positions[None, :] == positions[start:end, None])
        allowed = allowed.repeat(1, 1, group_size, 1)  # [batch, 1, g * new, end]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, float("-inf"))
        self._mask = (key, mask)
        return mask

    def _prefix_attention(
        self,
        q: Float[Tensor, "batch n_kv rows d_head"],
        keys: Float[Tensor, "groups n_kv prefix d_head"],
        values: Float[Tensor, "groups n_kv prefix d_head"],
        scaling: float,
    ) -> tuple[Float[Tensor, "batch n_kv rows d_head"], Float[Tensor, "batch n_kv rows"]]:
        """Attention of every row over its group's prefix: one kernel call per group."""
        batch, n_kv, rows, d_head = q.shape
        out = q.new_empty((batch, n_kv, rows, d_head))
        lse = torch.empty((batch, n_kv, rows), dtype=torch.float32, device=q.device)
        for group, index in self.groups:
            part = q if index is None else q.index_select(0, index)
            n = part.shape[0]
            flat = part.transpose(0, 1).reshape(1, n_kv, n * rows, d_head)
            group_out, group_lse = _flash(
                flat, keys[group : group + 1], values[group : group + 1], None, scaling
            )
            group_out = group_out.reshape(n_kv, n, rows, d_head).transpose(0, 1)
            group_lse = group_lse.reshape(n_kv, n, rows).transpose(0, 1)
            if index is None:
                out.copy_(group_out)
                lse.copy_(group_lse)
            else:
                out.index_copy_(0, index, group_out)
                lse.index_copy_(0, index, group_lse)
        return out, lse


def _flash(
    query: Float[Tensor, "batch heads rows d_head"],
    keys: Float[Tensor, "batch heads cols d_head"],
    values: Float[Tensor, "batch heads cols d_head"],
    mask: Float[Tensor, "batch 1 rows cols"] | None,
    scaling: float,
    fused: bool | None = None,
) -> tuple[Float[Tensor, "batch heads rows d_head"], Float[Tensor, "batch heads rows"]]:
    """Softmax attention with an additive mask, and its log-sum-exp (to merge two parts).

    ``fused=None`` uses PyTorch's fused CPU flash-attention kernel on CPU (float32
    accumulation, no score matrix in memory) and plain matmuls with a float32 softmax elsewhere.
    """
    if fused is None:
        fused = query.device.type == "cpu"
    if fused:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query.contiguous(),
            keys.contiguous(),
            values.contiguous(),
            0.0,
            False,
            attn_mask=mask,
            scale=scaling,
        )
        return out, lse.float()
    scores = torch.matmul(query, keys.transpose(-1, -2)).float() * scaling
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    weights = (scores - lse[..., None]).exp().to(query.dtype)
    return torch.matmul(weights, values), lse


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The ``AttentionInterface`` function; the batch's state rides in the forward kwargs."""
    state = kwargs.get(STATE_KWARG)
    if state is None:
        raise RuntimeError(
            f"attention {ATTENTION_NAME!r} needs a SharedPrefixState passed as {STATE_KWARG}="
        )
    if kwargs.get("sliding_window") is not None:
        raise RuntimeError("shared-prefix attention does not support sliding-window layers")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return state.attend(module.layer_idx, query, key, value, scaling), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None  # the state masks padding and future positions itself


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)


_register()


def _attention_bridges(model) -> list[Any]:
    return [block.attn for block in model.bridge.blocks]


@functools.lru_cache(maxsize=64)
def _dispatches_attention(cls: type) -> bool:
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def shared_prefix_supported(model) -> bool:
    """Whether ``model`` can decode with shared-prefix attention.

    True when each layer's Hugging Face attention dispatches through ``AttentionInterface`` and
    no layer uses a sliding window, logit soft-capping or attention sinks; otherwise generation
    falls back to the bridge's own attention.
    """
    config = model.hf_model.config
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return False
    for bridge in _attention_bridges(model):
        hf_attn = getattr(bridge, "original_component", None)
        if hf_attn is None or not hasattr(hf_attn, "layer_idx"):
            return False
        if getattr(hf_attn, "sliding_window", None) is not None:
            return False
        if getattr(hf_attn, "sinks", None) is not None:
            return False
        if not _dispatches_attention(type(hf_attn)):
            return False
    return True


def bridge_only_hooks(model) -> list[str]:
    """Hook points with hooks attached that fire only inside the bridge's own attention.

    These are the attention bridge's internal points (``hook_attn_scores``, ``hook_pattern``,
    ``hook_rot_q``, ...); the shared-prefix path skips them, so a user hook on one of them
    means generation must run the bridge's attention. Points inside the projections
    (``hook_q``, ``hook_z``, ...) fire on both paths.

    Example:
        >>> bridge_only_hooks(model)            # doctest: +SKIP
        []
    """
    from transformer_lens.hook_points import HookPoint

    names = []
    for layer, bridge in enumerate(_attention_bridges(model)):
        for name, child in bridge.named_children():
            if name in ("hook_in", "hook_out") or not isinstance(child, HookPoint):
                continue
            if child._forward_hooks or child._forward_pre_hooks or child._backward_hooks:
                names.append(f"blocks.{layer}.attn.{name}")
    return names


def _hf_forward(bridge, hf_attn, *args: Any, **kwargs: Any):
    if args:
        hidden_states, args = args[0], args[1:]
    else:
        hidden_states = kwargs.pop("hidden_states")
    output = hf_attn(bridge.hook_in(hidden_states), *args, **kwargs)
    return (bridge.hook_out(output[0]), *output[1:])


@contextlib.contextmanager
def shared_prefix_attention(model) -> Iterator[None]:
    """Inside the block, the model's attention runs as shared-prefix attention.

    Each layer's attention bridge delegates to its Hugging Face module (whose ``o_proj`` is the
    bridge's hook point, so ``hook_z`` hooks fire), and the attention implementation is
    :data:`ATTENTION_NAME`. Forward calls must pass a :class:`SharedPrefixState` as
    ``sprint_lab_state=``. Everything is restored on exit, also after an exception.

    Raises:
        ValueError: if :func:`shared_prefix_supported` is false for ``model``.

    Example:
        >>> rows = torch.zeros(1, dtype=torch.long)  # one row, no prefix groups
        >>> state = SharedPrefixState(model.n_layers, rows, None, 16)  # doctest: +SKIP
        >>> state.begin(torch.ones(1, 5, dtype=torch.bool))  # doctest: +SKIP
        >>> with shared_prefix_attention(model):  # doctest: +SKIP
        ...     out = model.hf_model(input_ids=ids, use_cache=False, sprint_lab_state=state)
        >>> state.commit()  # doctest: +SKIP
    """
    if not shared_prefix_supported(model):
        raise ValueError(f"{model.name} cannot use shared-prefix attention")
    bridges = _attention_bridges(model)
    configs = {id(model.hf_model.config): model.hf_model.config}
    for bridge in bridges:
        config = getattr(bridge.original_component, "config", None)
        if config is not None:
            configs[id(config)] = config
    previous = {key: config._attn_implementation for key, config in configs.items()}
    lock = getattr(model, "lock", None) or contextlib.nullcontext()
    with lock:
        try:
            for bridge in bridges:
                hf_attn = bridge.original_component
                # the bridge forwards attribute writes to the wrapped module; bypass that
                object.__setattr__(
                    bridge, "forward", functools.partial(_hf_forward, bridge, hf_attn)
                )
            for config in configs.values():
                config._attn_implementation = ATTENTION_NAME
            yield
        finally:
            for key, config in configs.items():
                config._attn_implementation = previous[key]
            for bridge in bridges:
                if "forward" in bridge.__dict__:
                    object.__delattr__(bridge, "forward")
