"""Cheap head-importance proxies to pre-screen heads before paying for a generation sweep.

The *gradient* proxy is Michel et al.'s (2019) score: put a gate ξ = 1 on every head's output,
teacher-force the gold worked solution after the prompt, and average |∂ loss / ∂ ξ| over
examples, taking the absolute value per example (a ``[batch, n_layers, n_heads]`` gate), then
normalise each layer to unit L2 norm. The *log-prob* proxy prunes each candidate head in turn
and measures the teacher-forced change in log-probability of the gold final answer tokens
(e.g. ``"18"`` in ``"The answer is 18."``); both run through the one head gate of
:mod:`sprint_lab.core.gate`, and :func:`correlate` checks them against a sweep's accuracy deltas.

Example:
    >>> problems = load_problems("arith", limit=16)                      # doctest: +SKIP
    >>> imp = head_importance(model, problems, layers=[0, 15])           # doctest: +SKIP
    >>> imp.gradient.round(2)                                            # doctest: +SKIP
    >>> correlate(imp, sweep_result.deltas())                            # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from sprint_lab.core.gate import head_mask, masks_for
from sprint_lab.core.heads import Head, all_heads, as_heads
from sprint_lab.generation.kv import cache_layers, new_cache, split_rows
from sprint_lab.tasks.answers import GoldTarget, gold_target
from sprint_lab.tasks.prompts import PromptTemplate, get_template

__all__ = [
    "PROXIES",
    "GoldTarget",
    "ImportanceResult",
    "answer_logprobs",
    "correlate",
    "gate_gradients",
    "gold_target",
    "head_importance",
]

#: Proxy names accepted by :func:`head_importance`.
PROXIES: tuple[str, ...] = ("gradient", "logprob")

_LAYER_EPS = 1e-20


# --------------------------------------------------------------------------------------------
# Tokenization and forward passes
# --------------------------------------------------------------------------------------------


@dataclass
class _Encoded:
    id: str
    prompt_ids: list[int]
    target_ids: list[int]  # capped at max_target_tokens
    answer: list[int]  # indices into the uncapped target ids
    n_target: int  # uncapped target length


def _encode(
    model: Any, problems: Sequence[Any], template: PromptTemplate, max_target_tokens: int
) -> list[_Encoded]:
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
            _Encoded(problem.id, list(prompt_ids), ids[:max_target_tokens], answer, len(ids))
        )
    return out


def _shared_prefix_len(encoded: Sequence[_Encoded]) -> int:
    """Tokens every sequence starts with, leaving at least one prompt token per row."""
    first = encoded[0].prompt_ids
    n = min(len(e.prompt_ids) for e in encoded) - 1
    for e in encoded[1:]:
        k = 0
        while k < n and e.prompt_ids[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _decoder(model: Any) -> Any:
    """The transformer body (final norm included, no unembedding): ``hf_model.base_model``."""
    return model.hf_model.base_model


def _token_logprobs(
    model: Any, hidden: Float[Tensor, "n d_model"], targets: Tensor
) -> Float[Tensor, " n"]:
    """float32 log-probability of ``targets`` given final hidden states (unembedding only here)."""
    logits = model.hf_model.get_output_embeddings()(hidden).float()
    cap = getattr(model.hf_model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def _layout(
    bodies: Sequence[Sequence[int]], start: int, pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Right-pad ``bodies`` into ``[batch, width]`` ids with positions ``start, start+1, ...``.

    Right padding needs no attention mask: under causal attention a real token only sees the
    tokens before it, which are never padding, so a row's outputs do not depend on the others.
    """
    width = max(len(b) for b in bodies)
    ids = torch.full((len(bodies), width), pad_id, dtype=torch.long)
    for i, body in enumerate(bodies):
        ids[i, : len(body)] = torch.tensor(body, dtype=torch.long)
    positions = torch.arange(start, start + width).expand(len(bodies), width)
    return ids.to(device), positions.to(device)


