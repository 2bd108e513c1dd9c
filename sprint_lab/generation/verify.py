"""Verify-then-decode: check a draft answer in one parallel pass, decode only where it departs.

Most ablations leave most of an answer unchanged. A sweep therefore decodes the baseline's
answer once per question and, for every pruned configuration, uses it as a *draft* (speculative
decoding with the baseline as the draft model):

1. prefill the prompt exactly as plain decoding does;
2. teacher-force the draft: feed all its tokens in one forward pass, each position computed the
   way a decoding step computes it (:meth:`~sprint_lab.generation.decoders.TeacherForcing.
   teacher_force`: one query per attention block, the same chunked reductions and fixed-shape
   linears), so its next-token logits are bit for bit the ones step-by-step decoding would get;
3. walk the draft: keep each token that is the pruned model's argmax (through the same stop rule
   as decoding), stop at the first that is not (``diverged_at``, tokens into the answer);
4. forget the rejected tail of the keys and values
   (:meth:`~sprint_lab.generation.decoders.TeacherForcing.drop_last`) and decode from there,
   starting with the pruned model's own token at ``diverged_at``.

The result is exactly greedy decoding's (the tests compare every token), for any draft: a draft
only decides how much work is skipped. This needs batch-invariant generation
(:func:`~sprint_lab.generation.invariant.batch_invariant`), where a position's result does not
depend on how many positions run with it; on the fast path a teacher-forced position can differ
in the last bit from a decoded one, so it is refused there. It is defined for greedy decoding
only: with sampling, :func:`~sprint_lab.generation.generator.generate` refuses ``verify=True``
and a sweep (always greedy) never needs it; sampled answers decode plainly (no rejection
sampling against the draft's distribution is attempted).

:func:`first_divergence` is the same measure computed afterwards from two token lists, so plain
decoding reports the same ``diverged_at``.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from dataclasses import replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import HeadGate, MaskBatch, ReplacementBatch
from sprint_lab.core.model import LabModel
from sprint_lab.generation.batch import Batch, DecodeSettings, Finished, Row, RowQueue
from sprint_lab.generation.decoders import Decoder, Logits, TeacherForcing

__all__ = ["VERIFY_LOGIT_ROWS", "VerifyBatch", "first_divergence", "padded_drafts"]

VERIFY_LOGIT_ROWS = 256
"""Positions per LM-head call when checking a draft (bounds the logits held at once)."""


def first_divergence(tokens: Sequence[int], draft: Sequence[int]) -> int | None:
    """Tokens into the answer where ``tokens`` first departs from ``draft``; ``None`` if equal.

    When one is a prefix of the other, they part where the shorter one ended.

    Example:
        >>> first_divergence([5, 6, 7], [5, 6, 7]), first_divergence([5, 9, 7], [5, 6, 7])
        (None, 1)
        >>> first_divergence([5, 6], [5, 6, 7]), first_divergence([], [])
        (2, None)
    """
    for index, (token, expected) in enumerate(zip(tokens, draft, strict=False)):
        if token != expected:
            return index
    return None if len(tokens) == len(draft) else min(len(tokens), len(draft))


def padded_drafts(
    drafts: Sequence[Sequence[int]], next_position: Int[Tensor, " batch"], pad_id: int
) -> tuple[Int[Tensor, "batch width"], Bool[Tensor, "batch width"], Int[Tensor, "batch width"]]:
    """Left-pad drafts into ``(ids, valid, positions)``; row r's tokens start at its position.

    Example:
        >>> ids, valid, positions = padded_drafts([[7, 8], [9]], torch.tensor([3, 5]), 0)
        >>> ids.tolist(), valid.tolist(), positions.tolist()
        ([[7, 8], [0, 9]], [[True, True], [False, True]], [[3, 4], [5, 5]])
    """
    width = max((len(draft) for draft in drafts), default=0)
    ids = torch.full((len(drafts), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(drafts), width), dtype=torch.bool)
    positions = next_position.detach().cpu()[:, None].expand(-1, width).clone()
    for row, draft in enumerate(drafts):
        n = len(draft)
        if n:
            ids[row, width - n :] = torch.tensor(list(draft))
            valid[row, width - n :] = True
            positions[row, width - n :] += torch.arange(n)
    return ids, valid, positions


class VerifyBatch(Batch):
    """A :class:`~sprint_lab.generation.batch.Batch` that checks a draft before decoding.

    Args:
        model, rows, masks, settings: as for :class:`~sprint_lab.generation.batch.Batch`
            (greedy settings; the decoder must implement
            :class:`~sprint_lab.generation.decoders.TeacherForcing`).
        drafts: one draft (token ids, EOS excluded) per row, or ``None`` for no draft.
        replacements, queue: as for :class:`~sprint_lab.generation.batch.Batch` (refilled rows
            are verified against their own drafts).
        timings: where to add the seconds and token counts of each phase (``prefill_s``,
            ``verify_s``, ``decode_s``, ``draft_tokens``, ``accepted_tokens``), or ``None``.

    Example:
        >>> from sprint_lab.generation.stopping import StopRule
        >>> from sprint_lab.generation.sampling import Sampler
        >>> from sprint_lab.generation.invariant import batch_invariant
        >>> rule = StopRule.build(model.tokenizer, None, [], max_new_tokens=4)
        >>> settings = DecodeSettings("shared_prefix", Sampler(), rule)
        >>> rows = [Row(0, 0, 0, [5, 6, 7], [], 0, 0, None)]
        >>> with batch_invariant(model), torch.inference_mode():
        ...     plain = Batch(model, rows, torch.ones(1, 3, 4), settings).run()[0]
        ...     wrong = 0 if plain.tokens[2] else 1
        ...     checked = VerifyBatch(model, rows, torch.ones(1, 3, 4), settings,
        ...                           [[*plain.tokens[:2], wrong]]).run()[0]
        >>> checked.tokens == plain.tokens, checked.diverged_at
        (True, 2)
    """

    def __init__(
        self,
        model: LabModel,
        rows: Sequence[Row],
        masks: MaskBatch,
        settings: DecodeSettings,
        drafts: Sequence[Sequence[int] | None],
        timings: MutableMapping[str, float] | None = None,
        replacements: ReplacementBatch | None = None,
        queue: RowQueue | None = None,
    ) -> None:
        super().__init__(model, rows, masks, settings, replacements, queue)
        if len(drafts) != len(self.rows):
            raise InputError(f"got {len(drafts)} drafts for {len(self.rows)} rows")
        if not settings.sampler.greedy:
            raise InputError("verify-then-decode is exact only for greedy decoding")
        self.has_draft = [draft is not None for draft in drafts]
        self.drafts = [list(draft) if draft is not None else [] for draft in drafts]
        self.timings = timings

    def run(self) -> list[Finished]:
        """Decode every row; each row with a draft gets its ``diverged_at``."""
        done = super().run()
        return [
            replace(f, diverged_at=first_divergence(f.tokens, self.drafts[k]))
            if self.has_draft[k]
            else f
            for k, f in enumerate(done)
        ]

    def generate(
        self, decoder: Decoder, gate: HeadGate, mask_keys: list[int], row_masks: MaskBatch
    ) -> None:
        """Prefill, verify the drafts, decode the rest (see the module docstring)."""
        logits, next_position = self.begin(decoder, gate, mask_keys, row_masks)
        if self.active:
            started = time.perf_counter()
            before = self._phase_seconds()
            self.decode(decoder, gate, logits, next_position)
            # refilled rows' prefill and verify time is counted under those phases
            refills = self._phase_seconds() - before
            self._add_time(decode_s=time.perf_counter() - started - refills)

    def begin(
        self, decoder: Decoder, gate: HeadGate, mask_keys: list[int], row_masks: MaskBatch
    ) -> tuple[Float[Tensor, "active vocab"], Int[Tensor, " active"]]:
        """Prefill, then verify the drafts; the logits to decode from."""
        if not isinstance(decoder, TeacherForcing):
            raise InputError(
                f"verify-then-decode needs a decoder that can teacher-force exactly; the "
                f"{self.settings.attention!r} path cannot (use the shared-prefix path with "
                "deterministic=True, or verify=False)"
            )
        started = time.perf_counter()
        logits, next_position = self.prefill(decoder, gate, mask_keys, row_masks)
        prefilled = time.perf_counter()
        logits, next_position = self.verify(decoder, gate, logits, next_position)
        self._add_time(prefill_s=prefilled - started, verify_s=time.perf_counter() - prefilled)
        return logits, next_position

    def spawn(self, pairs: Sequence[tuple[Row, Sequence[int] | None]]) -> Batch:
        """A verifying batch of refilled rows, each with its own draft."""
        rows = [row for row, _ in pairs]
        drafts = [draft for _, draft in pairs]
        return VerifyBatch(
            self.model, rows, self.masks, self.settings, drafts, self.timings, self.replacements
        )

    def take_rows(self, other: Batch) -> None:
        """Adopt ``other``'s rows and their drafts."""
        assert isinstance(other, VerifyBatch), "spawn() makes verifying batches"
        super().take_rows(other)
        self.has_draft.extend(other.has_draft)
        self.drafts.extend(other.drafts)

    def _phase_seconds(self) -> float:
        timings = self.timings or {}
        return timings.get("prefill_s", 0.0) + timings.get("verify_s", 0.0)

    def _add_time(self, **amounts: float) -> None:
        if self.timings is not None:
            for key, amount in amounts.items():
                self.timings[key] = self.timings.get(key, 0.0) + amount

    def _predictions(
        self, decoder: TeacherForcing, hidden: Float[Tensor, "batch width d_model"], valid: Tensor
    ) -> Int[Tensor, "batch width"]:
        """The argmax token after every real teacher-forced position (-1 at padding)."""
        flat = hidden[valid.to(hidden.device)]
        picks = [
            decoder.logits(flat[start : start + VERIFY_LOGIT_ROWS]).argmax(-1)
            for start in range(0, len(flat), VERIFY_LOGIT_ROWS)
        ]
        out = torch.full(valid.shape, -1, dtype=torch.long, device=hidden.device)
        if picks:
            out[valid.to(hidden.device)] = torch.cat(picks)
        return out

    def verify(
        self,
        decoder: TeacherForcing,
        gate: HeadGate,
        logits: Logits,
        next_position: Int[Tensor, " batch"],
    ) -> tuple[Float[Tensor, "kept vocab"], Int[Tensor, " kept"]]:
        """Teacher-force each row's draft, keep its agreeing prefix; the logits to go on from."""
        drafts = [self.drafts[i] for i in self.active]
        tokenizer = self.model.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids, valid, positions = padded_drafts(drafts, next_position, pad_id)
        width = ids.shape[1]
        hidden = None
        predicted = logits.argmax(-1)[:, None]
        if width:
            hidden = decoder.teacher_force(ids.to(self.device), valid, positions.to(self.device))
            predicted = torch.cat([predicted, self._predictions(decoder, hidden, valid)], dim=1)
        predicted_rows = predicted.tolist()
        accepted = []
        for slot, i in enumerate(self.active):
            draft = drafts[slot]
            guesses = [predicted_rows[slot][0], *predicted_rows[slot][width - len(draft) + 1 :]]
            accepted.append(self._accept(i, draft, guesses))
        self._add_time(
            draft_tokens=float(sum(map(len, drafts))), accepted_tokens=float(sum(accepted))
        )
        resume = []
        for slot, count in enumerate(accepted):
            if count == 0 or hidden is None:
                resume.append(logits[slot])
            else:
                column = width - len(drafts[slot]) + count - 1
                resume.append(decoder.logits(hidden[slot, column][None])[0])
        lengths = torch.tensor([len(draft) for draft in drafts])
        decoder.drop_last(lengths - torch.tensor(accepted, dtype=torch.long))
        next_position = next_position + torch.tensor(accepted, device=next_position.device)
        logits = torch.stack(resume) if resume else logits
        keep = [slot for slot, i in enumerate(self.active) if i not in self.finished]
        if len(keep) < len(self.active):
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            if keep:
                decoder.select_rows(index)
                gate.select_rows(index)
            logits, next_position = logits[index], next_position[index]
            self.active = [self.active[slot] for slot in keep]
        return logits, next_position

    def _accept(self, i: int, draft: Sequence[int], guesses: Sequence[int]) -> int:
        """Record row ``i``'s draft tokens while they are its argmax; how many were kept.

        A row the stop rule finishes inside the draft is marked finished.
        """
        rule = self.settings.rule
        for index, token in enumerate(draft):
            if guesses[index] != token:
                return index
            reason = rule.reason(self.generated[i], token)
            if reason is not None:
                self.finished[i] = Finished(self.rows[i], self.generated[i], reason)
                return index + 1
        return len(draft)
