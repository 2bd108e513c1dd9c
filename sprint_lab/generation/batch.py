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
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from sprint_lab.core.gate import HeadGate, MaskBatch, ReplacementBatch, head_mask
from sprint_lab.core.model import LabModel
from sprint_lab.generation.decoders import Decoder, Logits, make_decoder
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
    ) -> None:
        self.model = model
        self.rows = list(rows)
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
        # the gate hooks every layer any row touches; per-row values are set before the body runs
        replacement = self.replacements_of(mask_keys)
        with head_mask(self.model, row_masks, replacement) as gate, decoder.attached():
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
        """Prefill, then decode (a subclass may insert phases between them)."""
        logits, next_position = self.prefill(decoder, gate, mask_keys, row_masks)
        self.decode(decoder, gate, logits, next_position)

    def _prefix_len(self) -> int:
        """Length of the prefix all rows share and that is reused, or 0."""
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
        if prefix_len:
            prefix_ids = self.rows[0].prefix_ids[:prefix_len]
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
        for _ in range(self.settings.rule.max_new_tokens):
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
