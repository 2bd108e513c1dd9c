"""Key/value caches and prompt layout shared by the decoders and the teacher-forced passes.

A cache is handled as a list with one ``(keys, values)`` pair per layer, each
``[rows, n_kv_heads, pos, d_head]``. A *prefix entry* is such a list for one row (``rows = 1``):
the few-shot prefix computed once under one head mask and reused for every question that shares
it (prefix caching). These helpers convert between that form and Hugging Face's
``DynamicCache``, split a batch into per-row entries, stack entries back into a batch, keep
entries in an LRU store (:class:`PrefixCache`) and lay the prompt bodies that follow a prefix out
as a left-padded batch (:func:`left_pad`).

Rows are laid out as ``[prefix][padding][body]``: the padding is masked out and the position ids
skip it, so each row computes exactly what it would alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache

KV = tuple[Float[Tensor, "rows n_kv_heads pos d_head"], Float[Tensor, "rows n_kv_heads pos d_head"]]
"""One layer's keys and values for a batch of ``rows``."""

RowKV = tuple[Float[Tensor, "1 n_kv_heads pos d_head"], Float[Tensor, "1 n_kv_heads pos d_head"]]
"""One layer's keys and values for a single row."""

PrefixEntry = list[RowKV]
"""The key/value cache of one prefix under one head mask: one :data:`RowKV` per layer."""


def new_cache(layers: list[KV]) -> DynamicCache:
    """A Hugging Face ``DynamicCache`` holding ``layers`` (one ``(keys, values)`` per layer).

    Example:
        >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> new_cache([kv, kv]).get_seq_length()
        3
    """
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(layers):
        cache.update(keys, values, layer)
    return cache


def cache_layers(cache: DynamicCache) -> list[KV]:
    """The ``(keys, values)`` of every layer of a ``DynamicCache`` (inverse of :func:`new_cache`).

    Example:
        >>> kv = (torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> [k.shape[2] for k, _ in cache_layers(new_cache([kv]))]
        [3]
    """
    # attention layers (the only kind sprint_lab caches) are DynamicLayers with keys and values
    return [(layer.keys, layer.values) for layer in cache.layers]  # pyright: ignore


def split_rows(layers: list[KV], n: int) -> list[PrefixEntry]:
    """Per-layer ``[n, ...]`` key/value pairs -> one ``[1, ...]`` entry list per row.

    Example:
        >>> kv = (torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, 5, 4))
        >>> rows = split_rows([kv], 3)
        >>> len(rows), rows[0][0][0].shape
        (3, torch.Size([1, 2, 5, 4]))
    """
    return [[(k[i : i + 1], v[i : i + 1]) for k, v in layers] for i in range(n)]


def stack_entries(entries: dict[int, PrefixEntry], keys: list[int]) -> list[KV]:
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


class PrefixCache:
    """LRU store of key/value caches for shared prompt prefixes, keyed by (prefix, mask).

    The cache of a prefix depends on the head mask (the gate acts on every prompt position),
    so each configuration has its own entry. Entries are :data:`PrefixEntry` lists: ``[n_layers]``
    pairs of tensors of shape ``[1, n_kv_heads, prefix_len, d_head]``.

    Args:
        max_entries: how many entries to keep; the least recently used one goes first.

    Example:
        >>> store = PrefixCache(max_entries=1)
        >>> entry = [(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))]
        >>> store.put(("a",), entry); store.put(("b",), entry)
        >>> store.get(("a",)) is None, store.get(("b",)) is entry, store.hits, store.misses
        (True, True, 1, 2)
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._store: OrderedDict[Hashable, PrefixEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> PrefixEntry | None:
        """The entry stored under ``key`` (now the most recently used), or ``None``."""
        entry = self._store.get(key)
        if entry is not None:
            self._store.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, key: Hashable, value: PrefixEntry) -> None:
        """Store a freshly computed entry (counted as a miss), evicting the oldest if full."""
        self.misses += 1
        self._store[key] = value
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the hit and miss counts stay)."""
        self._store.clear()


class PaddedBodies(NamedTuple):
    """Prompt bodies laid out as a left-padded batch (see :func:`left_pad`).

    Attributes:
        ids: token ids, padding on the left.
        body_mask: 1 at real tokens, 0 at padding.
        positions: position ids, counting on from the prefix and skipping the padding.
    """

    ids: Int[Tensor, "batch width"]
    body_mask: Int[Tensor, "batch width"]
    positions: Int[Tensor, "batch width"]


def left_pad(bodies: Sequence[Sequence[int]], prefix_len: int, pad_id: int) -> PaddedBodies:
    """Left-pad the token ids that follow a ``prefix_len``-token prefix into one batch.

    Raises:
        ValueError: if every body is empty (nothing to condition generation on).

    Example:
        >>> padded = left_pad([[7, 8], [9]], prefix_len=3, pad_id=0)
        >>> padded.ids.tolist(), padded.body_mask.tolist(), padded.positions.tolist()
        ([[7, 8], [0, 9]], [[1, 1], [0, 1]], [[3, 4], [0, 3]])
    """
    width = max((len(body) for body in bodies), default=0)
    if width == 0:
        raise ValueError("empty prompt: nothing to condition generation on")
    ids = torch.full((len(bodies), width), pad_id, dtype=torch.long)
    body_mask = torch.zeros((len(bodies), width), dtype=torch.long)
    positions = torch.zeros((len(bodies), width), dtype=torch.long)
    for i, body in enumerate(bodies):
        n = len(body)
        if n:
            ids[i, width - n :] = torch.tensor(body)
            body_mask[i, width - n :] = 1
            positions[i, width - n :] = torch.arange(prefix_len, prefix_len + n)
    return PaddedBodies(ids, body_mask, positions)
