"""Batched generation under per-row head masks.

Every row of a batch carries its own head mask (one pruning configuration), so one forward
pass serves many configurations. Prompts are ``prefix + suffix``: rows are laid out as
``[prefix][padding][suffix]`` with the padding masked out and position ids that skip it, which
is exactly equivalent to running each row alone. A shared prefix (few-shot exemplars) is run
once per configuration and its key/value cache reused for every question (prefix caching);
by default decoding then reads each configuration's prefix cache once per step for all of its
rows (shared-prefix attention, :mod:`sprint_lab.generation.shared_prefix`), while ``attention="bridge"``
keeps TransformerLens' own attention with one cache copy per row.
Finished rows (EOS, a stop string, the token limit) leave the batch and stop costing compute.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sprint_lab.core.gate import head_mask, validate_mask
from sprint_lab.generation.kv import cache_layers, new_cache, split_rows, stack_entries
from sprint_lab.generation.shared_prefix import (
    STATE_KWARG,
    SharedPrefixState,
    bridge_only_hooks,
    shared_prefix_attention,
    shared_prefix_supported,
)

ATTENTION_PATHS = ("auto", "shared_prefix", "bridge")


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
    """

    text: str
    n_tokens: int
    finish_reason: str
    prompt_index: int = 0
    sample_index: int = 0
    token_ids: tuple[int, ...] = ()


Prompt = str | tuple[str, str]


@dataclass
class _Row:
    index: int  # position in the flat output list
    prompt_index: int
    sample_index: int
    ids: list[int]  # the whole prompt, tokenized as one text
    prefix_ids: list[int]  # the tokenized shared prefix (may overhang ``ids``' boundary)
    shared: int  # how many leading tokens of ``ids`` equal ``prefix_ids``
    mask_key: int  # index into the distinct masks
    generator: torch.Generator | None


class PrefixCache:
    """LRU store of key/value caches for shared prompt prefixes, keyed by (prefix, mask).

    The cache of a prefix depends on the head mask (the gate acts on every prompt position),
    so each configuration has its own entry. Entries hold ``[n_layers]`` pairs of tensors of
    shape ``[1, n_kv_heads, prefix_len, d_head]``.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, list[tuple[Tensor, Tensor]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> list[tuple[Tensor, Tensor]] | None:
        entry = self._store.get(key)
        if entry is not None:
            self._store.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, key: tuple, value: list[tuple[Tensor, Tensor]]) -> None:
        self.misses += 1
        self._store[key] = value
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()


def _stop_strings(model, stop: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(s for s in (stop or ()) if s)


def _eos_ids(model) -> set[int]:
    ids: set[int] = set()
    config_eos = getattr(model.hf_model.generation_config, "eos_token_id", None)
    for value in (model.tokenizer.eos_token_id, config_eos):
        if value is None:
            continue
        ids.update(value if isinstance(value, list | tuple) else [value])
    return ids


def _split(prompt: Prompt) -> tuple[str, str]:
    if isinstance(prompt, str):
        return "", prompt
    if isinstance(prompt, tuple) and len(prompt) == 2:
        return prompt[0], prompt[1]
    raise ValueError(f"a prompt is a string or a (prefix, suffix) pair, got {type(prompt)!r}")


def _sample(
    logits: Float[Tensor, "batch vocab"],
    rows: list[_Row],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> Int[Tensor, " batch"]:
    """Greedy argmax, or seeded sampling with one generator per row (batch-independent)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the first over top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    picks = [torch.multinomial(probs[i], 1, generator=row.generator) for i, row in enumerate(rows)]
    return torch.cat(picks)


