"""Batched generation under per-row head masks: the public :func:`generate` entry point.

Every row of a batch carries its own head mask (one pruning configuration), so one forward
pass serves many configurations. Prompts are ``prefix + suffix``: rows are laid out as
``[prefix][padding][suffix]`` with the padding masked out and position ids that skip it, which
is exactly equivalent to running each row alone. A shared prefix (few-shot exemplars) is run
once per configuration and its key/value cache reused for every question (prefix caching);
by default decoding then reads each configuration's prefix cache once per step for all of its
rows (shared-prefix attention, :mod:`sprint_lab.generation.shared_prefix`), while
``attention="bridge"`` keeps TransformerLens' own attention with one cache copy per row.
Finished rows (EOS, a stop string, the token limit) leave the batch and stop costing compute.

This module checks the arguments, tokenizes the prompts into rows and hands batches of rows to
:class:`~sprint_lab.generation.batch.Batch`; the decoding paths live in
:mod:`sprint_lab.generation.decoders`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import Tensor

from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import MaskBatch, ReplacementBatch, validate_mask, validate_replacement
from sprint_lab.core.model import LabModel
from sprint_lab.generation.batch import Batch, DecodeSettings, Finished, Row, RowQueue
from sprint_lab.generation.decoders import resolve_attention
from sprint_lab.generation.invariant import batch_invariant
from sprint_lab.generation.kv import PrefixCache
from sprint_lab.generation.limits import check_prompt_chars, check_token_counts
from sprint_lab.generation.sampling import Sampler
from sprint_lab.generation.stopping import StopRule, eos_ids
from sprint_lab.generation.verify import VerifyBatch, first_divergence

Prompt = str | tuple[str, str]
"""A whole prompt, or a ``(prefix, suffix)`` pair whose prefix is shared and cached."""

HeadMasks = Tensor | Sequence[Tensor] | None
"""``None``, one ``[n_layers, n_heads]`` mask, or one mask per prompt (stacked or a list)."""

HeadReplacements = Tensor | Sequence[Tensor] | None
"""``None`` (zero ablation), one ``[n_layers, n_heads, d_head]`` replacement, or one per prompt."""


@dataclass(frozen=True)
class Completion:
    """One generated answer.

    Attributes:
        text: the generated text, cut before the first stop string.
        n_tokens: number of generated tokens (stop string included, EOS excluded).
        finish_reason: ``"stop"`` (a stop string), ``"eos"`` or ``"length"``.
        prompt_index: index of the prompt in the call.
        sample_index: index of the sample for that prompt (``0`` unless ``num_samples > 1``).
        token_ids: the generated token ids (EOS excluded).
        diverged_at: with ``drafts=``, the first token index where the answer departs from its
            draft (``None`` when identical, or without a draft).
    """

    text: str
    n_tokens: int
    finish_reason: str
    prompt_index: int = 0
    sample_index: int = 0
    token_ids: tuple[int, ...] = ()
    diverged_at: int | None = None

    @classmethod
    def from_finished(cls, finished: Finished, rule: StopRule) -> Completion:
        """The answer of a finished row: decoded, then cut before its first stop string."""
        text, reason = rule.cut(rule.tokenizer.decode(finished.tokens), finished.reason)
        return cls(
            text=text,
            n_tokens=len(finished.tokens),
            finish_reason=reason,
            prompt_index=finished.row.prompt_index,
            sample_index=finished.row.sample_index,
            token_ids=tuple(finished.tokens),
            diverged_at=finished.diverged_at,
        )


def _split(prompt: Prompt) -> tuple[str, str]:
    if isinstance(prompt, str):
        return "", prompt
    if isinstance(prompt, tuple) and len(prompt) == 2:
        return prompt[0], prompt[1]
    raise InputError(f"a prompt is a string or a (prefix, suffix) pair, got {type(prompt)!r}")


def _stacked(
    values: Tensor | Sequence[Tensor], name: str, check: Callable[[Tensor], Tensor]
) -> Tensor:
    """``values`` as one tensor; a list is checked item by item (errors name ``name[i]``)."""
    if not isinstance(values, list | tuple):
        return torch.as_tensor(values)
    checked = []
    for i, value in enumerate(values):
        try:
            checked.append(check(torch.as_tensor(value)))
        except InputError as err:
            raise InputError(f"{name}[{i}]: {err}") from None
    return torch.stack(checked)


def _per_prompt(values: Tensor, single_dims: int, n_prompts: int, what: str) -> Tensor:
    """One entry per prompt: a single ``values`` is repeated, a stack must have ``n_prompts``."""
    if values.dim() == single_dims:
        return values.expand(n_prompts, *values.shape)
    if values.shape[0] != n_prompts:
        raise InputError(
            f"got {values.shape[0]} head {what}s for {n_prompts} prompts: "
            f"pass one {what}, or one per prompt"
        )
    return values


def normalise_gates(
    model: LabModel, head_masks: HeadMasks, head_replacements: HeadReplacements, n_prompts: int
) -> tuple[MaskBatch, ReplacementBatch | None, list[int]]:
    """Distinct (mask, replacement) pairs and, per prompt, the index of its pair.

    Raises:
        InputError: for a mask or replacement of the wrong shape, or a count that is neither 1
            nor ``n_prompts``.

    Example:
        >>> masks = sl.masks_for(model, [None, ["L0H1"], None])
        >>> distinct, replacements, index = normalise_gates(model, masks, None, 3)
        >>> distinct.shape, replacements, index
        (torch.Size([2, 3, 4]), None, [1, 0, 1])
        >>> means = torch.stack([torch.zeros(3, 4, 16), torch.ones(3, 4, 16)])
        >>> distinct, replacements, index = normalise_gates(model, masks[1], means, 2)
        >>> distinct.shape[0], replacements.shape, index
        (2, torch.Size([2, 3, 4, 16]), [0, 1])
    """
    shape = (model.n_layers, model.n_heads)
    if head_masks is None:
        masks = torch.ones(*shape)
    else:
        masks = _stacked(head_masks, "head_masks", lambda mask: validate_mask(model, mask))
    masks = _per_prompt(validate_mask(model, masks), 2, n_prompts, "mask")
    parts = [masks.flatten(1)]
    if head_replacements is not None:
        replacements = _stacked(
            head_replacements, "head_replacements",
            lambda r: cast(Tensor, validate_replacement(model, torch.ones(*shape), r)),
        )  # fmt: skip
        replacements = validate_replacement(model, torch.ones(*shape), replacements)
        assert replacements is not None
        replacements = _per_prompt(replacements, 3, n_prompts, "replacement")
        parts.append(replacements.to(masks.dtype).flatten(1))
    distinct, inverse = torch.unique(torch.cat(parts, dim=1), dim=0, return_inverse=True)
    cut = shape[0] * shape[1]
    distinct_masks = distinct[:, :cut].reshape(-1, *shape)
    if head_replacements is None:
        return distinct_masks, None, inverse.tolist()
    return distinct_masks, distinct[:, cut:].reshape(-1, *shape, model.d_head), inverse.tolist()


def make_rows(
    model: LabModel,
    prompts: Sequence[Prompt],
    mask_of_prompt: Sequence[int],
    num_samples: int,
    sampler: Sampler,
    seed: int,
) -> list[Row]:
    """Tokenize the prompts (each distinct text once) into ``num_samples`` rows per prompt.

    Example:
        >>> rows = make_rows(model, [("a b", " c")], [0], 2, Sampler(), seed=0)
        >>> [(row.sample_index, row.shared == len(row.prefix_ids)) for row in rows]
        [(0, True), (1, True)]
    """
    encoded: dict[str, list[int]] = {}

    def ids_of(text: str) -> list[int]:
        if text not in encoded:
            encoded[text] = (
                model.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            )
        return encoded[text]

    rows: list[Row] = []
    for p, prompt in enumerate(prompts):
        prefix, suffix = _split(prompt)
        ids, prefix_ids = ids_of(prefix + suffix), ids_of(prefix)
        shared = 0
        for a, b in zip(ids, prefix_ids, strict=False):
            if a != b:
                break
            shared += 1
        for s in range(num_samples):
            rows.append(
                Row(
                    index=len(rows),
                    prompt_index=p,
                    sample_index=s,
                    ids=ids,
                    prefix_ids=prefix_ids,
                    shared=min(shared, len(ids) - 1),
                    mask_key=mask_of_prompt[p],
                    generator=sampler.generator(seed, p, s),
                )
            )
    return rows


@contextmanager
def _progress(
    progress: bool | Callable[[int], None], total: int
) -> Iterator[Callable[[int], object]]:
    """A callback counting finished rows: a tqdm bar, the user's callback, or nothing."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="generating", unit="answer")
        try:
            yield bar.update
        finally:
            bar.close()
    elif callable(progress):
        yield progress
    else:
        yield lambda n: None


