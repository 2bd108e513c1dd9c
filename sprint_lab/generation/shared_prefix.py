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
do not fire on this path. This module holds the kernel (:class:`SharedPrefixState`,
:func:`flash_attention`); :mod:`sprint_lab.generation.attention_swap` plugs it into a model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sprint_lab.generation.kv import KV


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
        store = self.valid
        if store is None:
            store = torch.zeros(
                (self.batch_size, self.capacity), dtype=torch.bool, device=valid.device
            )
            self.valid = store
        n = valid.shape[1]
        if self.length + n > self.capacity:
            raise RuntimeError(
                f"shared-prefix state holds {self.capacity} positions; cannot append {n} "
                f"after {self.length}"
            )
        store[:, self.length : self.length + n] = valid
        self._pending = n
        self._mask = None  # built by the first layer, then reused

    def commit(self) -> None:
        """Advance past the positions of the forward pass that just ran."""
        self.length += self._pending
        self._pending = 0

    def select_rows(self, rows: Int[Tensor, " kept"]) -> None:
        """Keep only ``rows`` (finished rows leave the batch)."""
        for layer in range(self.n_layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is not None and values is not None:
                self.keys[layer] = keys.index_select(0, rows)
                self.values[layer] = values.index_select(0, rows)
        if self.valid is not None:
            self.valid = self.valid.index_select(0, rows)
        self._set_rows(self.row_group.index_select(0, rows.to(self.row_group.device)))

    def stored(self) -> list[KV]:
        """Per layer, the stored suffix keys and values ``[batch, n_kv_heads, length, d_head]``.

        Raises:
            RuntimeError: before the first forward pass (nothing is stored yet).
        """
        layers = []
        for keys, values in zip(self.keys, self.values, strict=True):
            if keys is None or values is None:
                raise RuntimeError("nothing stored yet: run a forward pass first")
            layers.append((keys[:, :, : self.length], values[:, :, : self.length]))
        return layers

    def layer_store(self, layer: int, key: Tensor, value: Tensor) -> KV:
        """The suffix store of ``layer`` (allocated on the first forward pass, zero-filled)."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            shape = (key.shape[0], key.shape[1], self.capacity, key.shape[3])
            keys, values = key.new_zeros(shape), value.new_zeros(shape)
            self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def per_group(
        self,
        query: Float[Tensor, "batch n_kv rows d_head"],
        attend_group: Callable[[Tensor, int], tuple[Tensor, Tensor]],
    ) -> tuple[Float[Tensor, "batch n_kv rows d_head"], Float[Tensor, "batch n_kv rows"]]:
        """Run ``attend_group(rows_query, group)`` for each prefix group, gathered back in order.

        ``attend_group`` returns ``(out, lse)`` shaped like its query rows.
        """
        batch, n_kv, rows, d_head = query.shape
        out = query.new_empty((batch, n_kv, rows, d_head))
        lse = torch.empty((batch, n_kv, rows), dtype=torch.float32, device=query.device)
        for group, index in self.groups:
            part = query if index is None else query.index_select(0, index)
            group_out, group_lse = attend_group(part, group)
            if index is None:
                out.copy_(group_out)
                lse.copy_(group_lse)
            else:
                out.index_copy_(0, index, group_out)
                lse.index_copy_(0, index, group_lse)
        return out, lse

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
        keys, values = self.layer_store(layer, key, value)
        start, end = self.length, self.length + new
        keys[:, :, start:end] = key
        values[:, :, start:end] = value
        # queries grouped by their kv head: [batch, n_kv, group_size * new, d_head]
        q = query.reshape(batch, n_kv, group_size * new, d_head)
        mask = self._suffix_mask(group_size, query.dtype, query.device)
        out, lse = flash_attention(q, keys[:, :, :end], values[:, :, :end], mask, scaling)
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
        valid = self.valid
        if valid is None:
            raise RuntimeError("begin() must declare the new positions before attention runs")
        allowed = valid[:, None, None, :end] & causal  # [batch, 1, new, end]
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
        _, n_kv, rows, d_head = q.shape

        def attend_group(part: Tensor, group: int) -> tuple[Tensor, Tensor]:
            n = part.shape[0]
            flat = part.transpose(0, 1).reshape(1, n_kv, n * rows, d_head)
            group_out, group_lse = flash_attention(
                flat, keys[group : group + 1], values[group : group + 1], None, scaling
            )
            group_out = group_out.reshape(n_kv, n, rows, d_head).transpose(0, 1)
            return group_out, group_lse.reshape(n_kv, n, rows).transpose(0, 1)

        return self.per_group(q, attend_group)


def flash_attention(
    query: Float[Tensor, "batch heads rows d_head"],
    keys: Float[Tensor, "batch heads cols d_head"],
    values: Float[Tensor, "batch heads cols d_head"],
    mask: Float[Tensor, "batch 1 rows cols"] | None,
    scaling: float,
    fused: bool | None = None,
) -> tuple[Float[Tensor, "batch heads rows d_head"], Float[Tensor, "batch heads rows"]]:
    """Softmax attention with an additive mask, and its log-sum-exp (to merge two parts).

    Two attention results over disjoint key sets merge exactly through their log-sum-exps
    ``lse_a`` and ``lse_b``: ``out = out_a * exp(lse_a - lse) + out_b * exp(lse_b - lse)`` with
    ``lse = logaddexp(lse_a, lse_b)``; that is how prefix and suffix attention combine.

    Args:
        query: queries (grouped-query heads folded into ``rows``).
        keys: keys of the same heads.
        values: values of the same heads.
        mask: additive mask (``0`` or ``-inf``), broadcast over heads; ``None`` for none.
        scaling: the softmax scale (usually ``d_head ** -0.5``).
        fused: ``None`` uses PyTorch's fused CPU flash-attention kernel on CPU (float32
            accumulation, no score matrix in memory) and plain matmuls with a float32 softmax
            elsewhere; ``True``/``False`` force one.

    Returns:
        ``(out, lse)``: the attention output and the float32 log-sum-exp of the scores.

    Example:
        >>> q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
        >>> fused, lse = flash_attention(q, k, v, None, 8**-0.5)
        >>> plain, _ = flash_attention(q, k, v, None, 8**-0.5, fused=False)
        >>> lse.shape, torch.allclose(fused, plain, atol=1e-5)
        (torch.Size([1, 2, 3]), True)
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
