"""Decoders: how a batch's forward passes run and where its keys and values live.

The batch loop (:mod:`sprint_lab.generation.batch`) only talks to the :class:`Decoder`
protocol: compute a shared prefix's cache, run the padded prompt bodies, run one decoding step,
drop finished rows. Two decoders implement it:

- :class:`CacheDecoder` runs the TransformerLens bridge's own attention with a Hugging Face
  ``DynamicCache`` holding one copy of the prefix per row (the reference path; it also serves
  ``use_cache=False``, recomputing the whole sequence at every step);
- :class:`SharedPrefixDecoder` runs shared-prefix attention
  (:mod:`sprint_lab.generation.shared_prefix`): one copy of each (prefix, mask) cache, read once
  per step for all rows that share it.

They are chosen by the ``attention=`` name through :data:`ATTENTION_PATHS`; ``"auto"`` takes the
first path in :data:`AUTO_ORDER` that the model can use (:func:`resolve_attention`). A new path
is one more registry entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sprint_lab.core.model import LabModel
from sprint_lab.generation.attention_swap import (
    STATE_KWARG,
    bridge_only_hooks,
    shared_prefix_attention,
    shared_prefix_supported,
)
from sprint_lab.generation.invariant import InvariantPrefixState, prefix_state
from sprint_lab.generation.kv import (
    PrefixEntry,
    cache_layers,
    new_cache,
    split_rows,
    stack_entries,
)
from sprint_lab.generation.shared_prefix import SharedPrefixState

Logits = Float[Tensor, "batch vocab"]
"""Next-token logits of every row in the batch (last position only)."""


@runtime_checkable
class Decoder(Protocol):
    """What the batch loop needs from a decoding path.

    A decoder serves one batch: :meth:`compute_prefix` (optional, before :meth:`start`), then
    :meth:`start`, then any number of :meth:`step` and :meth:`select_rows` calls, all inside
    :meth:`attached` and inside the head gate.
    """

    def attached(self) -> AbstractContextManager[None]:
        """Context the forward passes must run in (e.g. the attention swapped in)."""
        ...

    def compute_prefix(self, prefix_ids: Sequence[int], n: int) -> list[PrefixEntry]:
        """Run ``prefix_ids`` as ``n`` identical rows (the gate holds one mask per row).

        Returns:
            One :data:`~sprint_lab.generation.kv.PrefixEntry` per row, in row order.
        """
        ...

    def start(
        self,
        entries: dict[int, PrefixEntry] | None,
        mask_keys: Sequence[int],
        ids: Int[Tensor, "batch width"],
        body_mask: Int[Tensor, "batch width"],
        positions: Int[Tensor, "batch width"],
        capacity: int,
    ) -> Logits:
        """Run the left-padded prompt bodies after the prefix.

        Args:
            entries: prefix entries by mask key, or ``None`` when the rows have no shared prefix.
            mask_keys: each row's mask key (which entry is its prefix).
            ids: body tokens, padding on the left.
            body_mask: 1 at real tokens, 0 at padding.
            positions: position ids (after the prefix, skipping the padding).
            capacity: body width plus the most tokens that will be generated.

        Returns:
            The next-token logits of every row.
        """
        ...

    def step(self, tokens: Int[Tensor, "batch 1"], positions: Int[Tensor, "batch 1"]) -> Logits:
        """Append one token per row at ``positions`` and return the next-token logits."""
        ...

    def select_rows(self, index: Int[Tensor, " kept"]) -> None:
        """Keep only the rows at ``index`` (finished rows leave the batch)."""
        ...


@runtime_checkable
class TeacherForcing(Decoder, Protocol):
    """What verify-then-decode (:mod:`sprint_lab.generation.verify`) needs beyond :class:`Decoder`.

    Only a batch-invariant decoder can serve it exactly: a teacher-forced position must get the
    same outputs, bit for bit, as the decoding step that would have produced it.
    """

    def teacher_force(
        self,
        ids: Int[Tensor, "batch width"],
        valid: Bool[Tensor, "batch width"],
        positions: Int[Tensor, "batch width"],
    ) -> Float[Tensor, "batch width d_model"]:
        """Append the left-padded ``ids`` (``valid`` marks real tokens) in one forward pass, each
        position computed as a decoding step would compute it; return the final hidden states."""
        ...

    def logits(self, hidden: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows vocab"]:
        """The LM head applied to final hidden states (as a decoding step applies it)."""
        ...

    def drop_last(self, counts: Int[Tensor, " batch"]) -> None:
        """Forget each row's last ``counts`` appended positions."""
        ...


