"""Key/value cache plumbing shared by the decoders and the teacher-forced importance passes.

A cache is handled as a list with one ``(keys, values)`` pair per layer, each
``[rows, n_kv_heads, pos, d_head]``. A *prefix entry* is such a list for one row (``rows = 1``):
the few-shot prefix computed once under one head mask and reused for every question that shares
it. These helpers convert between that form and Hugging Face's ``DynamicCache``, split a batch
into per-row entries, and stack entries back into a batch.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import DynamicCache

KV = tuple[Float[Tensor, "rows n_kv_heads pos d_head"], Float[Tensor, "rows n_kv_heads pos d_head"]]
"""One layer's keys and values."""


def new_cache(layers: list[KV]) -> DynamicCache:
    """A Hugging Face ``DynamicCache`` holding ``layers`` (one ``(keys, values)`` per layer).

    Example:
        >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> new_cache([kv, kv]).get_seq_length()
        3
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(layers):
        cache.update(keys, values, layer)
    return cache


def cache_layers(cache: DynamicCache) -> list[KV]:
    """The ``(keys, values)`` of every layer of a ``DynamicCache`` (the inverse of :func:`new_cache`).

    Example:
        >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> [k.shape[2] for k, _ in cache_layers(new_cache([kv]))]
        [3]
    """
    return [(layer.keys, layer.values) for layer in cache.layers]


def split_rows(layers: list[KV], n: int) -> list[list[KV]]:
    """Per-layer ``[n, ...]`` key/value pairs -> one ``[1, ...]`` entry list per row.

    Example:
        >>> kv = (torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, 5, 4))
        >>> rows = split_rows([kv], 3)
        >>> len(rows), rows[0][0][0].shape
        (3, torch.Size([1, 2, 5, 4]))
    """
    return [[(k[i : i + 1], v[i : i + 1]) for k, v in layers] for i in range(n)]


def stack_entries(entries: dict[int, list[KV]], keys: list[int]) -> list[KV]:
    """Concatenate the prefix entries of ``keys`` (in order) along the batch, layer by layer.

    Example:
        >>> one = [(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))]
        >>> stack_entries({0: one, 1: one}, [0, 1, 0])[0][0].shape
        torch.Size([3, 2, 5, 4])
    """
    return [
        (
            torch.cat([entries[key][layer][0] for key in keys]),
            torch.cat([entries[key][layer][1] for key in keys]),
        )
        for layer in range(len(entries[keys[0]]))
    ]