class _CacheDecoder:
    """Decoding through the bridge's own attention with a Hugging Face ``DynamicCache``.

    The reference path: it also serves ``use_cache=False`` (the whole sequence recomputed at
    every step) and models that cannot use shared-prefix attention.
    """

    def __init__(self, model, use_cache: bool) -> None:
        self.model = model
        self.use_cache = use_cache
        self.past = None
        self.attention: Tensor | None = None
        self.history: Tensor | None = None

    def compute_prefix(self, prefix_ids: list[int], n: int) -> list[list[tuple[Tensor, Tensor]]]:
        ids = torch.tensor([prefix_ids] * n, device=self.model.device)
        out = self.model.hf_model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return split_rows(cache_layers(out.past_key_values), n)

    def start(self, entries, mask_keys, ids, body_mask, positions, capacity) -> Tensor:
        device = self.model.device
        batch = ids.shape[0]
        prefix_len = 0
        if entries is not None:
            self.past = new_cache(stack_entries(entries, mask_keys))
            prefix_len = self.past.get_seq_length()
        self.attention = torch.cat(
            [torch.ones((batch, prefix_len), dtype=torch.long), body_mask], dim=1
        ).to(device)
        self.history = ids
        return self._forward(ids, positions)

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
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

    def step(self, tokens: Tensor, positions: Tensor) -> Tensor:
        ones = torch.ones((tokens.shape[0], 1), dtype=self.attention.dtype, device=tokens.device)
        self.attention = torch.cat([self.attention, ones], dim=1)
        if self.use_cache:
            return self._forward(tokens, positions)
        self.history = torch.cat([self.history, tokens], dim=1)
        return self._forward(self.history, (self.attention.cumsum(dim=1) - 1).clamp(min=0))

    def select_rows(self, index: Tensor) -> None:
        if self.use_cache:
            self.past.batch_select_indices(index)
        else:
            self.history = self.history[index]
        self.attention = self.attention[index]


class _SharedPrefixDecoder:
    """Decoding with shared-prefix attention (see :mod:`sprint_lab.generation.shared_prefix`)."""

    def __init__(self, model) -> None:
        self.model = model
        self.state: SharedPrefixState | None = None

    def _run(self, ids: Tensor, positions: Tensor, state: SharedPrefixState) -> Tensor:
        out = self.model.hf_model(
            input_ids=ids,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=1,
            **{STATE_KWARG: state},
        )
        state.commit()
        return out.logits[:, -1, :]

    def compute_prefix(self, prefix_ids: list[int], n: int) -> list[list[tuple[Tensor, Tensor]]]:
        device = self.model.device
        ids = torch.tensor([prefix_ids] * n, device=device)
        state = SharedPrefixState(
            self.model.n_layers, torch.arange(n, device=device), None, len(prefix_ids)
        )
        state.begin(torch.ones_like(ids, dtype=torch.bool))
        positions = torch.arange(len(prefix_ids), device=device).expand(n, -1)
        self._run(ids, positions, state)
        return split_rows(state.stored(), n)

    def start(self, entries, mask_keys, ids, body_mask, positions, capacity) -> Tensor:
        device = self.model.device
        prefix = None
        row_group = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
        if entries is not None:
            groups = list(dict.fromkeys(mask_keys))
            slot = {key: i for i, key in enumerate(groups)}
            row_group = torch.tensor([slot[key] for key in mask_keys], device=device)
            prefix = stack_entries(entries, groups)
        self.state = SharedPrefixState(self.model.n_layers, row_group, prefix, capacity)
        self.state.begin(body_mask.to(device=device, dtype=torch.bool))
        return self._run(ids, positions, self.state)

    def step(self, tokens: Tensor, positions: Tensor) -> Tensor:
        self.state.begin(torch.ones_like(tokens, dtype=torch.bool))
        return self._run(tokens, positions, self.state)

    def select_rows(self, index: Tensor) -> None:
        self.state.select_rows(index)