@runtime_checkable
class Refilling(Decoder, Protocol):
    """What continuous batching (:meth:`~sprint_lab.generation.batch.Batch.refill`) needs beyond
    :class:`Decoder`: take in the rows of another decoder of the same kind, prefilled on their
    own, so that finished rows' slots are filled again. Only a batch-invariant decoder can do
    it exactly (a row's values must not depend on the rows it decodes with).
    """

    def can_absorb(self) -> bool:
        """Whether this decoder's rows can be merged with others' right now."""
        ...

    def absorb(self, other: Decoder) -> None:
        """Append ``other``'s rows after this decoder's."""
        ...


class CacheDecoder:
    """Decoding through the bridge's own attention with a Hugging Face ``DynamicCache``.

    The reference path: it also serves ``use_cache=False`` (the whole sequence recomputed at
    every step) and models that cannot use shared-prefix attention. Implements :class:`Decoder`.

    Args:
        model: the model (its forward fires the bridge's hooks, so the gate applies).
        use_cache: keep a key/value cache; ``False`` recomputes everything at every step.

    Example:
        >>> decoder = CacheDecoder(model, use_cache=True)
        >>> ids = torch.tensor([[5, 6, 7]])
        >>> logits = decoder.start(None, [0], ids, torch.ones_like(ids), torch.arange(3)[None], 4)
        >>> decoder.step(torch.tensor([[8]]), torch.tensor([[3]])).shape == logits.shape
        True
    """

    def __init__(self, model: LabModel, use_cache: bool = True) -> None:
        self.model = model
        self.use_cache = use_cache
        self.past: Any = None  # the DynamicCache (None without a cache)
        self.attention = torch.ones((0, 0), dtype=torch.long)  # [batch, seen] (1 = real token)
        self.history = torch.ones((0, 0), dtype=torch.long)  # all ids so far, without a cache

    def attached(self) -> AbstractContextManager[None]:
        """Nothing to attach: the bridge's own attention runs."""
        return contextlib.nullcontext()

    def compute_prefix(self, prefix_ids: Sequence[int], n: int) -> list[PrefixEntry]:
        """See :meth:`Decoder.compute_prefix`."""
        ids = torch.tensor([list(prefix_ids)] * n, device=self.model.device)
        out = self.model.hf_model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return split_rows(cache_layers(out.past_key_values), n)

    def start(
        self,
        entries: dict[int, PrefixEntry] | None,
        mask_keys: Sequence[int],
        ids: Int[Tensor, "batch width"],
        body_mask: Int[Tensor, "batch width"],
        positions: Int[Tensor, "batch width"],
        capacity: int,
    ) -> Logits:
        """See :meth:`Decoder.start` (``capacity`` is unused: the cache grows)."""
        prefix_len = 0
        if entries is not None:
            self.past = new_cache(stack_entries(entries, list(mask_keys)))
            prefix_len = self.past.get_seq_length()
        self.attention = torch.cat(
            [torch.ones((ids.shape[0], prefix_len), dtype=torch.long), body_mask], dim=1
        ).to(self.model.device)
        self.history = ids
        return self._forward(ids, positions)

    def _forward(self, ids: Tensor, positions: Tensor) -> Logits:
        out = self.model.hf_model(
            input_ids=ids,
            attention_mask=self.attention,
            position_ids=positions,
            past_key_values=self.past if self.use_cache else None,
            use_cache=self.use_cache,
            logits_to_keep=1,
        )
        self.past = out.past_key_values if self.use_cache else None
        return out.logits[:, -1, :]

    def step(self, tokens: Int[Tensor, "batch 1"], positions: Int[Tensor, "batch 1"]) -> Logits:
        """See :meth:`Decoder.step` (without a cache, ``positions`` are recomputed)."""
        ones = torch.ones((tokens.shape[0], 1), dtype=self.attention.dtype, device=tokens.device)
        self.attention = torch.cat([self.attention, ones], dim=1)
        if self.use_cache:
            return self._forward(tokens, positions)
        self.history = torch.cat([self.history, tokens], dim=1)
        return self._forward(self.history, (self.attention.cumsum(dim=1) - 1).clamp(min=0))

    def select_rows(self, index: Int[Tensor, " kept"]) -> None:
        """See :meth:`Decoder.select_rows`."""
        if self.use_cache:
            self.past.batch_select_indices(index)
        else:
            self.history = self.history[index]
        self.attention = self.attention[index]


