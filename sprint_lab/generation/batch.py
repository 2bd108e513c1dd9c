"""The decoding loop of one batch: prefill, then one token per step until every row is done.

Every row of a batch carries its own head mask (one pruning configuration), so one forward
pass serves many configurations. When all rows share a tokenized prefix (few-shot exemplars)
it is run once per distinct mask, and its key/value cache is looked up in / stored to a
:class:`~sprint_lab.generation.kv.PrefixCache`. The bodies after it are left-padded
(:func:`~sprint_lab.generation.kv.left_pad`) and run in one forward pass; then each step picks a
token per row (:class:`~sprint_lab.generation.sampling.Sampler`), checks whether the row is done
(:class:`~sprint_lab.generation.stopping.StopRule`), drops finished rows from the decoder and
the gate (they stop costing compute) and runs the next step. How the forward passes run is the
decoder's business (:mod:`sprint_lab.generation.decoders`).

**Continuous batching.** A batch that was given a :class:`RowQueue` does not shrink to its last
long row: once a quarter of its slots (:data:`REFILL_FRACTION`) are free, it prefills that many
waiting rows on their own (a sub-batch of the same kind, so a verifying batch verifies them too),
then merges their keys, values and masks into the running batch
(:meth:`~sprint_lab.generation.decoders.Refilling.absorb`) and decodes them with the others.
This is exact only where a row's values do not depend on the rows it runs with, i.e. under
:func:`~sprint_lab.generation.invariant.batch_invariant`; elsewhere the batch runs as before.
Refilled rows must share the batch's reused prefix (they join its prefix groups).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sprint_lab.core.gate import HeadGate, MaskBatch, ReplacementBatch, head_mask
from sprint_lab.core.model import LabModel
from sprint_lab.generation.decoders import Decoder, Logits, Refilling, make_decoder
from sprint_lab.generation.invariant import invariant_active
from sprint_lab.generation.kv import PrefixCache, PrefixEntry, left_pad
from sprint_lab.generation.sampling import Sampler
from sprint_lab.generation.stopping import StopRule


@dataclass
class Row:
    """One (prompt, sample) to generate.

    Attributes:
        index: position in the flat output list.
        prompt_index: index of the prompt in the call.
        sample_index: index of the sample for that prompt.
        ids: the whole prompt, tokenized as one text.
        prefix_ids: the tokenized shared prefix (may overhang ``ids``' boundary).
        shared: how many leading tokens of ``ids`` equal ``prefix_ids`` (at most ``len(ids) - 1``).
        mask_key: index of the row's head mask among the distinct masks.
        generator: the row's sampling generator (``None`` when greedy).
    """

    index: int
    prompt_index: int
    sample_index: int
    ids: list[int]
    prefix_ids: list[int]
    shared: int
    mask_key: int
    generator: torch.Generator | None


@dataclass(frozen=True)
class Finished:
    """A row that is done: its generated tokens (EOS excluded) and why it stopped.

    ``diverged_at`` is set when the row was compared with a draft (see
    :mod:`sprint_lab.generation.verify`): the first token index where the two differ, ``None``
    when they are identical.
    """

    row: Row
    tokens: list[int]
    reason: str
    diverged_at: int | None = None


REFILL_FRACTION = 4
"""A batch refills once ``slots // REFILL_FRACTION`` (at least one) of its slots are free."""


@dataclass
class RowQueue:
    """Rows waiting for a decoding slot (continuous batching), each with its draft or ``None``.

    Attributes:
        items: the waiting ``(row, draft)`` pairs, in order.
        slots: how many rows a batch decodes at once.

    Example:
        >>> rows = [Row(i, i, 0, [5, 6, 7], [5, 6], 2, 0, None) for i in range(3)]
        >>> queue = RowQueue(deque((row, None) for row in rows), slots=2)
        >>> [row.index for row, _ in queue.take(2, [5, 6])], len(queue.items)
        ([0, 1], 1)
        >>> queue.take(2, [5, 6, 7])  # row 2 shares only 2 prefix tokens
        []
    """

    items: deque[tuple[Row, Sequence[int] | None]]
    slots: int

    def take(self, n: int, prefix_ids: Sequence[int]) -> list[tuple[Row, Sequence[int] | None]]:
        """Up to ``n`` waiting rows (in order) that share ``prefix_ids``; they leave the queue."""
        taken, kept = [], deque()
        length = len(prefix_ids)
        while self.items and len(taken) < n:
            row, draft = self.items.popleft()
            fits = row.shared >= length and list(row.prefix_ids[:length]) == list(prefix_ids)
            (taken if fits else kept).append((row, draft))
        self.items.extendleft(reversed(kept))
        return taken


@dataclass(frozen=True)
class DecodeSettings:
    """The per-call settings every batch of a :func:`~sprint_lab.generation.generator.generate`
    call shares.

    Attributes:
        attention: the resolved attention path (a key of
            :data:`~sprint_lab.generation.decoders.ATTENTION_PATHS`).
        sampler: how tokens are picked.
        rule: when rows stop.
        use_cache: decode with a key/value cache.
        reuse_prefix: compute a shared prefix once per mask (and look it up in the cache).
        prefix_cache: where prefix entries are kept across batches.
    """

    attention: str
    sampler: Sampler
    rule: StopRule
    use_cache: bool = True
    reuse_prefix: bool = True
    prefix_cache: PrefixCache | None = field(default=None, compare=False)


class Batch:
    """State of one batch while it decodes.

    Args:
        model: the model.
        rows: the batch's rows.
        masks: the distinct head masks (``Row.mask_key`` indexes them).
        settings: the call's settings.
        replacements: what each mask's ablated heads output instead of zero
            (``[k, n_layers, n_heads, d_head]``, aligned with ``masks``), or ``None``.
        queue: rows that take the slots of finished rows (continuous batching), or ``None``.

    Example:
        >>> from sprint_lab.generation.stopping import StopRule
        >>> rule = StopRule.build(model.tokenizer, None, [], max_new_tokens=2)
        >>> rows = [Row(0, 0, 0, [5, 6, 7], [], 0, 0, None)]
        >>> settings = DecodeSettings("bridge", Sampler(), rule)
        >>> done = Batch(model, rows, torch.ones(1, 3, 4), settings).run()
        >>> [(len(f.tokens), f.reason) for f in done]
        [(2, 'length')]
    """

    def __init__(
        self,
        model: LabModel,
        rows: Sequence[Row],
        masks: MaskBatch,
        settings: DecodeSettings,
        replacements: ReplacementBatch | None = None,
        queue: RowQueue | None = None,
    ) -> None:
        self.model = model
        self.rows = list(rows)
        self.queue = queue
        self.prefix_ids: list[int] = []  # the reused prefix (set by prefill)
        self.forced_prefix_len: int | None = None  # a refill joins its batch's prefix
        self.masks = masks
        self.replacements = replacements
        self.settings = settings
        self.device = model.device
        self.generated: list[list[int]] = [[] for _ in self.rows]
        self.active = list(range(len(self.rows)))  # indices into rows, aligned with the batch
        self.finished: dict[int, Finished] = {}

    def run(self) -> list[Finished]:
        """Decode every row to its end; the results come in row order."""
        mask_keys = [row.mask_key for row in self.rows]
        row_masks = self.masks[mask_keys]
        decoder = make_decoder(self.model, self.settings.attention, self.settings.use_cache)
        # the gate hooks every layer any row touches (with a queue: any mask of the call); per-row
        # values are set before every forward pass
        opening = (row_masks, self.replacements_of(mask_keys))
        if self.queue is not None:
            opening = (self.masks, self.replacements)
        with head_mask(self.model, *opening) as gate, decoder.attached():
            self.generate(decoder, gate, mask_keys, row_masks)
        for i in self.active:
            if i not in self.finished:
                self.finished[i] = Finished(self.rows[i], self.generated[i], "length")
        return [self.finished[i] for i in range(len(self.rows))]

    def replacements_of(self, mask_keys: Sequence[int]) -> ReplacementBatch | None:
        """The replacements of the masks ``mask_keys`` (``None`` when the batch has none)."""
        return None if self.replacements is None else self.replacements[list(mask_keys)]

    def generate(
        self, decoder: Decoder, gate: HeadGate, mask_keys: list[int], row_masks: MaskBatch
    ) -> None:
        """Start the rows (:meth:`begin`), then decode them."""
        logits, next_position = self.begin(decoder, gate, mask_keys, row_masks)
        if self.active:
            self.decode(decoder, gate, logits, next_position)

    def begin(
        self, decoder: Decoder, gate: HeadGate, mask_keys: list[int], row_masks: MaskBatch
    ) -> tuple[Float[Tensor, "active vocab"], Int[Tensor, " active"]]:
        """Everything before the decoding loop (here: :meth:`prefill`); the logits to go on from.

        A subclass adds its phases here (they then also run for refilled rows)."""
        return self.prefill(decoder, gate, mask_keys, row_masks)

    def _prefix_len(self) -> int:
        """Length of the prefix all rows share and that is reused, or 0."""
        if self.forced_prefix_len is not None:
            return self.forced_prefix_len
        settings = self.settings
        prefixes = {tuple(row.prefix_ids) for row in self.rows}
        prefix_len = min(row.shared for row in self.rows)
        reuse = settings.reuse_prefix and settings.use_cache and len(prefixes) == 1
        return prefix_len if reuse and prefix_len > 0 else 0

    def prefill(
        self, decoder: Decoder, gate: HeadGate, mask_keys: list[int], row_masks: MaskBatch
    ) -> tuple[Logits, Int[Tensor, " batch"]]:
        """Prefix (cached per mask) and padded bodies; the logits and each row's next position."""
        prefix_len = self._prefix_len()
        entries = None
        self.prefix_ids = self.rows[0].prefix_ids[:prefix_len]
        if prefix_len:
            prefix_ids = self.prefix_ids
            entries = self._prefix_entries(decoder, prefix_ids, mask_keys, gate)
        gate.set_mask(row_masks, self.replacements_of(mask_keys))
        tokenizer = self.model.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        bodies = [row.ids[prefix_len:] for row in self.rows]
        ids, body_mask, positions = left_pad(bodies, prefix_len, pad_id)
        ids, positions = ids.to(self.device), positions.to(self.device)
        capacity = ids.shape[1] + self.settings.rule.max_new_tokens
        logits = decoder.start(entries, mask_keys, ids, body_mask, positions, capacity)
        return logits, positions[:, -1] + 1

    def _prefix_entries(
        self, decoder: Decoder, prefix_ids: list[int], mask_keys: list[int], gate: HeadGate
    ) -> dict[int, PrefixEntry]:
        """KV caches of the shared prefix, one per distinct mask in the batch (LRU-cached)."""
        store = self.settings.prefix_cache
        entries: dict[int, PrefixEntry] = {}
        missing = []
        for key in dict.fromkeys(mask_keys):
            mask = self.masks[key]
            mask_values = tuple(mask.flatten().tolist())
            path = (self.settings.attention, invariant_active())
            store_key = (*path, tuple(prefix_ids), mask_values, self._replacement_key(key))
            hit = store.get(store_key) if store is not None else None
            if hit is not None:
                entries[key] = hit
            else:
                missing.append((key, store_key))
        if missing:
            keys = [key for key, _ in missing]
            gate.set_mask(self.masks[keys], self.replacements_of(keys))
            computed = decoder.compute_prefix(prefix_ids, len(missing))
            for (key, store_key), entry in zip(missing, computed, strict=True):
                entries[key] = entry
                if store is not None:
                    store.put(store_key, entry)
        return entries

    def _replacement_key(self, key: int) -> str:
        """A digest of mask ``key``'s replacement (part of its prefix cache key); ``""`` when it
        is all zeros, which gates exactly like no replacement (so zero-ablation rows share their
        cached prefix with batches that have no replacements)."""
        if self.replacements is None or not bool(self.replacements[key].any()):
            return ""
        values = self.replacements[key].detach().to("cpu", torch.float64).contiguous()
        return hashlib.sha256(values.numpy().tobytes()).hexdigest()

    def decode(
        self,
        decoder: Decoder,
        gate: HeadGate,
        logits: Logits,
        next_position: Int[Tensor, " batch"],
    ) -> None:
        """Pick, check and feed one token per active row until none is left or the limit hits."""
        sampler = self.settings.sampler
        logits, next_position = self.refill(decoder, gate, logits, next_position)
        while self.active:
            tokens = sampler.pick(logits, [self.rows[i].generator for i in self.active])
            keep = self.record(tokens.tolist())
            if not keep:
                break
            if len(keep) < len(self.active):
                index = torch.tensor(keep, device=self.device)
                decoder.select_rows(index)
                tokens = tokens[index.to(tokens.device)]
                next_position = next_position[index]
                gate.select_rows(index)
                self.active = [self.active[slot] for slot in keep]
            logits = decoder.step(tokens[:, None].to(self.device), next_position[:, None])
            next_position = next_position + 1
            logits, next_position = self.refill(decoder, gate, logits, next_position)

    def refill(
        self, decoder: Decoder, gate: HeadGate, logits: Logits, next_position: Int[Tensor, " batch"]
    ) -> tuple[Float[Tensor, "rows vocab"], Int[Tensor, " rows"]]:
        """Fill free slots from the queue once enough are free (see the module docstring).

        The new rows are started on their own decoder (:meth:`begin`, inside the open gate and
        the attached attention), then merged after the running rows; returns the logits and
        next positions of all rows.
        """
        queue = self.queue
        if queue is None or not queue.items:
            return logits, next_position
        free = queue.slots - len(self.active)
        if free < max(1, queue.slots // REFILL_FRACTION):
            return logits, next_position
        if not isinstance(decoder, Refilling) or not decoder.can_absorb():
            return logits, next_position
        pairs = queue.take(free, self.prefix_ids)
        if not pairs:
            return logits, next_position
        joining = self.spawn(pairs)
        joining.forced_prefix_len = len(self.prefix_ids)
        keys = [row.mask_key for row in joining.rows]
        joining_decoder = make_decoder(self.model, self.settings.attention, self.settings.use_cache)
        new_logits, new_positions = joining.begin(joining_decoder, gate, keys, self.masks[keys])
        if joining.active:
            decoder.absorb(joining_decoder)
            logits = torch.cat([logits, new_logits])
            next_position = torch.cat([next_position, new_positions.to(next_position.device)])
        self.take_rows(joining)
        keys = [self.rows[i].mask_key for i in self.active]
        gate.set_mask(self.masks[keys], self.replacements_of(keys))
        return logits, next_position

    def spawn(self, pairs: Sequence[tuple[Row, Sequence[int] | None]]) -> Batch:
        """A batch of the same kind and settings for refilled rows (without a queue)."""
        rows = [row for row, _ in pairs]
        return Batch(self.model, rows, self.masks, self.settings, self.replacements)

    def take_rows(self, other: Batch) -> None:
        """Adopt ``other``'s rows after this batch's (its running rows stay running)."""
        offset = len(self.rows)
        self.rows.extend(other.rows)
        self.generated.extend(other.generated)
        self.finished.update({offset + i: done for i, done in other.finished.items()})
        self.active.extend(offset + i for i in other.active)

    def record(self, tokens: list[int]) -> list[int]:
        """Append each active row's token, finish the rows that are done; the slots kept."""
        rule = self.settings.rule
        keep = []
        for slot, (i, token) in enumerate(zip(self.active, tokens, strict=True)):
            reason = rule.reason(self.generated[i], token)
            if reason is None:
                keep.append(slot)
            else:
                self.finished[i] = Finished(self.rows[i], self.generated[i], reason)
        return keep