def _check_counts(num_samples: int, max_new_tokens: int) -> None:
    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def generate(
    model: LabModel,
    prompts: Sequence[Prompt] | Prompt,
    *,
    head_masks: HeadMasks = None,
    head_replacements: HeadReplacements = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    num_samples: int = 1,
    batch_size: int = 16,
    use_cache: bool = True,
    reuse_prefix: bool = True,
    prefix_cache: PrefixCache | None = None,
    progress: bool | Callable[[int], None] = False,
    attention: str = "auto",
    deterministic: bool = False,
    drafts: Sequence[Sequence[int] | None] | None = None,
    verify: bool = True,
    timings: MutableMapping[str, float] | None = None,
    continuous: bool = True,
) -> list[Completion]:
    """Generate completions, each prompt under its own head mask, in batches.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        prompts: strings, or ``(prefix, suffix)`` pairs whose shared prefix (few-shot
            exemplars) is computed once per head mask and reused.
        head_masks: ``None`` (no ablation), one ``[n_layers, n_heads]`` mask for every prompt, or
            one mask per prompt (``[n_prompts, n_layers, n_heads]`` or a list of masks). The mask
            multiplies each head's output before ``o_proj`` at every position of the prompt and at
            every decoding step; 0 ablates a head.
        head_replacements: what ablated heads output instead of zero (mean or resample
            ablation, :mod:`sprint_lab.core.ablation`): ``None``, one ``[n_layers, n_heads,
            d_head]`` tensor, or one per prompt; the gate computes ``z * m + (1 - m) * r``.
        max_new_tokens: generation limit per answer.
        temperature: 0 for greedy decoding; otherwise sampling at this temperature.
        top_k: keep the k most likely tokens when sampling (``None`` = all).
        top_p: nucleus sampling mass (``None`` = 1).
        seed: sampling seed. Each (prompt, sample) has its own generator, so a sample does not
            depend on which other rows share its batch.
        stop: stop strings; a row that produces one finishes (the text is cut before it) while
            the others go on.
        num_samples: samples per prompt (for best-of-N); results are prompt-major.
        batch_size: rows per forward pass.
        use_cache: decode with the key/value cache (``False`` recomputes the whole sequence at
            every step; only for checking the cache).
        reuse_prefix: reuse the KV cache of a shared prompt prefix.
        prefix_cache: a :class:`~sprint_lab.generation.kv.PrefixCache` to share across calls
            (e.g. a whole sweep).
        progress: ``True`` for a tqdm bar over rows, or a callback called with finished rows.
        attention: ``"shared_prefix"`` decodes with shared-prefix attention (each distinct
            prefix KV read once per step for all rows that share it; the Hugging Face attention
            module runs, so ``hook_z`` hooks fire but attention-internal bridge hooks such as
            ``hook_pattern`` do not); ``"bridge"`` runs the TransformerLens bridge's own
            attention with a ``DynamicCache``; ``"auto"`` (default) picks ``"shared_prefix"``
            unless the model cannot use it or a hook is attached to an attention-internal point
            (see :func:`~sprint_lab.generation.attention_swap.bridge_only_hooks`).
            ``use_cache=False`` always uses the bridge.
        deterministic: batch-invariant generation (:mod:`sprint_lab.generation.invariant`):
            a prompt's tokens do not depend on which other prompts share its batch, the batch
            size or the thread count. Needs the shared-prefix path and the KV cache.
        drafts: one draft answer per prompt (token ids, EOS excluded, e.g. the baseline's
            ``Completion.token_ids``) or ``None``; each completion then carries ``diverged_at``.
        verify: with ``drafts``, check each draft in one teacher-forced pass and decode only
            from where it departs (verify-then-decode, :mod:`sprint_lab.generation.verify`):
            the same tokens as plain decoding, for greedy decoding with ``deterministic=True``.
            ``False`` decodes plainly and measures ``diverged_at`` afterwards.
        timings: a dict that verify-then-decode adds its phase seconds and token counts to.
        continuous: continuous batching with ``deterministic=True`` (ignored otherwise): once
            a quarter of a batch's rows are done, waiting prompts are prefilled and join it
            (:mod:`sprint_lab.generation.batch`); the same tokens, as rows are batch-invariant.

    Returns:
        ``len(prompts) * num_samples`` :class:`Completion` objects, prompt-major.

    Raises:
        InputError: (a ``ValueError``) for bad counts, mask shapes or values (NaN/inf), sampling
            settings (a negative temperature, ``top_p`` outside ``(0, 1]``, a negative
            ``top_k``), prompts or an unusable ``attention``; all are checked before any
            forward pass.
        PromptTooLongError: (an ``InputError``) when a prompt's tokens plus ``max_new_tokens``
            exceed the model's context (:mod:`sprint_lab.generation.limits`).

    Example:
        >>> out = generate(model, ["Q: 2+3=?\\nA:"], max_new_tokens=3, num_samples=2)
        >>> [(c.sample_index, c.n_tokens, c.finish_reason) for c in out]
        [(0, 3, 'length'), (1, 3, 'length')]
    """
    # a 2-tuple is one (prefix, suffix) prompt, not a sequence of two prompts
    prompt_list = [cast(Prompt, prompts)] if isinstance(prompts, str | tuple) else list(prompts)
    _check_counts(num_samples, max_new_tokens)
    sampler = Sampler(temperature, top_k, top_p)  # checks the sampling settings
    split = [_split(prompt) for prompt in prompt_list]
    check_prompt_chars(model, [a + b for a, b in split], max_new_tokens)  # before tokenizing
    settings = DecodeSettings(
        attention=_attention_path(model, attention, deterministic, use_cache), sampler=sampler,
        rule=StopRule.build(model.tokenizer, stop, eos_ids(model), max_new_tokens),
        use_cache=use_cache, reuse_prefix=reuse_prefix, prefix_cache=prefix_cache,
    )  # fmt: skip
    masks, replacements, mask_of_prompt = normalise_gates(
        model, head_masks, head_replacements, len(prompt_list)
    )
    rows = make_rows(model, prompt_list, mask_of_prompt, num_samples, settings.sampler, seed)
    check_token_counts(model, [len(row.ids) for row in rows[::num_samples]], max_new_tokens)
    if drafts is not None:
        _check_drafts(drafts, len(prompt_list), num_samples, sampler, verify, deterministic)
    invariance = batch_invariant(model) if deterministic else contextlib.nullcontext()
    with _progress(progress, len(rows)) as advance, torch.inference_mode(), invariance:
        gates, verified = (masks, replacements), drafts if verify else None
        completions = _run_batches(
            model, rows, gates, settings, batch_size, advance, verified, timings,
            continuous=continuous and deterministic,
        )  # fmt: skip
    if drafts is not None and not verify:
        completions = [_measured(c, drafts[c.prompt_index]) for c in completions]
    return completions