class _Batch:
    """State of one batch while it decodes."""

    def __init__(
        self,
        model,
        rows: list[_Row],
        masks: Tensor,
        prefix_cache: PrefixCache | None,
        attention: str,
    ):
        self.model = model
        self.rows = rows
        self.masks = masks
        self.prefix_cache = prefix_cache
        self.attention = attention
        self.device = model.device

    def _prefix_entries(self, decoder, prefix_ids: list[int], mask_keys: list[int], gate) -> dict:
        """KV caches of the shared prefix, one per distinct mask in the batch (LRU-cached)."""
        entries: dict[int, list[tuple[Tensor, Tensor]]] = {}
        missing = []
        for key in dict.fromkeys(mask_keys):
            mask = self.masks[key]
            store_key = (self.attention, tuple(prefix_ids), tuple(mask.flatten().tolist()))
            hit = self.prefix_cache.get(store_key) if self.prefix_cache is not None else None
            if hit is not None:
                entries[key] = hit
            else:
                missing.append((key, store_key))
        if missing:
            gate.set_mask(self.masks[[key for key, _ in missing]])
            computed = decoder.compute_prefix(prefix_ids, len(missing))
            for (key, store_key), entry in zip(missing, computed, strict=True):
                entries[key] = entry
                if self.prefix_cache is not None:
                    self.prefix_cache.put(store_key, entry)
        return entries

    def run(
        self,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        stop: tuple[str, ...],
        eos: set[int],
        use_cache: bool,
        reuse_prefix: bool,
    ) -> dict[int, Completion]:
        model, rows, device = self.model, self.rows, self.device
        tokenizer = model.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        prefixes = {tuple(row.prefix_ids) for row in rows}
        prefix_len = min(row.shared for row in rows)
        shared_prefix = reuse_prefix and use_cache and len(prefixes) == 1 and prefix_len > 0
        fast = use_cache and self.attention == "shared_prefix"
        decoder = _SharedPrefixDecoder(model) if fast else _CacheDecoder(model, use_cache)
        row_masks = self.masks[[row.mask_key for row in rows]]
        mask_keys = [row.mask_key for row in rows]
        results: dict[int, Completion] = {}
        # the gate hooks every layer any row touches; per-row values are set before the body runs
        with contextlib.ExitStack() as stack:
            gate = stack.enter_context(head_mask(model, row_masks))
            if fast:
                stack.enter_context(shared_prefix_attention(model))
            entries = None
            if shared_prefix:
                prefix_ids = rows[0].prefix_ids[:prefix_len]
                entries = self._prefix_entries(decoder, prefix_ids, mask_keys, gate)
                bodies = [row.ids[prefix_len:] for row in rows]
            else:
                bodies = [row.ids for row in rows]
                prefix_len = 0
            gate.set_mask(row_masks)
            width = max(len(body) for body in bodies)
            if width == 0:
                raise ValueError("empty prompt: nothing to condition generation on")
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            body_mask = torch.zeros((len(rows), width), dtype=torch.long)
            positions = torch.zeros((len(rows), width), dtype=torch.long)
            for i, body in enumerate(bodies):
                n = len(body)
                if n:
                    ids[i, width - n :] = torch.tensor(body)
                    body_mask[i, width - n :] = 1
                    positions[i, width - n :] = torch.arange(prefix_len, prefix_len + n)
            ids, positions = ids.to(device), positions.to(device)
            next_position = positions[:, -1] + 1
            logits = decoder.start(
                entries, mask_keys, ids, body_mask, positions, width + max_new_tokens
            )
            generated: list[list[int]] = [[] for _ in rows]
            active = list(range(len(rows)))  # indices into rows, aligned with the batch
            window = max((len(s) for s in stop), default=0) + 2
            for _ in range(max_new_tokens):
                batch_rows = [rows[i] for i in active]
                tokens = _sample(logits, batch_rows, temperature, top_k, top_p)
                keep = []
                for slot, (i, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
                    row = rows[i]
                    reason = None
                    if token in eos:
                        reason = "eos"
                    else:
                        generated[i].append(token)
                        if stop:
                            tail = tokenizer.decode(generated[i][-window:])
                            if any(s in tail for s in stop):
                                reason = "stop"
                        if reason is None and len(generated[i]) >= max_new_tokens:
                            reason = "length"
                    if reason is None:
                        keep.append(slot)
                    else:
                        results[row.index] = self._finish(row, generated[i], reason, stop)
                if not keep:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    decoder.select_rows(index)
                    tokens = tokens[index.to(tokens.device)]
                    next_position = next_position[index]
                    gate.select_rows(index)
                    active = [active[slot] for slot in keep]
                logits = decoder.step(tokens[:, None].to(device), next_position[:, None])
                next_position = next_position + 1
            for i in active:
                row = rows[i]
                if row.index not in results:
                    results[row.index] = self._finish(row, generated[i], "length", stop)
        return results

    def _finish(self, row: _Row, tokens: list[int], reason: str, stop: tuple[str, ...]):
        text = self.model.tokenizer.decode(tokens)
        if reason == "stop" or stop:
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
                reason = "stop"
        return Completion(
            text=text,
            n_tokens=len(tokens),
            finish_reason=reason,
            prompt_index=row.prompt_index,
            sample_index=row.sample_index,
            token_ids=tuple(tokens),
        )


def _normalise_masks(model, head_masks, n_prompts: int) -> tuple[Tensor, list[int]]:
    """Distinct masks ``[k, n_layers, n_heads]`` and, per prompt, the index of its mask."""
    if head_masks is None:
        return torch.ones(1, model.n_layers, model.n_heads), [0] * n_prompts
    if isinstance(head_masks, list | tuple):
        head_masks = torch.stack([validate_mask(model, torch.as_tensor(m)) for m in head_masks])
    masks = validate_mask(model, head_masks)
    if masks.dim() == 2:
        return masks[None], [0] * n_prompts
    if masks.shape[0] != n_prompts:
        raise ValueError(
            f"got {masks.shape[0]} head masks for {n_prompts} prompts: "
            "pass one mask, or one per prompt"
        )
    distinct, inverse = torch.unique(masks.flatten(1), dim=0, return_inverse=True)
    return distinct.reshape(-1, model.n_layers, model.n_heads), inverse.tolist()


def generate(
    model,
    prompts: Sequence[Prompt] | Prompt,
    *,
    head_masks: Tensor | Sequence[Tensor] | None = None,
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
        prefix_cache: a :class:`PrefixCache` to share across calls (e.g. a whole sweep).
        progress: ``True`` for a tqdm bar over rows, or a callback called with finished rows.
        attention: ``"shared_prefix"`` decodes with shared-prefix attention (each distinct
            prefix KV read once per step for all rows that share it; the Hugging Face attention
            module runs, so ``hook_z`` hooks fire but attention-internal bridge hooks such as
            ``hook_pattern`` do not); ``"bridge"`` runs the TransformerLens bridge's own
            attention with a ``DynamicCache``; ``"auto"`` (default) picks ``"shared_prefix"``
            unless the model cannot use it or a hook is attached to an attention-internal point
            (see :func:`~sprint_lab.generation.shared_prefix.bridge_only_hooks`). ``use_cache=False``
            always uses the bridge.

    Returns:
        ``len(prompts) * num_samples`` :class:`Completion` objects, prompt-major.

    Example:
        >>> out = generate(model, ["Q: 2+3=?\\nA:"], max_new_tokens=8,  # doctest: +SKIP
        ...                stop=["\\n"])
        >>> out[0].text, out[0].finish_reason                              # doctest: +SKIP
        (' 5', 'stop')
    """
    if isinstance(prompts, str | tuple):
        prompts = [prompts]
    prompts = list(prompts)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"unknown attention {attention!r}; use one of {ATTENTION_PATHS}")
    if attention == "auto":
        usable = shared_prefix_supported(model) and not bridge_only_hooks(model)
        attention = "shared_prefix" if usable else "bridge"
    elif attention == "shared_prefix":
        if not shared_prefix_supported(model):
            raise ValueError(
                f"{model.name} cannot use shared-prefix attention (sliding window, soft-capping "
                "or an attention module that does not dispatch through AttentionInterface); "
                "use attention='bridge'"
            )
        if bridge_only_hooks(model):
            raise ValueError(
                "hooks on " + ", ".join(bridge_only_hooks(model)) + " fire only in the bridge's "
                "own attention; use attention='bridge' (or 'auto') to keep them"
            )
    masks, mask_of_prompt = _normalise_masks(model, head_masks, len(prompts))
    tokenizer = model.tokenizer
    encoded: dict[str, list[int]] = {}

    def ids_of(text: str) -> list[int]:
        if text not in encoded:
            encoded[text] = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return encoded[text]

    rows: list[_Row] = []
    for p, prompt in enumerate(prompts):
        prefix, suffix = _split(prompt)
        ids, prefix_ids = ids_of(prefix + suffix), ids_of(prefix)
        shared = 0
        for a, b in zip(ids, prefix_ids, strict=False):
            if a != b:
                break
            shared += 1
        for s in range(num_samples):
            generator = None
            if temperature > 0:
                generator = torch.Generator(device="cpu")
                generator.manual_seed((seed * 1_000_003 + p * 7919 + s) % (2**63 - 1))
            rows.append(
                _Row(
                    index=len(rows),
                    prompt_index=p,
                    sample_index=s,
                    ids=ids,
                    prefix_ids=prefix_ids,
                    shared=min(shared, len(ids) - 1),
                    mask_key=mask_of_prompt[p],
                    generator=generator,
                )
            )
    stop_strings = _stop_strings(model, stop)
    eos = _eos_ids(model)
    bar = None
    callback = progress if callable(progress) else None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="generating", unit="answer")
    results: dict[int, Completion] = {}
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                done = _Batch(model, chunk, masks, prefix_cache or PrefixCache(), attention).run(
                    max_new_tokens,
                    temperature,
                    top_k,
                    top_p,
                    stop_strings,
                    eos,
                    use_cache,
                    reuse_prefix,
                )
                results.update(done)
                if bar is not None:
                    bar.update(len(chunk))
                if callback is not None:
                    callback(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(rows))]
