"""Teacher forcing: score the gold worked solution after the prompt in one forward pass.

Instead of generating, the importance proxies feed ``prompt + gold target``
(:func:`~sprint_lab.tasks.answers.gold_target`) and read the model's log-probability of each
target token from the hidden state one position earlier. This module holds that machinery:

- :func:`encode_targets` tokenises prompt and target and locates the final-answer tokens in the
  target (through the fast tokenizer's offset mapping);
- :func:`layout` right-pads rows into one batch: under causal attention a real token only sees
  tokens before it, never padding, so no attention mask is needed and rows stay independent;
- the prompt prefix shared by every problem (the few-shot exemplars) runs once, and its key/value
  cache is reused for every row (:func:`gated_prefix_kv` for the gradient pass, where the cache
  keeps its graph, and :class:`PrefixCaches` for one cache per pruning config);
- :func:`gradient_batch` and :func:`answer_logprob_batch` are the two batched passes, each with a
  per-row head mask through :func:`~sprint_lab.core.gate.head_mask`.

Example:
    >>> from sprint_lab.tasks.prompts import get_template
    >>> rows = encode_targets(model, problems[:2], get_template("fewshot_cot"), 512)
    >>> shared_prefix_len(rows) > 0, rows[0].answer[-1] < len(rows[0].target_ids)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache

from sprint_lab.core.gate import head_mask
from sprint_lab.core.model import LabModel
from sprint_lab.generation.kv import KV, cache_layers, new_cache, split_rows, stack_entries
from sprint_lab.tasks.answers import gold_target
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import PromptTemplate

__all__ = [
    "PrefixCaches",
    "TeacherForced",
    "answer_logprob_batch",
    "check_sizes",
    "decoder",
    "encode_targets",
    "gated_prefix_kv",
    "gradient_batch",
    "layout",
    "pad_token_id",
    "progress_bar",
    "run_decoder",
    "shared_prefix_len",
    "token_logprobs",
]


@dataclass
class TeacherForced:
    """One problem's token ids for teacher forcing.

    Attributes:
        id: the problem id.
        prompt_ids: the rendered prompt's tokens.
        target_ids: the gold target's tokens, capped at ``max_target_tokens``.
        answer: indices (into the uncapped target ids) of the tokens covering the final answer.
        n_target: the uncapped target length.
    """

    id: str
    prompt_ids: list[int]
    target_ids: list[int]
    answer: list[int]
    n_target: int


def encode_targets(
    model: LabModel,
    problems: Sequence[Problem],
    template: PromptTemplate,
    max_target_tokens: int,
) -> list[TeacherForced]:
    """Tokenise each problem's prompt and gold target and locate its final-answer tokens.

    Raises:
        ValueError: a slow tokenizer (no offset mappings), an empty prompt, or no token covering
            the answer.

    Example:
        >>> from sprint_lab.tasks.prompts import get_template
        >>> row = encode_targets(model, problems[:1], get_template("fewshot_cot"), 4)[0]
        >>> len(row.target_ids), row.n_target > 4
        (4, True)
    """
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "head_importance needs a fast tokenizer (offset mappings locate the answer tokens)"
        )
    out = []
    for problem in problems:
        prefix, suffix = template.parts(problem.question, tokenizer)
        prompt_ids = tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"]
        if not prompt_ids:
            raise ValueError(f"problem {problem.id!r}: the prompt tokenizes to nothing")
        target = gold_target(problem, template)
        enc = tokenizer(target.text, add_special_tokens=False, return_offsets_mapping=True)
        answer = [
            i
            for i, (s, e) in enumerate(enc["offset_mapping"])
            if s < target.answer_end and e > target.answer_start
        ]
        if not answer:
            raise ValueError(
                f"problem {problem.id!r}: no token covers the answer {target.answer!r}"
            )
        ids = list(enc["input_ids"])
        out.append(
            TeacherForced(problem.id, list(prompt_ids), ids[:max_target_tokens], answer, len(ids))
        )
    return out


def shared_prefix_len(encoded: Sequence[TeacherForced]) -> int:
    """Tokens every sequence starts with, leaving at least one prompt token per row.

    Example:
        >>> rows = [TeacherForced("a", [1, 2, 3], [9], [0], 1),
        ...         TeacherForced("b", [1, 2], [9], [0], 1)]
        >>> shared_prefix_len(rows)
        1
    """
    first = encoded[0].prompt_ids
    n = min(len(e.prompt_ids) for e in encoded) - 1
    for e in encoded[1:]:
        k = 0
        while k < n and e.prompt_ids[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def decoder(model: LabModel) -> torch.nn.Module:
    """The transformer body (final norm included, no unembedding): ``hf_model.base_model``."""
    return model.hf_model.base_model


def token_logprobs(
    model: LabModel, hidden: Float[Tensor, "n d_model"], targets: Int[Tensor, " n"]
) -> Float[Tensor, " n"]:
    """float32 log-probability of ``targets`` given final hidden states (unembedding only here)."""
    logits = model.hf_model.get_output_embeddings()(hidden).float()
    cap = getattr(model.hf_model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def layout(
    bodies: Sequence[Sequence[int]], start: int, pad_id: int, device: torch.device
) -> tuple[Int[Tensor, "batch width"], Int[Tensor, "batch width"]]:
    """Right-pad ``bodies`` into ``[batch, width]`` ids with positions ``start, start+1, ...``.

    Right padding needs no attention mask: under causal attention a real token only sees the
    tokens before it, which are never padding, so a row's outputs do not depend on the others.

    Example:
        >>> ids, positions = layout([[5, 6, 7], [8]], 10, 0, torch.device("cpu"))
        >>> ids.tolist(), positions[1].tolist()
        ([[5, 6, 7], [8, 0, 0]], [10, 11, 12])
    """
    width = max(len(b) for b in bodies)
    ids = torch.full((len(bodies), width), pad_id, dtype=torch.long)
    for i, body in enumerate(bodies):
        ids[i, : len(body)] = torch.tensor(body, dtype=torch.long)
    positions = torch.arange(start, start + width).expand(len(bodies), width)
    return ids.to(device), positions.to(device)


def run_decoder(
    model: LabModel,
    ids: Int[Tensor, "batch width"],
    positions: Int[Tensor, "batch width"],
    past: DynamicCache | None,
) -> Float[Tensor, "batch width d_model"]:
    """Final hidden states of ``ids`` at ``positions``, after the cached prefix ``past`` if any."""
    out = decoder(model)(
        input_ids=ids,
        position_ids=positions,
        past_key_values=past,
        use_cache=past is not None,
    )
    return out.last_hidden_state


def pad_token_id(model: LabModel) -> int:
    """The tokenizer's pad id, or 0 (right padding is never attended to, so any id works)."""
    pad = model.tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def progress_bar(progress: bool, total: int, desc: str) -> Any:
    """A tqdm bar over ``total`` rows, or ``None`` without ``progress``."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row")


def check_sizes(problems: Sequence[Problem], batch_size: int, max_target_tokens: int) -> None:
    """Reject empty ``problems`` and non-positive (or non-int) sizes with a clear message.

    Example:
        >>> check_sizes(problems, 0, 512)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int >= 1, got 0
    """
    if len(problems) == 0:
        raise ValueError("problems is empty: head importance needs at least one problem")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if (
        isinstance(max_target_tokens, bool)
        or not isinstance(max_target_tokens, int)
        or max_target_tokens < 1
    ):
        raise ValueError(f"max_target_tokens must be an int >= 1, got {max_target_tokens!r}")


# --------------------------------------------------------------------------------------------
# The gradient pass
# --------------------------------------------------------------------------------------------


def gated_prefix_kv(
    model: LabModel, prefix_ids: list[int], mask: Float[Tensor, "n_layers n_heads"]
) -> list[Tensor]:
    """Keys and values of the shared prefix under ``mask``, flattened ``[k0, v0, k1, v1, ...]``.

    Run with grad enabled: the tensors keep their graph back to ``mask``, so the gradient that
    :func:`gradient_batch` sends into the cache can be pushed on into the prefix's gate.
    """
    ids = torch.tensor([prefix_ids], device=model.device)
    with head_mask(model, mask):
        out = decoder(model)(input_ids=ids, use_cache=True)
    return [t for pair in cache_layers(out.past_key_values) for t in pair]


def _target_positions(
    chunk: Sequence[TeacherForced], shared: int, tokens: Sequence[Sequence[int]]
) -> tuple[list[int], list[int], list[int]]:
    """``(rows, cols, targets)``: where each row's target token ``t`` is predicted from.

    ``tokens[i]`` lists the target-token indices of row ``i`` to score; the token is predicted
    at the body position just before it (the body is the prompt after ``shared``, then target).
    """
    rows, cols, targets = [], [], []
    for i, (e, wanted) in enumerate(zip(chunk, tokens, strict=True)):
        first = len(e.prompt_ids) - shared  # index of the first target token in the body
        for t in wanted:
            rows.append(i)
            cols.append(first + t - 1)
            targets.append(e.target_ids[t])
    return rows, cols, targets


def _push_through_prefix(
    prefix_kv: Sequence[Tensor],
    cotangents: Sequence[Tensor],
    prefix_mask: Tensor,
    grad: Float[Tensor, "batch n_layers n_heads"],
) -> None:
    """Add to ``grad[i]`` the part of row ``i``'s gradient that flows through the prefix cache."""
    # layer-0 keys/values do not depend on the gate (and need no grad if weights are frozen)
    linked = [(t, c) for t, c in zip(prefix_kv, cotangents, strict=True) if t.requires_grad]
    for i in range(grad.shape[0]):
        (through_prefix,) = torch.autograd.grad(
            [t for t, _ in linked],
            prefix_mask,
            grad_outputs=[c[i : i + 1] for _, c in linked],
            retain_graph=True,
            allow_unused=True,
        )
        if through_prefix is not None:
            grad[i] += through_prefix.float()


