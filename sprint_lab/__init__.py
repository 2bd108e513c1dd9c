"""sprint_lab: study how pruning single attention heads changes a language model's reasoning.

The public API is re-exported here; submodules hold one concept each.
"""

from sprint_lab.gate import HeadGate, ablate, head_mask, hook_z_name, mask_for
from sprint_lab.generation import Completion, PrefixCache, generate
from sprint_lab.heads import Head, all_heads
from sprint_lab.model import LabModel, load_model

__all__ = [
    "Completion",
    "Head",
    "HeadGate",
    "LabModel",
    "PrefixCache",
    "ablate",
    "all_heads",
    "generate",
    "head_mask",
    "hook_z_name",
    "load_model",
    "mask_for",
]