def _run(model: Any, ids: Tensor, positions: Tensor, past: Any) -> Tensor:
    out = _decoder(model)(
        input_ids=ids,
        position_ids=positions,
        past_key_values=past,
        use_cache=past is not None,
    )
    return out.last_hidden_state


def _pad_id(model: Any) -> int:
    pad = model.tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def _bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row")


def _check_common(problems: Sequence[Any], batch_size: int, max_target_tokens: int) -> None:
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
# Gradient proxy
# --------------------------------------------------------------------------------------------


def gate_gradients(
    model: Any,
    problems: Sequence[Any],
    *,
    prompt: str | PromptTemplate = "fewshot_cot",
    batch_size: int = 4,
    max_target_tokens: int = 512,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> Float[Tensor, "n_problems n_layers n_heads"]:
    """Signed per-example gradient ∂ loss_i / ∂ ξ of the head gate at ξ = 1.

    ``loss_i`` is the mean next-token NLL of problem ``i``'s gold solution
    (:func:`gold_target`, at most ``max_target_tokens`` tokens) teacher-forced after its prompt;
    prompt tokens are not in the loss. Each batch row has its own gate row (a
    ``[batch, n_layers, n_heads]`` mask through :func:`~sprint_lab.core.gate.head_mask`), the
    per-example losses are summed and differentiated once, so row ``i`` of the mask gradient is
    example ``i``'s own gradient. Rows are right-padded, which leaves every row's loss unchanged.

    With ``reuse_prefix`` the prompt prefix shared by all problems (few-shot exemplars) runs
    once; its key/value cache is fed to every row, and the gradient that flows back into the
    cache is pushed through the prefix's graph once per example. This is exact (the gate still
    acts on every prefix position) and about halves the cost of long few-shot prompts.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: the problems (each needs ``question`` and ``answer``; ``solution`` if any).
        prompt: template name or object.
        batch_size: rows per forward/backward pass (memory grows with it).
        max_target_tokens: cap on teacher-forced target tokens per problem.
        reuse_prefix: share the common prompt prefix as described above.
        progress: show a tqdm bar.

    Returns:
        ``[n_problems, n_layers, n_heads]`` float32 gradients, in ``problems`` order.

    Example:
        >>> g = gate_gradients(model, load_problems("arith", limit=4))   # doctest: +SKIP
        >>> g.abs().mean(0).shape                                          # doctest: +SKIP
        torch.Size([30, 9])
    """
    _check_common(problems, batch_size, max_target_tokens)
    template = get_template(prompt)
    encoded = _encode(model, problems, template, max_target_tokens)
    n_layers, n_heads, device = model.n_layers, model.n_heads, model.device
    shared = _shared_prefix_len(encoded) if reuse_prefix else 0
    bar = _bar(progress, len(encoded), "gate gradients")
    try:
        # works even when called under torch.no_grad() or torch.inference_mode()
        with torch.inference_mode(False), torch.enable_grad():
            grads = torch.zeros(len(encoded), n_layers, n_heads, dtype=torch.float32)
            prefix_kv: list[Tensor] = []
            prefix_mask = None
            if shared:
                prefix_mask = torch.ones(n_layers, n_heads, device=device, requires_grad=True)
                ids = torch.tensor([encoded[0].prompt_ids[:shared]], device=device)
                with head_mask(model, prefix_mask):
                    out = _decoder(model)(input_ids=ids, use_cache=True)
                prefix_kv = [t for pair in cache_layers(out.past_key_values) for t in pair]
                del out
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                grads[start : start + len(chunk)] = _gradient_batch(
                    model, chunk, shared, prefix_kv, prefix_mask
                )
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return grads


def _gradient_batch(
    model: Any,
    chunk: Sequence[_Encoded],
    shared: int,
    prefix_kv: Sequence[Tensor],
    prefix_mask: Tensor | None,
) -> Float[Tensor, "batch n_layers n_heads"]:
    device, n = model.device, len(chunk)
    mask = torch.ones(n, model.n_layers, model.n_heads, device=device, requires_grad=True)
    leaves = [t.detach().expand(n, *t.shape[1:]).clone().requires_grad_(True) for t in prefix_kv]
    past = new_cache(list(zip(leaves[0::2], leaves[1::2], strict=True))) if leaves else None
    bodies = [e.prompt_ids[shared:] + e.target_ids for e in chunk]
    ids, positions = _layout(bodies, shared, _pad_id(model), device)
    rows, cols, targets, owner = [], [], [], []
    for i, e in enumerate(chunk):
        first = len(e.prompt_ids) - shared  # index of the first target token in the body
        for t, token in enumerate(e.target_ids):
            rows.append(i)
            cols.append(first + t - 1)
            targets.append(token)
            owner.append(i)
    with head_mask(model, mask):
        hidden = _run(model, ids, positions, past)
    logp = _token_logprobs(
        model,
        hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)],
        torch.tensor(targets, device=device),
    )
    owner_t = torch.tensor(owner, device=device)
    counts = torch.bincount(owner_t, minlength=n).clamp(min=1).float()
    losses = -torch.zeros(n, device=device).index_add(0, owner_t, logp) / counts
    got = torch.autograd.grad(losses.sum(), [mask, *leaves], allow_unused=True)
    grad = got[0].detach().float().clone()
    if leaves:
        cotangents = [
            g if g is not None else torch.zeros_like(leaf)
            for g, leaf in zip(got[1:], leaves, strict=True)
        ]
        # layer-0 keys/values do not depend on the gate (and need no grad if weights are frozen)
        linked = [(t, c) for t, c in zip(prefix_kv, cotangents, strict=True) if t.requires_grad]
        for i in range(n):
            (through_prefix,) = torch.autograd.grad(
                [t for t, _ in linked],
                prefix_mask,
                grad_outputs=[c[i : i + 1] for _, c in linked],
                retain_graph=True,
                allow_unused=True,
            )
            if through_prefix is not None:
                grad[i] += through_prefix.float()
    return grad.cpu()