def gradient_batch(
    model: LabModel,
    chunk: Sequence[TeacherForced],
    shared: int,
    prefix_kv: Sequence[Tensor],
    prefix_mask: Float[Tensor, "n_layers n_heads"] | None,
) -> Float[Tensor, "batch n_layers n_heads"]:
    """Per-row gradient of the mean target NLL with respect to that row's head gate, at ξ = 1.

    Args:
        model: the model.
        chunk: the rows of this batch.
        shared: length of the shared prefix in ``prefix_kv`` (0: none).
        prefix_kv: :func:`gated_prefix_kv` of the shared prefix (empty when ``shared`` is 0).
        prefix_mask: the gate the prefix ran under (``None`` when ``shared`` is 0).

    Returns:
        ``[batch, n_layers, n_heads]`` float32 gradients on the CPU.
    """
    device, n = model.device, len(chunk)
    mask = torch.ones(n, model.n_layers, model.n_heads, device=device, requires_grad=True)
    leaves = [t.detach().expand(n, *t.shape[1:]).clone().requires_grad_(True) for t in prefix_kv]
    past = new_cache(list(zip(leaves[0::2], leaves[1::2], strict=True))) if leaves else None
    bodies = [e.prompt_ids[shared:] + e.target_ids for e in chunk]
    ids, positions = layout(bodies, shared, pad_token_id(model), device)
    every_token = [range(len(e.target_ids)) for e in chunk]
    rows, cols, targets = _target_positions(chunk, shared, every_token)
    with head_mask(model, mask):
        hidden = run_decoder(model, ids, positions, past)
    logp = token_logprobs(
        model,
        hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)],
        torch.tensor(targets, device=device),
    )
    owner = torch.tensor(rows, device=device)
    counts = torch.bincount(owner, minlength=n).clamp(min=1).float()
    losses = -torch.zeros(n, device=device).index_add(0, owner, logp) / counts
    got = torch.autograd.grad(losses.sum(), [mask, *leaves], allow_unused=True)
    grad = got[0].detach().float().clone()
    if leaves:
        cotangents = [
            g if g is not None else torch.zeros_like(leaf)
            for g, leaf in zip(got[1:], leaves, strict=True)
        ]
        _push_through_prefix(prefix_kv, cotangents, prefix_mask, grad)
    return grad.cpu()


