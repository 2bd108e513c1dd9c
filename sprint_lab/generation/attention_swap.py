"""Swapping shared-prefix attention into a model, and telling whether a model can take it.

Hugging Face attention modules dispatch their core computation through ``AttentionInterface``
by the name in ``config._attn_implementation``. This module registers the shared-prefix kernel
(:mod:`sprint_lab.generation.shared_prefix`) under :data:`ATTENTION_NAME` (with a mask function
that builds nothing: the batch's :class:`~sprint_lab.generation.shared_prefix.SharedPrefixState`
masks padding and future positions itself) and, inside :func:`shared_prefix_attention`, points
every layer at it. The state of the batch rides along in the forward call's keyword arguments
as ``sprint_lab_state=`` (:data:`STATE_KWARG`), which Hugging Face passes down to the attention
function untouched.

TransformerLens' attention bridge normally reimplements attention with its own hook points;
inside the block each bridge delegates to its Hugging Face module instead (whose ``o_proj``
still runs through the bridge's ``hook_z``, so the head gate applies). Hooks on
attention-internal points therefore do not fire there: :func:`bridge_only_hooks` lists any that
are attached, and :func:`shared_prefix_supported` rules out models the kernel cannot reproduce
exactly (sliding windows, logit soft-capping, attention sinks, custom attention code).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

from jaxtyping import Float
from torch import Tensor

from sprint_lab.core.model import LabModel

ATTENTION_NAME = "sprint_lab_shared_prefix"
"""The name shared-prefix attention is registered under in ``AttentionInterface``."""

STATE_KWARG = "sprint_lab_state"
"""The forward keyword that carries the batch's ``SharedPrefixState``."""


def _attention(
    module: Any,
    query: Float[Tensor, "batch n_heads new d_head"],
    key: Float[Tensor, "batch n_kv_heads new d_head"],
    value: Float[Tensor, "batch n_kv_heads new d_head"],
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Float[Tensor, "batch new n_heads d_head"], None]:
    """The ``AttentionInterface`` function; the batch's state rides in the forward kwargs."""
    state = kwargs.get(STATE_KWARG)
    if state is None:
        raise RuntimeError(
            f"attention {ATTENTION_NAME!r} needs a SharedPrefixState passed as {STATE_KWARG}="
        )
    if kwargs.get("sliding_window") is not None:
        raise RuntimeError("shared-prefix attention does not support sliding-window layers")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return state.attend(module.layer_idx, query, key, value, scaling), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None  # the state masks padding and future positions itself


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)


_register()


def _attention_bridges(model: LabModel) -> list[Any]:
    return [block.attn for block in model.bridge.blocks]


@functools.lru_cache(maxsize=64)
def _dispatches_attention(cls: type) -> bool:
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def shared_prefix_supported(model: LabModel) -> bool:
    """Whether ``model`` can decode with shared-prefix attention.

    True when each layer's Hugging Face attention dispatches through ``AttentionInterface`` and
    no layer uses a sliding window, logit soft-capping or attention sinks; otherwise generation
    falls back to the bridge's own attention.
    """
    config = model.hf_model.config
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return False
    for bridge in _attention_bridges(model):
        hf_attn = getattr(bridge, "original_component", None)
        if hf_attn is None or not hasattr(hf_attn, "layer_idx"):
            return False
        if getattr(hf_attn, "sliding_window", None) is not None:
            return False
        if getattr(hf_attn, "sinks", None) is not None:
            return False
        if not _dispatches_attention(type(hf_attn)):
            return False
    return True


def bridge_only_hooks(model: LabModel) -> list[str]:
    """Hook points with hooks attached that fire only inside the bridge's own attention.

    These are the attention bridge's internal points (``hook_attn_scores``, ``hook_pattern``,
    ``hook_rot_q``, ...); the shared-prefix path skips them, so a user hook on one of them
    means generation must run the bridge's attention. Points inside the projections
    (``hook_q``, ``hook_z``, ...) fire on both paths.

    Example:
        >>> bridge_only_hooks(model)
        []
    """
    from transformer_lens.hook_points import HookPoint

    names = []
    for layer, bridge in enumerate(_attention_bridges(model)):
        for name, child in bridge.named_children():
            if name in ("hook_in", "hook_out") or not isinstance(child, HookPoint):
                continue
            if child._forward_hooks or child._forward_pre_hooks or child._backward_hooks:
                names.append(f"blocks.{layer}.attn.{name}")
    return names


def _hf_forward(bridge, hf_attn, *args: Any, **kwargs: Any):
    if args:
        hidden_states, args = args[0], args[1:]
    else:
        hidden_states = kwargs.pop("hidden_states")
    output = hf_attn(bridge.hook_in(hidden_states), *args, **kwargs)
    return (bridge.hook_out(output[0]), *output[1:])


@contextlib.contextmanager
def shared_prefix_attention(model: LabModel) -> Iterator[None]:
    """Inside the block, the model's attention runs as shared-prefix attention.

    Each layer's attention bridge delegates to its Hugging Face module (whose ``o_proj`` is the
    bridge's hook point, so ``hook_z`` hooks fire), and the attention implementation is
    :data:`ATTENTION_NAME`. Forward calls must pass a :class:`SharedPrefixState` as
    ``sprint_lab_state=``. Everything is restored on exit, also after an exception.

    Raises:
        ValueError: if :func:`shared_prefix_supported` is false for ``model``.

    Example:
        >>> from sprint_lab.generation.shared_prefix import SharedPrefixState
        >>> rows = torch.zeros(1, dtype=torch.long)  # one row, no prefix groups
        >>> state = SharedPrefixState(model.n_layers, rows, None, 16)
        >>> ids = torch.tensor([[1, 2, 3, 4, 5]])
        >>> state.begin(torch.ones(1, 5, dtype=torch.bool))
        >>> with torch.inference_mode(), shared_prefix_attention(model):
        ...     out = model.hf_model(input_ids=ids, use_cache=False, sprint_lab_state=state)
        >>> state.commit()
        >>> state.length, out.logits.shape[:2]
        (5, torch.Size([1, 5]))
    """
    if not shared_prefix_supported(model):
        raise ValueError(f"{model.name} cannot use shared-prefix attention")
    bridges = _attention_bridges(model)
    configs = {id(model.hf_model.config): model.hf_model.config}
    for bridge in bridges:
        config = getattr(bridge.original_component, "config", None)
        if config is not None:
            configs[id(config)] = config
    previous = {key: config._attn_implementation for key, config in configs.items()}
    lock = getattr(model, "lock", None) or contextlib.nullcontext()
    with lock:
        try:
            for bridge in bridges:
                hf_attn = bridge.original_component
                # the bridge forwards attribute writes to the wrapped module; bypass that
                object.__setattr__(
                    bridge, "forward", functools.partial(_hf_forward, bridge, hf_attn)
                )
            for config in configs.values():
                config._attn_implementation = ATTENTION_NAME
            yield
        finally:
            for key, config in configs.items():
                config._attn_implementation = previous[key]
            for bridge in bridges:
                if "forward" in bridge.__dict__:
                    object.__delattr__(bridge, "forward")
