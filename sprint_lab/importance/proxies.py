"""Cheap head-importance proxies to pre-screen heads before paying for a generation sweep.

The *gradient* proxy is Michel et al.'s (2019) score: put a gate ξ = 1 on every head's output,
teacher-force the gold worked solution after the prompt, and average |∂ loss / ∂ ξ| over
examples, taking the absolute value per example (a ``[batch, n_layers, n_heads]`` gate), then
normalise each layer to unit L2 norm. The *log-prob* proxy prunes each candidate head in turn
and measures the teacher-forced change in log-probability of the gold final answer tokens
(e.g. ``"18"`` in ``"The answer is 18."``). Both are teacher-forced passes
(:mod:`sprint_lab.importance.teacher_forcing`) through the one head gate of
:mod:`sprint_lab.core.gate`; :func:`sprint_lab.importance.correlate.correlate` checks them
against a sweep's accuracy deltas.

Example:
    >>> imp = head_importance(model, problems, layers=[0, 2], progress=False)
    >>> imp.gradient.shape, imp.logprob.shape, imp.proxies
    ((2, 4), (2, 4), ['gradient', 'logprob'])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import BASELINE, Head, all_heads, as_heads
from sprint_lab.core.model import LabModel
from sprint_lab.importance.teacher_forcing import (
    PrefixCaches,
    answer_logprob_batch,
    check_sizes,
    encode_targets,
    gated_prefix_kv,
    gradient_batch,
    progress_bar,
    shared_prefix_len,
)
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import PromptTemplate, get_template

__all__ = [
    "PROXIES",
    "ImportanceResult",
    "answer_logprobs",
    "gate_gradients",
    "head_importance",
]

#: Proxy names accepted by :func:`head_importance`.
PROXIES: tuple[str, ...] = ("gradient", "logprob")

_LAYER_EPS = 1e-20


# --------------------------------------------------------------------------------------------
# Gradient proxy
# --------------------------------------------------------------------------------------------


def gate_gradients(
    model: LabModel,
    problems: Sequence[Problem],
    *,
    prompt: str | PromptTemplate = "fewshot_cot",
    batch_size: int = 4,
    max_target_tokens: int = 512,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> Float[Tensor, "n_problems n_layers n_heads"]:
    """Signed per-example gradient ∂ loss_i / ∂ ξ of the head gate at ξ = 1.

    ``loss_i`` is the mean next-token NLL of problem ``i``'s gold solution
    (:func:`~sprint_lab.tasks.answers.gold_target`, at most ``max_target_tokens`` tokens)
    teacher-forced after its prompt; prompt tokens are not in the loss. Each batch row has its
    own gate row (a ``[batch, n_layers, n_heads]`` mask through
    :func:`~sprint_lab.core.gate.head_mask`), the per-example losses are summed and
    differentiated once, so row ``i`` of the mask gradient is example ``i``'s own gradient.
    Rows are right-padded, which leaves every row's loss unchanged.

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
        >>> g = gate_gradients(model, problems)
        >>> g.shape  # [n_problems, n_layers, n_heads]
        torch.Size([4, 3, 4])
    """
    check_sizes(problems, batch_size, max_target_tokens)
    template = get_template(prompt)
    encoded = encode_targets(model, problems, template, max_target_tokens)
    n_layers, n_heads, device = model.n_layers, model.n_heads, model.device
    shared = shared_prefix_len(encoded) if reuse_prefix else 0
    bar = progress_bar(progress, len(encoded), "gate gradients")
    try:
        # works even when called under torch.no_grad() or torch.inference_mode()
        with torch.inference_mode(False), torch.enable_grad():
            grads = torch.zeros(len(encoded), n_layers, n_heads, dtype=torch.float32)
            prefix_kv: list[Tensor] = []
            prefix_mask = None
            if shared:
                prefix_mask = torch.ones(n_layers, n_heads, device=device, requires_grad=True)
                prefix_kv = gated_prefix_kv(model, encoded[0].prompt_ids[:shared], prefix_mask)
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                grads[start : start + len(chunk)] = gradient_batch(
                    model, chunk, shared, prefix_kv, prefix_mask
                )
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return grads


# --------------------------------------------------------------------------------------------
# Log-prob proxy
# --------------------------------------------------------------------------------------------


def answer_logprobs(
    model: LabModel,
    problems: Sequence[Problem],
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
    the final-answer span of :func:`~sprint_lab.tasks.answers.gold_target` (e.g. ``"1"``,
    ``"8"`` of ``"18"``). Rows are (question, config) pairs, config-major, each with its own
    mask row through :func:`~sprint_lab.core.gate.head_mask`; with ``reuse_prefix`` the shared
    prompt prefix runs once per config and its key/value cache is reused for every question.
    Runs under ``torch.inference_mode()``.

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
        >>> lp = answer_logprobs(model, problems, [None, ["L0H1"]])
        >>> lp.shape, bool((lp < 0).all())
        (torch.Size([4, 2]), True)
    """
    check_sizes(problems, batch_size, max_target_tokens)
    configs = [None if c is None else as_heads(c) for c in configs]
    if not configs:
        raise ValueError("configs is empty: give at least one configuration (None = no pruning)")
    masks = masks_for(model, configs).to(model.device)
    template = get_template(prompt)
    encoded = encode_targets(model, problems, template, max_target_tokens)
    for e in encoded:
        if e.answer[-1] >= len(e.target_ids):
            raise ValueError(
                f"problem {e.id!r}: the answer ends at target token {e.answer[-1] + 1} but "
                f"max_target_tokens={max_target_tokens}; raise max_target_tokens"
            )
    shared = shared_prefix_len(encoded) if reuse_prefix else 0
    out = torch.zeros(len(encoded), len(configs), dtype=torch.float32)
    rows = [(c, q) for c in range(len(configs)) for q in range(len(encoded))]
    bar = progress_bar(progress, len(rows), "answer log-probs")
    prefixes = PrefixCaches(model, encoded[0].prompt_ids[:shared], masks)
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                row_configs = [c for c, _ in chunk]
                past = prefixes.past(row_configs) if shared else None
                batch = [encoded[q] for _, q in chunk]
                values = answer_logprob_batch(model, batch, shared, past, masks[row_configs])
                for (c, q), value in zip(chunk, values.tolist(), strict=True):
                    out[q, c] = value
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out


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
        >>> imp = head_importance(model, problems, layers=[0], proxies="logprob", progress=False)
        >>> imp.proxies, imp.answer_logprobs.shape
        (['logprob'], (4, 5))
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
            >>> imp = ImportanceResult(logprob=pd.DataFrame([[0.1, -0.2]], index=[3]))
            >>> imp.to_long()
               layer  head config    proxy  score
            0      3     0   L3H0  logprob    0.1
            1      3     1   L3H1  logprob   -0.2
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
    model: LabModel,
    problems: Sequence[Problem],
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
        >>> imp = head_importance(model, problems, layers=[2], progress=False)
        >>> imp.gradient.index.tolist(), imp.answer_logprobs.columns[:3].tolist()
        ([2], ['none', 'L2H0', 'L2H1'])
    """
    problems = list(problems)
    check_sizes(problems, batch_size, max_target_tokens)
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
            columns=[BASELINE] + [h.label for h in heads],
        )
        result.meta["seconds"]["logprob"] = time.perf_counter() - started
    return result