# --------------------------------------------------------------------------------------------
# The log-prob pass
# --------------------------------------------------------------------------------------------


class PrefixCaches:
    """The shared prefix's key/value cache under each pruning config, computed on demand.

    Rows come config-major, so a config's entry is dropped once a row of a later config shows
    up: only the configs of the batch in flight are held.

    Args:
        model: the model.
        prefix_ids: the shared prefix tokens.
        masks: ``[n_configs, n_layers, n_heads]`` head masks, one per config.

    Example:
        >>> masks = torch.ones(2, model.n_layers, model.n_heads)
        >>> past = PrefixCaches(model, [1, 2, 3], masks).past([0, 0, 1])
        >>> past.get_seq_length()
        3
    """

    def __init__(
        self,
        model: LabModel,
        prefix_ids: list[int],
        masks: Float[Tensor, "n_configs n_layers n_heads"],
    ) -> None:
        self.model = model
        self.prefix_ids = prefix_ids
        self.masks = masks
        self.entries: dict[int, list[KV]] = {}

    def _compute(self, configs: list[int]) -> None:
        ids = torch.tensor([self.prefix_ids] * len(configs), device=self.model.device)
        with head_mask(self.model, self.masks[configs]):
            out = decoder(self.model)(input_ids=ids, use_cache=True)
        entries = split_rows(cache_layers(out.past_key_values), len(configs))
        self.entries.update(zip(configs, entries, strict=True))

    def past(self, row_configs: list[int]) -> DynamicCache:
        """A cache with one row per entry of ``row_configs`` (config indices, non-decreasing)."""
        for config in [c for c in self.entries if c < row_configs[0]]:
            del self.entries[config]  # config-major order: never needed again
        missing = [c for c in dict.fromkeys(row_configs) if c not in self.entries]
        if missing:
            self._compute(missing)
        return new_cache(stack_entries(self.entries, row_configs))


def answer_logprob_batch(
    model: LabModel,
    chunk: Sequence[TeacherForced],
    shared: int,
    past: DynamicCache | None,
    row_masks: Float[Tensor, "batch n_layers n_heads"],
) -> Float[Tensor, " batch"]:
    """Summed log-probability of each row's final-answer tokens; ``row_masks[i]`` gates row ``i``.

    The target is cut right after the answer's last token; ``past`` holds the first ``shared``
    prompt tokens of every row (``None`` when ``shared`` is 0).
    """
    device = model.device
    bodies = [e.prompt_ids[shared:] + e.target_ids[: e.answer[-1] + 1] for e in chunk]
    ids, positions = layout(bodies, shared, pad_token_id(model), device)
    rows, cols, targets = _target_positions(chunk, shared, [e.answer for e in chunk])
    with head_mask(model, row_masks):
        hidden = run_decoder(model, ids, positions, past)
    row_t = torch.tensor(rows, device=device)
    logp = token_logprobs(
        model,
        hidden[row_t, torch.tensor(cols, device=device)],
        torch.tensor(targets, device=device),
    )
    return torch.zeros(len(chunk), device=device).index_add(0, row_t, logp).cpu()
