"""Batched, gated text generation: per-row head masks, shared few-shot prefixes, KV caches.

Modules, from the entry point down: ``generator`` (:func:`generate`, :class:`Completion`),
``batch`` (the decoding loop of one batch), ``decoders`` (the ``Decoder`` protocol and the
``attention=`` registry), ``sampling`` and ``stopping`` (the next token, the end of a row),
``attention_swap`` and ``shared_prefix`` (shared-prefix attention), ``kv`` (caches, the
:class:`PrefixCache`, prompt layout), ``limits`` (prompt length against the context,
:class:`PromptTooLongError`) and ``diagnostics`` (near-tie checks).
"""

from sprint_lab.generation.attention_swap import bridge_only_hooks, shared_prefix_supported
from sprint_lab.generation.generator import Completion, generate
from sprint_lab.generation.kv import PrefixCache
from sprint_lab.generation.limits import (
    PromptTooLongError,
    check_problem_lengths,
    check_prompt_lengths,
    context_length,
)

__all__ = [
    "Completion",
    "PrefixCache",
    "PromptTooLongError",
    "bridge_only_hooks",
    "check_problem_lengths",
    "check_prompt_lengths",
    "context_length",
    "generate",
    "shared_prefix_supported",
]