class SharedPrefixDecoder:
    """Decoding with shared-prefix attention (see :mod:`sprint_lab.generation.shared_prefix`).

    Each distinct prefix entry is kept once; the rows' own tokens go to a preallocated suffix
    store. Implements :class:`Decoder`; needs a key/value cache (there is no uncached variant).

    Example:
        >>> decoder = SharedPrefixDecoder(model)
        >>> ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
        >>> body, positions = (ids != 0).long(), torch.tensor([[0, 1, 2], [0, 0, 1]])
        >>> with decoder.attached():
        ...     logits = decoder.start(None, [0, 0], ids, body, positions, 5)
        ...     decoder.select_rows(torch.tensor([1]))
        ...     decoder.step(torch.tensor([[4]]), torch.tensor([[2]])).shape[0]
        1
    """

    def __init__(self, model: LabModel) -> None:
        self.model = model
        self.state: SharedPrefixState | None = None

    def attached(self) -> AbstractContextManager[None]:
        """Shared-prefix attention swapped into every layer (restored on exit)."""
        return shared_prefix_attention(self.model)

    def _run(self, ids: Tensor, positions: Tensor, state: SharedPrefixState) -> Logits:
        out = self.model.hf_model(
            input_ids=ids,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=1,
            **{STATE_KWARG: state},
        )
        state.commit()
        return out.logits[:, -1, :]

    def compute_prefix(self, prefix_ids: Sequence[int], n: int) -> list[PrefixEntry]:
        """See :meth:`Decoder.compute_prefix`."""
        device = self.model.device
        ids = torch.tensor([list(prefix_ids)] * n, device=device)
        state = prefix_state(
            self.model.n_layers, torch.arange(n, device=device), None, len(prefix_ids)
        )
        state.begin(torch.ones_like(ids, dtype=torch.bool))
        positions = torch.arange(len(prefix_ids), device=device).expand(n, -1)
        self._run(ids, positions, state)
        return split_rows(state.stored(), n)

    def start(
        self,
        entries: dict[int, PrefixEntry] | None,
        mask_keys: Sequence[int],
        ids: Int[Tensor, "batch width"],
        body_mask: Int[Tensor, "batch width"],
        positions: Int[Tensor, "batch width"],
        capacity: int,
    ) -> Logits:
        """See :meth:`Decoder.start`: rows with the same mask key share one prefix group."""
        device = self.model.device
        prefix = None
        row_group = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
        if entries is not None:
            groups = list(dict.fromkeys(mask_keys))
            slot = {key: i for i, key in enumerate(groups)}
            row_group = torch.tensor([slot[key] for key in mask_keys], device=device)
            prefix = stack_entries(entries, groups)
        self.state = prefix_state(self.model.n_layers, row_group, prefix, capacity)
        self.state.begin(body_mask.to(device=device, dtype=torch.bool))
        return self._run(ids, positions, self.state)

    def step(self, tokens: Int[Tensor, "batch 1"], positions: Int[Tensor, "batch 1"]) -> Logits:
        """See :meth:`Decoder.step`."""
        state = self.state
        assert state is not None, "start() first"
        state.begin(torch.ones_like(tokens, dtype=torch.bool))
        return self._run(tokens, positions, state)

    def select_rows(self, index: Int[Tensor, " kept"]) -> None:
        """See :meth:`Decoder.select_rows`."""
        assert self.state is not None, "start() first"
        self.state.select_rows(index)

    def teacher_force(
        self,
        ids: Int[Tensor, "batch width"],
        valid: Bool[Tensor, "batch width"],
        positions: Int[Tensor, "batch width"],
    ) -> Float[Tensor, "batch width d_model"]:
        """See :meth:`TeacherForcing.teacher_force`."""
        state = self.state
        if not isinstance(state, InvariantPrefixState):
            raise RuntimeError("teacher forcing needs the batch-invariant state")
        state.begin(valid.to(device=self.model.device, dtype=torch.bool))
        state.one_query_per_block = True
        try:
            out = self.model.hf_model.get_decoder()(
                input_ids=ids, position_ids=positions, use_cache=False, **{STATE_KWARG: state}
            )
        finally:
            state.one_query_per_block = False
        state.commit()
        return out.last_hidden_state

    def logits(self, hidden: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows vocab"]:
        """See :meth:`TeacherForcing.logits`."""
        return self.model.hf_model.get_output_embeddings()(hidden)

    def can_absorb(self) -> bool:
        """See :meth:`Refilling.can_absorb`: only on the batch-invariant state."""
        return isinstance(self.state, InvariantPrefixState)

    def absorb(self, other: Decoder) -> None:
        """See :meth:`Refilling.absorb` (both must hold batch-invariant states)."""
        mine, theirs = self.state, getattr(other, "state", None)
        if not isinstance(mine, InvariantPrefixState) or not isinstance(
            theirs, InvariantPrefixState
        ):
            raise RuntimeError("only batch-invariant shared-prefix states can be merged")
        mine.absorb(theirs)

    def drop_last(self, counts: Int[Tensor, " batch"]) -> None:
        """See :meth:`TeacherForcing.drop_last`."""
        state = self.state
        if not isinstance(state, InvariantPrefixState):
            raise RuntimeError("drop_last needs the batch-invariant state (batch_invariant())")
        state.drop_last(counts)


def _shared_prefix_unusable(model: LabModel) -> str | None:
    if not shared_prefix_supported(model):
        return (
            f"{model.name} cannot use shared-prefix attention (sliding window, soft-capping "
            "or an attention module that does not dispatch through AttentionInterface); "
            "use attention='bridge'"
        )
    hooks = bridge_only_hooks(model)
    if hooks:
        return (
            "hooks on " + ", ".join(hooks) + " fire only in the bridge's "
            "own attention; use attention='bridge' (or 'auto') to keep them"
        )
    return None


def _always_usable(model: LabModel) -> str | None:
    return None


@dataclass(frozen=True)
class AttentionPath:
    """One ``attention=`` choice of :func:`~sprint_lab.generation.generator.generate`.

    Attributes:
        make: builds the batch's decoder from ``(model, use_cache)``.
        unusable: why ``model`` cannot take this path right now (``None`` when it can).
    """

    make: Callable[[LabModel, bool], Decoder]
    unusable: Callable[[LabModel], str | None]


ATTENTION_PATHS: dict[str, AttentionPath] = {
    "shared_prefix": AttentionPath(
        lambda model, _: SharedPrefixDecoder(model), _shared_prefix_unusable
    ),
    "bridge": AttentionPath(CacheDecoder, _always_usable),
}
"""The decoding paths by ``attention=`` name."""

AUTO = "auto"
AUTO_ORDER = ("shared_prefix", "bridge")
"""The paths ``"auto"`` tries, fastest first."""

ATTENTION_NAMES = (AUTO, *ATTENTION_PATHS)
"""Every accepted ``attention=`` value."""

UNCACHED_PATH = "bridge"
"""The path of ``use_cache=False`` (only the bridge can decode without a cache)."""


def resolve_attention(model: LabModel, attention: str) -> str:
    """The registered path ``attention`` names for ``model`` (``"auto"``: the first usable).

    Raises:
        ValueError: for an unknown name, or a path ``model`` cannot take (the message says why).

    Example:
        >>> resolve_attention(model, "auto"), resolve_attention(model, "bridge")
        ('shared_prefix', 'bridge')
    """
    if attention not in ATTENTION_NAMES:
        raise ValueError(f"unknown attention {attention!r}; use one of {ATTENTION_NAMES}")
    if attention == AUTO:
        return next(name for name in AUTO_ORDER if ATTENTION_PATHS[name].unusable(model) is None)
    reason = ATTENTION_PATHS[attention].unusable(model)
    if reason is not None:
        raise ValueError(reason)
    return attention


def make_decoder(model: LabModel, attention: str, use_cache: bool) -> Decoder:
    """The decoder of one batch on the resolved path ``attention``.

    ``use_cache=False`` always decodes on :data:`UNCACHED_PATH`.

    Example:
        >>> type(make_decoder(model, "shared_prefix", use_cache=False)).__name__
        'CacheDecoder'
    """
    path = ATTENTION_PATHS[attention if use_cache else UNCACHED_PATH]
    return path.make(model, use_cache)
