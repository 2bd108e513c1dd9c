"""Batched, gated text generation: per-row head masks, shared few-shot prefixes, KV caches."""

from sprint_lab.generation.generator import Completion, PrefixCache, generate
from sprint_lab.generation.shared_prefix import bridge_only_hooks, shared_prefix_supported

__all__ = [
    "Completion",
    "PrefixCache",
    "bridge_only_hooks",
    "generate",
    "shared_prefix_supported",
]
