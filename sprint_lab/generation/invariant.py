"""Batch-invariant generation: a row's tokens do not depend on the batch it lands in.

A sweep packs (question, configuration) pairs into mixed batches, so unless every operation
computes a row the same way whatever else shares its batch, part of a head's measured delta is
arithmetic noise. What made a row's result depend on its batch, measured on a 2-core x86 CPU
(torch 2.13 CPU build):

1. **Matrix products pick their kernel by shape.** In float32, ``x @ W`` for at most 3 rows
   takes another kernel than for 4 or more: row 0 of a 576 -> 1,536 projection differs in 1,192
   of 1,536 outputs between 1 and 2 rows. A decoding batch is exactly that small once most of its
   rows have finished, and a prefill's row count is the batch's padded width.
2. **The fused CPU flash-attention kernel** gives different results for 1 and 2 threads (5 of
   576 outputs of one row), and its block sizes follow the batch's padded width and row count.
3. **Left padding** moves a row's keys within the padded width, so vectorised softmax and value
   sums group its terms differently.
4. **Rows leaving mid-batch** shrink the row count (see 1).
5. **A query's slot in its attention block.** Prefill queries go in blocks of
   :data:`QUERY_BLOCK` positions; with left padding, a row's t-th token sat at another slot
   (and sometimes another block) when the batch's padded width changed. Found by
   ``benchmarks/bench_invariance.py``: 1 of 88 bfloat16 answers differed between batch size 1
   and 32 even with fixed-shape linears; the layer-by-layer trace showed equal inputs and a
   different attention output. Queries are now gathered so that token t of every row is slot
   t, and scattered back.
6. **Elementwise exp/log over tiny per-row tensors** (the log-sum-exp merge of the prefix and
   suffix parts, ``[rows, heads, m]``): after the fix above, one decoding step still gave a
   last-bit difference in the merge between 8 rows and 1. Running every exp/log/logaddexp on
   rows padded to :data:`LANES` values (:func:`rowwise`) removed it; a standalone reproduction
   with random tensors did not show the difference, so the exact kernel path is not pinned down.
7. Norms, rotary embeddings, activations, the head gate and, by measurement, a GEMM row's
   position inside a fixed-shape tile, did not depend on the batch.

Under :func:`batch_invariant` (``sweep``'s default wherever the shared-prefix attention runs, see
:func:`sprint_lab.sweeps.run.invariance_available`; ``generate(..., deterministic=True)``) every
operation a row goes through has a shape of its own:

* every ``torch.nn.Linear`` of the model (the projections, ``o_proj``, the MLP and the LM head)
  runs in tiles of exactly :data:`TILE_ROWS` rows, the last tile padded with zeros;
* attention (the shared-prefix kernel, :class:`InvariantPrefixState`) stores each row's own keys
  from index 0 (no padding inside the store), reduces scores and values over fixed chunks of
  :data:`CHUNK` keys (masked past the row's end), and accumulates the chunks in order in float32,
  so all-masked chunks add exact zeros; queries go in blocks of :data:`QUERY_BLOCK` positions
  while prefilling (token t of every row in slot t) and one position while decoding; shared
  prefix keys are read with a broadcast (stride 0) batched product, one per key/value head,
  never copied per row, in one chunk as wide as the prefix (its width does not depend on the
  batch); every exp/log runs through :func:`rowwise`.

``benchmarks/bench_invariance.py`` counts the (question, configuration) pairs whose tokens differ
between batch sizes, mixed and single-configuration batches and executors, with and without it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from sprint_lab.generation.kv import KV
from sprint_lab.generation.shared_prefix import SharedPrefixState

__all__ = [
    "CHUNK",
    "QUERY_BLOCK",
    "InvariantPrefixState",
    "TILE_ROWS",
    "batch_invariant",
    "chunked_attention",
    "invariant_active",
    "LANES",
    "prefix_state",
    "rowwise",
    "tiled_linear",
]

TILE_ROWS = 32
"""Rows per ``linear`` call under :func:`batch_invariant`."""

CHUNK = 256
"""Keys per reduction chunk in :func:`chunked_attention`."""

QUERY_BLOCK = 64
"""Query positions per attention call while prefilling."""

LANES = 256
"""Values per row of every exp/log in :func:`rowwise` (a multiple of 16 lanes x 16 threads)."""

_BATCHED_DTYPES = (torch.float32, torch.float64)
"""Dtypes whose tiles go through one batched product (``torch.bmm`` runs each tile as its own
``tile x d_in`` product; measured equal, bit for bit, to one ``F.linear`` call per tile, and 1.3x to
3x faster for long prefills). CPU ``bmm`` in bfloat16 has no fast kernel, so bfloat16 tiles loop."""

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sprint_lab_invariant", default=False
)


def tiled_linear(
    x: Float[Tensor, "*rows d_in"],
    weight: Float[Tensor, "d_out d_in"],
    bias: Float[Tensor, " d_out"] | None = None,
    tile: int = TILE_ROWS,
) -> Float[Tensor, "*rows d_out"]:
    """``F.linear`` computed ``tile`` rows at a time (the last tile zero-padded).

    Each call has the same shape whatever the number of rows, so a row's output does not depend
    on how many other rows there are or where it sits.

    Example:
        >>> w = torch.randn(5, 3)
        >>> x = torch.randn(7, 3)
        >>> bool(torch.allclose(tiled_linear(x, w, tile=4), x @ w.T, atol=1e-6))
        True
        >>> bool((tiled_linear(x[:1], w, tile=4) == tiled_linear(x, w, tile=4)[:1]).all())
        True
    """
    leading = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    padding = (-n) % tile
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding, flat.shape[1])])
    if flat.dtype in _BATCHED_DTYPES and len(flat):
        tiles = flat.reshape(-1, tile, flat.shape[1])
        out = torch.bmm(tiles, weight.T.expand(tiles.shape[0], -1, -1)).reshape(-1, weight.shape[0])
        out = out[:n] if bias is None else out[:n] + bias
    else:
        parts = [
            F.linear(flat[start : start + tile], weight, bias)
            for start in range(0, len(flat), tile)
        ]
        out = torch.cat(parts)[:n] if parts else flat.new_zeros(0, weight.shape[0])
    return out.reshape(*leading, weight.shape[0])


def invariant_active() -> bool:
    """Whether the current code runs under :func:`batch_invariant`."""
    return _ACTIVE.get()


def _tiled_forward(module: torch.nn.Linear):
    def forward(input: Tensor) -> Tensor:  # noqa: A002  (nn.Linear.forward's own name)
        return tiled_linear(input, module.weight, module.bias)

    return forward


@contextlib.contextmanager
def batch_invariant(model: Any) -> Iterator[None]:
    """Run the enclosed generation on ``model`` with batch-invariant linears and attention.

    Every ``torch.nn.Linear`` of ``model.hf_model`` computes in :func:`tiled_linear` tiles while
    the context is open (its own ``forward`` is restored on exit, also after an error), and the
    decoders build :class:`InvariantPrefixState` attention state.

    Example:
        >>> linears = [m for m in model.hf_model.modules() if isinstance(m, torch.nn.Linear)]
        >>> with batch_invariant(model):
        ...     invariant_active(), all("forward" in vars(m) for m in linears)
        (True, True)
        >>> invariant_active(), any("forward" in vars(m) for m in linears)
        (False, False)
    """
    linears = [m for m in model.hf_model.modules() if isinstance(m, torch.nn.Linear)]
    token = _ACTIVE.set(True)
    try:
        for module in linears:
            module.forward = _tiled_forward(module)
        yield
    finally:
        for module in linears:
            vars(module).pop("forward", None)
        _ACTIVE.reset(token)


def rowwise(fn: Any, *tensors: Tensor) -> Tensor:
    """An elementwise ``fn`` over ``[rows, ...]`` tensors, each row padded to :data:`LANES` values.

    CPU elementwise kernels run whole vectors and finish a range's tail with scalar code (and
    split large ranges between threads); a vectorised ``exp``/``log`` can differ from the scalar
    one in the last bit. Padding each row to a multiple of :data:`LANES` puts every row's values
    in whole vectors at fixed offsets, whatever the number of rows.

    Example:
        >>> x = torch.randn(3, 2, 5)
        >>> bool(torch.equal(rowwise(torch.exp, x)[:1], rowwise(torch.exp, x[:1])))
        True
    """
    shape = tensors[0].shape
    flat = [t.reshape(shape[0], -1) for t in tensors]
    width = flat[0].shape[1]
    if width % LANES:
        flat = [F.pad(t, (0, (-width) % LANES)) for t in flat]
    return fn(*flat)[:, :width].reshape(shape)


def _products(a: Tensor, b: Tensor, shared: bool) -> Tensor:
    """``a @ b`` over ``[rows, heads, m, k] x [rows or 1, heads, k, n]``.

    A ``shared`` ``b`` (one prefix for many rows) is read through a stride-0 view, one batched
    product per head, so it is never copied per row and every product has the same shape.
    """
    if not shared:
        return torch.matmul(a, b)
    rows, heads = a.shape[0], a.shape[1]
    return torch.stack(
        [torch.bmm(a[:, h], b[0, h].expand(rows, -1, -1)) for h in range(heads)], dim=1
    )


def chunked_attention(
    query: Float[Tensor, "rows heads m d_head"],
    keys: Float[Tensor, "krows heads width d_head"],
    values: Float[Tensor, "krows heads width d_head"],
    allowed: Bool[Tensor, "mrows 1 m width"],
    scaling: float,
    chunk: int = CHUNK,
    shared: bool = False,
) -> tuple[Float[Tensor, "rows heads m d_head"], Float[Tensor, "rows heads m"]]:
    """Softmax attention reduced in fixed chunks of keys, accumulated in order, in float32.

    ``width`` must be a multiple of ``chunk``; with ``shared`` the one row of ``keys``/``values``
    serves every query row. Chunks past a row's last allowed key add exact zeros, so the result
    does not depend on how wide the batch's store is.

    Returns:
        ``(out, lse)``: the output (query dtype) and the float32 log-sum-exp of the scores.

    Example:
        >>> q, k, v = torch.randn(2, 1, 3, 8), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
        >>> allowed = torch.ones(2, 1, 3, 8, dtype=torch.bool)
        >>> out, lse = chunked_attention(q, k, v, allowed, 8**-0.5, chunk=4)
        >>> ref = torch.softmax((q @ k.transpose(-1, -2)) * 8**-0.5, -1) @ v
        >>> bool(torch.allclose(out, ref, atol=1e-5)), lse.shape
        (True, torch.Size([2, 1, 3]))
    """
    width = keys.shape[2]
    if width % chunk:
        raise ValueError(f"key width {width} is not a multiple of the chunk size {chunk}")
    scores = []
    for start in range(0, width, chunk):
        part = _products(query, keys[:, :, start : start + chunk].transpose(-1, -2), shared)
        part = part.float() * scaling
        scores.append(part.masked_fill(~allowed[..., start : start + chunk], float("-inf")))
    top = scores[0].amax(-1)
    for part in scores[1:]:
        top = torch.maximum(top, part.amax(-1))
    total = torch.zeros_like(top)
    acc = torch.zeros(
        (*query.shape[:-1], values.shape[-1]), dtype=torch.float32, device=query.device
    )
    for index, part in enumerate(scores):
        weights = rowwise(torch.exp, part - top[..., None])
        total = total + weights.sum(-1)
        block = values[:, :, index * chunk : (index + 1) * chunk]
        acc = acc + _products(weights.to(values.dtype), block, shared).float()
    return (acc / total[..., None]).to(query.dtype), top + rowwise(torch.log, total)


class InvariantPrefixState(SharedPrefixState):
    """A :class:`~sprint_lab.generation.shared_prefix.SharedPrefixState` that is batch-invariant.

    Each row's suffix keys and values are stored from index 0 of its own store (``lengths``
    says how many), so no padding sits inside it, and attention runs through
    :func:`chunked_attention` in blocks of query positions. Rows must be left-padded, as the
    decoders make them.

    Example:
        >>> state = InvariantPrefixState(1, torch.zeros(2, dtype=torch.long), None, 4)
        >>> state.begin(torch.tensor([[True, True], [False, True]]))
        >>> q = torch.randn(2, 2, 2, 8)
        >>> kv = torch.randn(2, 1, 2, 8)
        >>> state.attend(0, q, kv, kv, 8**-0.5).shape, state.capacity
        (torch.Size([2, 2, 2, 8]), 256)
        >>> state.commit(); state.lengths.tolist()
        [2, 1]
    """

    def __init__(
        self,
        n_layers: int,
        row_group: Tensor,
        prefix: list[KV] | None,
        capacity: int,
    ) -> None:
        super().__init__(n_layers, row_group, prefix, -(-capacity // CHUNK) * CHUNK)
        self.prefix_length = int(prefix[0][0].shape[2]) if prefix else 0
        if prefix is not None:
            padding = (0, 0, 0, (-self.prefix_length) % CHUNK)
            self.prefix = [(F.pad(k, padding), F.pad(v, padding)) for k, v in prefix]
        self.lengths = torch.zeros(row_group.shape[0], dtype=torch.long, device=row_group.device)
        self._counts = self.lengths
        self._write: tuple[Tensor, Tensor, Tensor] | None = None
        self._positions: Tensor | None = None
        self.one_query_per_block = False
        """Attend every position as a decoding step would (one query per block): teacher-forced
        tokens then get exactly the outputs step-by-step decoding gives them."""

    def begin(self, valid: Bool[Tensor, "batch new"]) -> None:
        """Declare the real positions about to be appended (each row's come last)."""
        new = valid.shape[1]
        valid = valid.to(self.lengths.device)
        counts = valid.sum(1)
        offsets = torch.arange(new, device=valid.device)
        first = new - counts
        if not torch.equal(offsets[None, :] >= first[:, None], valid):
            raise ValueError("batch-invariant attention needs left-padded rows")
        if int((self.lengths + counts).max()) > self.capacity:
            raise RuntimeError(f"invariant prefix state holds {self.capacity} positions per row")
        rows, columns = valid.nonzero(as_tuple=True)
        self._write = (rows, columns, self.lengths[rows] + columns - first[rows])
        self._positions = (self.lengths[:, None] + offsets[None, :] - first[:, None]).clamp(min=0)
        self._counts = counts
        self._pending = new

    def commit(self) -> None:
        """Advance each row past its real positions of the forward pass that just ran."""
        self.lengths = self.lengths + self._counts
        self.length = int(self.lengths.max()) if len(self.lengths) else 0
        self._pending = 0

    def select_rows(self, rows: Tensor) -> None:
        """Keep only ``rows`` (finished rows leave the batch)."""
        super().select_rows(rows)
        self.lengths = self.lengths.index_select(0, rows.to(self.lengths.device))

    def absorb(self, other: InvariantPrefixState) -> None:
        """Append ``other``'s rows after this state's (continuous batching refills free slots).

        Each row keeps its own keys from index 0 and its own prefix group, and attention
        reduces over fixed chunks masked past a row's end, so a row computes the same values in
        the merged state as in its own. Prefix groups no row uses any more are dropped.

        Raises:
            ValueError: when the two states hold different prefix lengths.

        Example:
            >>> one = InvariantPrefixState(1, torch.zeros(1, dtype=torch.long), None, 4)
            >>> two = InvariantPrefixState(1, torch.zeros(2, dtype=torch.long), None, 300)
            >>> for state, n in ((one, 1), (two, 2)):
            ...     state.begin(torch.ones(n, 1, dtype=torch.bool))
            ...     kv = torch.randn(n, 1, 1, 8)
            ...     _ = state.attend(0, torch.randn(n, 2, 1, 8), kv, kv, 1.0)
            ...     state.commit()
            >>> one.absorb(two)
            >>> one.batch_size, one.capacity, one.lengths.tolist(), one.keys[0].shape[2]
            (3, 512, [1, 1, 1], 512)
        """
        if (self.prefix is None) != (other.prefix is None) or (
            self.prefix_length != other.prefix_length
        ):
            raise ValueError(
                f"cannot merge states with prefix lengths {self.prefix_length} and "
                f"{other.prefix_length}"
            )
        capacity = max(self.capacity, other.capacity)
        stores = (self.keys, self.values, other.keys, other.values)
        if any(store[layer] is None for store in stores for layer in range(self.n_layers)):
            raise ValueError("only states that have run a forward pass can be merged")

        def widen(part: Tensor | None) -> Tensor:
            assert part is not None
            return F.pad(part, (0, 0, 0, capacity - part.shape[2]))

        for layer in range(self.n_layers):
            self.keys[layer] = torch.cat([widen(self.keys[layer]), widen(other.keys[layer])])
            self.values[layer] = torch.cat([widen(self.values[layer]), widen(other.values[layer])])
        self.capacity = capacity
        row_group = other.row_group
        if self.prefix is not None and other.prefix is not None:
            row_group = other.row_group + int(self.prefix[0][0].shape[0])
            self.prefix = [
                (torch.cat([k, other_k]), torch.cat([v, other_v]))
                for (k, v), (other_k, other_v) in zip(self.prefix, other.prefix, strict=True)
            ]
        row_group = torch.cat([self.row_group, row_group.to(self.row_group.device)])
        self.lengths = torch.cat([self.lengths, other.lengths.to(self.lengths.device)])
        self._counts = self.lengths
        self.length = int(self.lengths.max()) if len(self.lengths) else 0
        self._set_rows(self._drop_unused_groups(row_group))

    def _drop_unused_groups(self, row_group: Tensor) -> Tensor:
        """Keep only the prefix groups ``row_group`` refers to; the renumbered groups."""
        if self.prefix is None:
            return row_group
        used, renumbered = torch.unique(row_group, return_inverse=True)
        if len(used) < int(self.prefix[0][0].shape[0]):
            index = used.to(self.prefix[0][0].device)
            self.prefix = [
                (k.index_select(0, index), v.index_select(0, index)) for k, v in self.prefix
            ]
        return renumbered

    def drop_last(self, counts: Tensor) -> None:
        """Forget each row's last ``counts`` stored positions (a rejected teacher-forced tail).

        The dropped keys stay in the store but lie past the row's end, so they are masked, and
        the next positions overwrite them.
        """
        counts = counts.to(self.lengths.device)
        if bool((counts < 0).any()) or bool((counts > self.lengths).any()):
            raise ValueError("drop_last: counts must lie between 0 and each row's stored length")
        self.lengths = self.lengths - counts
        self.length = int(self.lengths.max()) if len(self.lengths) else 0

    def attend(
        self,
        layer: int,
        query: Float[Tensor, "batch n_heads new d_head"],
        key: Float[Tensor, "batch n_kv_heads new d_head"],
        value: Float[Tensor, "batch n_kv_heads new d_head"],
        scaling: float,
    ) -> Float[Tensor, "batch new n_heads d_head"]:
        """Store the rows' new keys/values from their own ends, then attend block by block."""
        batch, n_heads, new, d_head = query.shape
        n_kv = key.shape[1]
        group_size = n_heads // n_kv
        keys, values = self.layer_store(layer, key, value)
        assert self._write is not None and self._positions is not None, "begin() first"
        rows, columns, dest = self._write
        keys[rows, :, dest] = key[rows, :, columns]
        values[rows, :, dest] = value[rows, :, columns]
        width = -(-int((self.lengths + self._counts).max()) // CHUNK) * CHUNK
        suffix_keys, suffix_values = keys[:, :, :width], values[:, :, :width]
        grouped = query.reshape(batch, n_kv, group_size, new, d_head).permute(0, 3, 1, 2, 4)
        # Row r's t-th real token goes to query slot t (not to its padded column), so it always
        # sits at the same place of the same query block whatever the batch's padded width.
        steps = torch.arange(new, device=query.device)
        source = (new - self._counts[:, None] + steps[None, :]).clamp(max=new - 1)
        rows = torch.arange(batch, device=query.device)[:, None]
        aligned = grouped[rows, source].permute(0, 2, 1, 3, 4)  # [batch, n_kv, new, group, d]
        aligned_positions = self._positions.gather(1, source)
        out = query.new_zeros((batch, n_kv, new, group_size, d_head))
        block = 1 if new == 1 or self.one_query_per_block else QUERY_BLOCK
        key_index = torch.arange(width, device=query.device)
        for start in range(0, int(self._counts.max()) if batch else 0, block):
            size = min(block, new - start)
            part = F.pad(aligned[:, :, start : start + size], (0, 0, 0, 0, 0, block - size))
            part = part.reshape(batch, n_kv, block * group_size, d_head)
            positions = F.pad(aligned_positions[:, start : start + size], (0, block - size))
            allowed = key_index[None, None, :] <= positions[:, :, None]
            allowed = allowed[:, :, None, :].expand(batch, block, group_size, width)
            allowed = allowed.reshape(batch, 1, block * group_size, width)
            merged, lse = chunked_attention(part, suffix_keys, suffix_values, allowed, scaling)
            if self.prefix is not None:
                prefix_out, prefix_lse = self._prefix_part(layer, part, scaling)
                total = rowwise(torch.logaddexp, lse, prefix_lse)
                merged = (
                    merged.float() * rowwise(torch.exp, lse - total)[..., None]
                    + prefix_out.float() * rowwise(torch.exp, prefix_lse - total)[..., None]
                ).to(query.dtype)
            merged = merged.reshape(batch, n_kv, block, group_size, d_head)
            out[:, :, start : start + size] = merged[:, :, :size]
        real_rows, real_steps = (steps[None, :] < self._counts[:, None]).nonzero(as_tuple=True)
        result = query.new_zeros((batch, new, n_heads, d_head))
        result[real_rows, source[real_rows, real_steps]] = out.permute(0, 2, 1, 3, 4)[
            real_rows, real_steps
        ].reshape(-1, n_heads, d_head)
        return result

    def _prefix_part(
        self, layer: int, query: Float[Tensor, "batch n_kv rows d_head"], scaling: float
    ) -> tuple[Float[Tensor, "batch n_kv rows d_head"], Float[Tensor, "batch n_kv rows"]]:
        """Every row's attention over its group's prefix (keys shared, never copied per row)."""
        assert self.prefix is not None
        keys, values = self.prefix[layer]
        rows = query.shape[2]
        allowed = torch.arange(keys.shape[2], device=query.device) < self.prefix_length
        allowed = allowed[None, None, None, :].expand(1, 1, rows, keys.shape[2])
        return self.per_group(
            query,
            lambda part, group: chunked_attention(
                part,
                keys[group : group + 1],
                values[group : group + 1],
                allowed,
                scaling,
                chunk=keys.shape[2],
                shared=True,
            ),
        )


def prefix_state(
    n_layers: int, row_group: Tensor, prefix: list[KV] | None, capacity: int
) -> SharedPrefixState:
    """The decoders' state: :class:`InvariantPrefixState` under :func:`batch_invariant`."""
    make = InvariantPrefixState if invariant_active() else SharedPrefixState
    return make(n_layers, row_group, prefix, capacity)