# --------------------------------------------------------------------------------------------
# Log-prob proxy
# --------------------------------------------------------------------------------------------


def answer_logprobs(
    model: Any,
    problems: Sequence[Any],
    configs: Sequence[Iterable[Head | str | tuple[int, int]] | None],
    *,
    prompt: str | PromptTemplate = "fewshot_cot",
    batch_size: int = 4,
    max_target_tokens: int = 512,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> Float[Tensor, "n_problems n_configs"]:
    """Teacher-forced log-probability of each gold final answer under each pruning config.

    For problem ``i`` and config ``c`` (``None``: no pruning, else the heads to zero), the
    value is ``sum_t log p(answer token t | prompt, gold solution before t)`` over the tokens of
    the final-answer span of :func:`gold_target` (e.g. ``"1"``, ``"8"`` of ``"18"``). Rows are
    (question, config) pairs, config-major, each with its own mask row through
    :func:`~sprint_lab.core.gate.head_mask`; with ``reuse_prefix`` the shared prompt prefix runs once
    per config and its key/value cache is reused for every question. Runs under
    ``torch.inference_mode()``.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: the problems.
        configs: one entry per config: ``None`` or an iterable of heads.
        prompt: template name or object.
        batch_size: rows per forward pass.
        max_target_tokens: cap on target tokens; the answer must lie within it.
        reuse_prefix: share the common prompt prefix (exact, faster).
        progress: show a tqdm bar.

    Returns:
        ``[n_problems, n_configs]`` float32 log-probabilities (nats).

    Raises:
        ValueError: unknown heads, or an answer beyond ``max_target_tokens``.

    Example:
        >>> lp = answer_logprobs(model, problems, [None, ["L3H5"]])     # doctest: +SKIP
        >>> (lp[:, 1] - lp[:, 0]).mean()                                # doctest: +SKIP
    """
    _check_common(problems, batch_size, max_target_tokens)
    configs = [None if c is None else as_heads(c) for c in configs]
    if not configs:
        raise ValueError("configs is empty: give at least one configuration (None = no pruning)")
    masks = masks_for(model, configs).to(model.device)
    template = get_template(prompt)
    encoded = _encode(model, problems, template, max_target_tokens)
    for e in encoded:
        if e.answer[-1] >= len(e.target_ids):
            raise ValueError(
                f"problem {e.id!r}: the answer ends at target token {e.answer[-1] + 1} but "
                f"max_target_tokens={max_target_tokens}; raise max_target_tokens"
            )
    shared = _shared_prefix_len(encoded) if reuse_prefix else 0
    out = torch.zeros(len(encoded), len(configs), dtype=torch.float32)
    rows = [(c, q) for c in range(len(configs)) for q in range(len(encoded))]
    bar = _bar(progress, len(rows), "answer log-probs")
    prefix_cache: dict[int, list[tuple[Tensor, Tensor]]] = {}
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                row_configs = [c for c, _ in chunk]
                past = None
                if shared:
                    for c in [c for c in prefix_cache if c < row_configs[0]]:
                        del prefix_cache[c]  # config-major order: never needed again
                    missing = [c for c in dict.fromkeys(row_configs) if c not in prefix_cache]
                    if missing:
                        prefix_cache.update(
                            _prefix_caches(model, encoded[0].prompt_ids[:shared], masks, missing)
                        )
                    past = new_cache(
                        [
                            (
                                torch.cat([prefix_cache[c][layer][0] for c in row_configs]),
                                torch.cat([prefix_cache[c][layer][1] for c in row_configs]),
                            )
                            for layer in range(len(prefix_cache[row_configs[0]]))
                        ]
                    )
                batch = [encoded[q] for _, q in chunk]
                values = _logprob_batch(model, batch, shared, past, masks[row_configs])
                for (c, q), value in zip(chunk, values.tolist(), strict=True):
                    out[q, c] = value
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out


def _prefix_caches(
    model: Any, prefix_ids: list[int], masks: Tensor, configs: list[int]
) -> dict[int, list[tuple[Tensor, Tensor]]]:
    ids = torch.tensor([prefix_ids] * len(configs), device=model.device)
    with head_mask(model, masks[configs]):
        out = _decoder(model)(input_ids=ids, use_cache=True)
    entries = split_rows(cache_layers(out.past_key_values), len(configs))
    return dict(zip(configs, entries, strict=True))


def _logprob_batch(
    model: Any, chunk: Sequence[_Encoded], shared: int, past: Any, row_masks: Tensor
) -> Float[Tensor, " batch"]:
    device = model.device
    bodies = [e.prompt_ids[shared:] + e.target_ids[: e.answer[-1] + 1] for e in chunk]
    ids, positions = _layout(bodies, shared, _pad_id(model), device)
    rows, cols, targets = [], [], []
    for i, e in enumerate(chunk):
        first = len(e.prompt_ids) - shared
        for t in e.answer:
            rows.append(i)
            cols.append(first + t - 1)
            targets.append(e.target_ids[t])
    with head_mask(model, row_masks):
        hidden = _run(model, ids, positions, past)
    row_t = torch.tensor(rows, device=device)
    logp = _token_logprobs(
        model,
        hidden[row_t, torch.tensor(cols, device=device)],
        torch.tensor(targets, device=device),
    )
    return torch.zeros(len(chunk), device=device).index_add(0, row_t, logp).cpu()


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


@dataclass
class ImportanceResult:
    """Per-head proxy scores as ``[layer, head]`` tables.

    Attributes:
        gradient: Michel et al. importance (mean |∂loss/∂ξ| over examples, normalised as
            recorded in ``meta``): index ``layer``, one int column per head; high = the loss is
            sensitive to the head (pruning is expected to *hurt*). ``None`` if not computed.
        logprob: mean over questions of ``logp_pruned - logp_base`` of the gold answer tokens
            (nats); positive = pruning makes the gold answer *more* likely (like a positive
            accuracy delta). ``None`` if not computed.
        gradient_raw: the gradient score before any normalisation.
        per_example_gradient: signed ``[n_problems, n_layers, n_heads]`` gate gradients (all
            layers).
        answer_logprobs: per question (index ``question_id``) the gold-answer log-prob with no
            pruning (column ``"none"``) and with each head pruned (columns ``"L3H5"``, ...).
        meta: settings: ``prompt``, ``layers``, ``normalize_by_layer``, ``normalize_global``,
            ``question_ids``, ``batch_size``, ``max_target_tokens``, ``model``, ``dtype``,
            ``seconds`` per proxy.

    Example:
        >>> imp = head_importance(model, problems, layers=[0])   # doctest: +SKIP
        >>> imp.to_long().sort_values("score").tail(3)            # doctest: +SKIP
    """

    gradient: pd.DataFrame | None = None
    logprob: pd.DataFrame | None = None
    gradient_raw: pd.DataFrame | None = None
    per_example_gradient: Tensor | None = None
    answer_logprobs: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def proxies(self) -> list[str]:
        """Names of the proxies that were computed."""
        return [p for p in PROXIES if getattr(self, p) is not None]

    def to_long(self) -> pd.DataFrame:
        """Tidy table: one row per (proxy, head) with columns layer, head, config, proxy, score.

        The settings are attached as ``frame.attrs["meta"]``.

        Example:
            >>> imp.to_long().query("proxy == 'logprob'").nlargest(5, "score")  # doctest: +SKIP
        """
        frames = []
        for proxy in self.proxies:
            table = getattr(self, proxy)
            long = table.stack().rename("score").reset_index()
            long.columns = ["layer", "head", "score"]
            long["config"] = [
                f"L{la}H{h}" for la, h in zip(long["layer"], long["head"], strict=True)
            ]
            long["proxy"] = proxy
            frames.append(long[["layer", "head", "config", "proxy", "score"]])
        columns = ["layer", "head", "config", "proxy", "score"]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        out["layer"] = out["layer"].astype("int64")
        out["head"] = out["head"].astype("int64")
        out["score"] = out["score"].astype(float)
        out.attrs["meta"] = dict(self.meta)
        return out


def _frame(values: np.ndarray, layers: Sequence[int]) -> pd.DataFrame:
    return pd.DataFrame(
        values,
        index=pd.Index(list(layers), name="layer"),
        columns=pd.Index(list(range(values.shape[1])), name="head"),
    )


def _normalise(
    scores: Float[Tensor, "n_layers n_heads"], by_layer: bool, global_minmax: bool
) -> Float[Tensor, "n_layers n_heads"]:
    """HF bertology's normalisations: per-layer L2, then global min-max to [0, 1]."""
    out = scores.clone()
    if by_layer:
        out = out / (out.norm(dim=-1, keepdim=True) + _LAYER_EPS)
    if global_minmax:
        low, high = out.min(), out.max()
        out = (out - low) / (high - low) if high > low else torch.zeros_like(out)
    return out


def head_importance(
    model: Any,
    problems: Sequence[Any],
    *,
    prompt: str | PromptTemplate = "fewshot_cot",
    layers: Iterable[int] | None = None,
    proxies: Iterable[str] = PROXIES,
    normalize_by_layer: bool = True,
    normalize_global: bool = False,
    batch_size: int = 4,
    max_target_tokens: int = 512,
    reuse_prefix: bool = True,
    progress: bool = True,
) -> ImportanceResult:
    """Score every head of ``layers`` with cheap teacher-forced proxies (no generation).

    - ``"gradient"``: Michel et al. (2019), ``I_h = mean_i |∂ loss_i / ∂ ξ_h|`` at ξ = 1 with a
      per-example gate (see :func:`gate_gradients`). With ``normalize_by_layer`` each layer's
      row is divided by its L2 norm (+1e-20); with ``normalize_global`` the table is then
      min-max scaled to [0, 1] over the reported layers. These are HF bertology's two
      normalisations (on by default there, both); which were applied is in ``meta``.
    - ``"logprob"``: for each head, mean over questions of the change in the teacher-forced
      log-probability of the gold final answer tokens when that head is pruned (see
      :func:`answer_logprobs`); one forward row per (question, head) plus a baseline row per
      question. Not normalised (nats).

    Both proxies use the model's dtype (float32 for a float32 model; bfloat16 works too) and
    compute log-softmax in float32. Prefer float32 for the log-prob proxy: on SmolLM2-135M its
    per-head values are a few hundredths of a nat, and bfloat16 rounding moves them by up to
    ~0.03 nats (rank correlation with float32 about 0.9; the gradient proxy keeps about 0.99).
    The gradient costs about one forward + backward per problem whatever the number of
    layers; the log-prob proxy costs one teacher-forced forward per (question, head), plus
    one forward of the shared prompt prefix per head.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: the problems (non-empty).
        prompt: template name or object (the same one the sweep uses).
        layers: layers to report (default all).
        proxies: any of ``"gradient"``, ``"logprob"``.
        normalize_by_layer: layer-wise L2 normalisation of the gradient score.
        normalize_global: global min-max normalisation of the gradient score.
        batch_size: rows per forward pass.
        max_target_tokens: cap on teacher-forced target tokens per problem.
        reuse_prefix: run the prompt prefix shared by all problems once (exact, faster).
        progress: show tqdm bars.

    Returns:
        An :class:`ImportanceResult`.

    Raises:
        ValueError: empty ``problems``, an unknown layer or proxy, bad sizes.

    Example:
        >>> imp = head_importance(model, load_problems("arith", limit=16),  # doctest: +SKIP
        ...                       layers=[0, 15])
        >>> imp.gradient.loc[15].idxmax(), imp.logprob.loc[15].idxmax()     # doctest: +SKIP
    """
    problems = list(problems)
    _check_common(problems, batch_size, max_target_tokens)
    proxies = list(dict.fromkeys([proxies] if isinstance(proxies, str) else proxies))
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown or not proxies:
        raise ValueError(f"unknown proxies {unknown}; choose from {list(PROXIES)}")
    heads = all_heads(model, layers)
    if not heads:
        raise ValueError("layers is empty: give at least one layer (or None for all)")
    layers = list(dict.fromkeys(h.layer for h in heads))
    template = get_template(prompt)
    common = dict(
        prompt=template,
        batch_size=batch_size,
        max_target_tokens=max_target_tokens,
        reuse_prefix=reuse_prefix,
        progress=progress,
    )
    result = ImportanceResult(
        meta={
            "model": getattr(model, "name", None),
            "dtype": str(model.dtype).removeprefix("torch."),
            "prompt": template.name,
            "layers": layers,
            "proxies": proxies,
            "normalize_by_layer": bool(normalize_by_layer) and "gradient" in proxies,
            "normalize_global": bool(normalize_global) and "gradient" in proxies,
            "question_ids": [p.id for p in problems],
            "batch_size": batch_size,
            "max_target_tokens": max_target_tokens,
            "seconds": {},
        }
    )
    if "gradient" in proxies:
        started = time.perf_counter()
        grads = gate_gradients(model, problems, **common)
        raw = grads.abs().mean(dim=0)[layers]
        norm = _normalise(raw, normalize_by_layer, normalize_global)
        result.per_example_gradient = grads
        result.gradient_raw = _frame(raw.numpy(), layers)
        result.gradient = _frame(norm.numpy(), layers)
        result.meta["seconds"]["gradient"] = time.perf_counter() - started
    if "logprob" in proxies:
        started = time.perf_counter()
        lp = answer_logprobs(model, problems, [None] + [[h] for h in heads], **common)
        delta = (lp[:, 1:] - lp[:, :1]).mean(dim=0).reshape(len(layers), model.n_heads)
        result.logprob = _frame(delta.numpy(), layers)
        result.answer_logprobs = pd.DataFrame(
            lp.numpy(),
            index=pd.Index([p.id for p in problems], name="question_id"),
            columns=["none"] + [h.label for h in heads],
        )
        result.meta["seconds"]["logprob"] = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------------------------
# Agreement with a sweep
# --------------------------------------------------------------------------------------------


def _against(deltas: Any) -> pd.DataFrame:
    if hasattr(deltas, "deltas") and callable(deltas.deltas):
        deltas = deltas.deltas()
    if not isinstance(deltas, pd.DataFrame):
        raise TypeError(f"deltas must be a DataFrame or a SweepResult, got {type(deltas)!r}")
    missing = {"layer", "head", "delta"} - set(deltas.columns)
    if missing:
        raise ValueError(f"deltas lacks columns {sorted(missing)} (use SweepResult.deltas())")
    return deltas[["layer", "head", "delta"]].astype({"layer": "int64", "head": "int64"})


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return (float("nan"),) * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(x, y)
        pearson = stats.pearsonr(x, y)
    return (
        float(spearman.statistic),
        float(spearman.pvalue),
        float(pearson.statistic),
        float(pearson.pvalue),
    )


def correlate(importance: ImportanceResult, deltas: Any) -> pd.DataFrame:
    """How well each proxy predicts the generation sweep's accuracy deltas, head by head.

    Signs are arranged so that a *positive* correlation always means "the proxy agrees":

    - ``gradient`` vs ``-delta``: a high Michel importance means the loss is sensitive to the
      head, so pruning it should *hurt* (a negative ``delta``).
    - ``gradient`` vs ``|delta|``: importance as "pruning changes accuracy", either way.
    - ``logprob`` vs ``delta``: same sign convention as the sweep (positive = pruning helps).
    - ``|logprob|`` vs ``|delta|``: magnitudes only.

    Args:
        importance: an :class:`ImportanceResult`.
        deltas: ``SweepResult.deltas()`` (columns ``layer``, ``head``, ``delta``) or a
            ``SweepResult``. Heads present in both are compared.

    Returns:
        One row per (proxy, against): ``proxy``, ``against``, ``n`` (heads compared),
        ``spearman``, ``spearman_p``, ``pearson``, ``pearson_p`` (scipy.stats; NaN when fewer
        than 3 heads or a constant input).

    Raises:
        ValueError: no head in common, or missing columns.

    Example:
        >>> correlate(imp, result.deltas())                               # doctest: +SKIP
           proxy  against   n  spearman  spearman_p  pearson  pearson_p
        0  gradient  -delta  18  ...
    """
    measured = _against(deltas)
    long = importance.to_long()
    wide = long.pivot_table(index=["layer", "head"], columns="proxy", values="score").reset_index()
    merged = wide.merge(measured, on=["layer", "head"], how="inner")
    if merged.empty:
        raise ValueError("the importance result and the deltas have no head in common")
    delta = merged["delta"].to_numpy(float)
    pairs = []
    if "gradient" in merged:
        grad = merged["gradient"].to_numpy(float)
        pairs += [("gradient", "-delta", grad, -delta), ("gradient", "|delta|", grad, abs(delta))]
    if "logprob" in merged:
        lp = merged["logprob"].to_numpy(float)
        pairs += [("logprob", "delta", lp, delta), ("|logprob|", "|delta|", abs(lp), abs(delta))]
    rows = []
    for proxy, against, x, y in pairs:
        ok = int((np.isfinite(x) & np.isfinite(y)).sum())
        rho, rho_p, r, r_p = _corr(x, y)
        rows.append(
            {
                "proxy": proxy,
                "against": against,
                "n": ok,
                "spearman": rho,
                "spearman_p": rho_p,
                "pearson": r,
                "pearson_p": r_p,
            }
        )
    return pd.DataFrame(
        rows, columns=["proxy", "against", "n", "spearman", "spearman_p", "pearson", "pearson_p"]
    )