def _attention_path(model: LabModel, attention: str, deterministic: bool, use_cache: bool) -> str:
    """The attention path ``attention`` resolves to, checked against ``deterministic``."""
    resolved = resolve_attention(model, attention)
    if deterministic and (resolved != "shared_prefix" or not use_cache):
        raise InputError(
            f"deterministic=True needs the shared-prefix attention path with the KV cache; "
            f"this call resolved attention={attention!r} to {resolved!r} with "
            f"use_cache={use_cache}; pass deterministic=False to run it anyway"
        )
    return resolved


def _run_batches(
    model: LabModel,
    rows: list[Row],
    gates: tuple[MaskBatch, ReplacementBatch | None],
    settings: DecodeSettings,
    batch_size: int,
    advance: Callable[[int], object],
    drafts: Sequence[Sequence[int] | None] | None,
    timings: MutableMapping[str, float] | None,
    continuous: bool,
) -> list[Completion]:
    """Decode ``rows`` ``batch_size`` at a time (verifying ``drafts`` when given); with
    ``continuous``, a batch refills the slots of finished rows from the waiting ones."""
    masks, replacements = gates  # (distinct masks, their replacements or None)
    if continuous and settings.prefix_cache is None:
        # a refill looks up the prefixes its batch already ran instead of running them again
        settings = replace(settings, prefix_cache=PrefixCache(max_entries=batch_size))
    pending = deque((row, None if drafts is None else drafts[row.prompt_index]) for row in rows)
    queue = RowQueue(pending, batch_size) if continuous else None
    finished: list[Finished] = []
    while pending:
        pairs = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
        chunk = [row for row, _ in pairs]
        if drafts is not None:
            chunk_drafts = [draft for _, draft in pairs]
            batch: Batch = VerifyBatch(
                model, chunk, masks, settings, chunk_drafts, timings, replacements, queue
            )
        else:
            batch = Batch(model, chunk, masks, settings, replacements, queue)
        done = batch.run()
        finished.extend(done)
        advance(len(done))
    finished.sort(key=lambda f: f.row.index)
    return [Completion.from_finished(f, settings.rule) for f in finished]


def _measured(completion: Completion, draft: Sequence[int] | None) -> Completion:
    """``completion`` with its ``diverged_at`` measured against ``draft``."""
    if draft is None:
        return completion
    return replace(completion, diverged_at=first_divergence(completion.token_ids, list(draft)))


def _check_drafts(
    drafts: Sequence[Sequence[int] | None],
    n_prompts: int,
    num_samples: int,
    sampler: Sampler,
    verify: bool,
    deterministic: bool,
) -> None:
    if len(drafts) != n_prompts:
        raise InputError(f"got {len(drafts)} drafts for {n_prompts} prompts: pass one per prompt")
    if num_samples != 1:
        raise InputError(f"drafts= needs num_samples=1, got {num_samples}")
    if verify and not sampler.greedy:
        raise InputError(
            "verify=True is exact only for greedy decoding (temperature=0); sampled answers "
            "decode plainly: pass verify=False"
        )
    if verify and not deterministic:
        raise InputError(
            "verify=True needs deterministic=True: only batch-invariant generation computes a "
            "teacher-forced position exactly as a decoding step; pass verify=False otherwise"
        )
