"""The core: heads and their labels, the one head gate, and the model loader.

Everything else builds on these three modules: a :class:`Head` names one query head, the gate
(:func:`ablate`, :func:`head_mask`) zeroes heads at ``blocks.{layer}.attn.hook_z``, and
:func:`load_model` returns the :class:`LabModel` the rest of the package runs.
"""

from sprint_lab.core.gate import HeadGate, ablate, head_mask, hook_z_name, mask_for, masks_for
from sprint_lab.core.heads import BASELINE, Head, all_heads, config_label, is_baseline, parse_config
from sprint_lab.core.model import LabModel, load_model

__all__ = [
    "BASELINE",
    "config_label",
    "is_baseline",
    "parse_config",
    "Head",
    "HeadGate",
    "LabModel",
    "ablate",
    "all_heads",
    "head_mask",
    "hook_z_name",
    "load_model",
    "mask_for",
    "masks_for",
]
