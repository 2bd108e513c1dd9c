"""The core: heads and their labels, the one head gate, the model loader, and the named errors.

Everything else builds on these modules: a :class:`Head` names one query head, the gate
(:func:`ablate`, :func:`head_mask`) zeroes heads at ``blocks.{layer}.attn.hook_z``,
:func:`load_model` returns the :class:`LabModel` the rest of the package runs, and
:mod:`~sprint_lab.core.errors` holds :class:`InputError` / :class:`SetupError`, the errors whose
exit codes the ``sprint-lab`` command reports.

The names load on first use (PEP 562), so ``import sprint_lab.core.errors`` (which the command
line needs before it has parsed ``--help``) does not import torch.

Example:
    >>> from sprint_lab.core import InputError, Head
    >>> InputError.exit_code, Head(1, 2).label
    (2, 'L1H2')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sprint_lab.core.errors import InputError, SetupError, SprintLabError
    from sprint_lab.core.gate import HeadGate, ablate, head_mask, hook_z_name, mask_for, masks_for
    from sprint_lab.core.heads import (
        BASELINE,
        Head,
        all_heads,
        config_label,
        is_baseline,
        parse_config,
    )
    from sprint_lab.core.model import LabModel, load_model

#: Public name -> the module that defines it (imported on first access).
LAZY_NAMES: dict[str, str] = {
    **dict.fromkeys(["InputError", "SetupError", "SprintLabError"], "sprint_lab.core.errors"),
    **dict.fromkeys(
        ["HeadGate", "ablate", "head_mask", "hook_z_name", "mask_for", "masks_for"],
        "sprint_lab.core.gate",
    ),
    **dict.fromkeys(
        ["BASELINE", "Head", "all_heads", "config_label", "is_baseline", "parse_config"],
        "sprint_lab.core.heads",
    ),
    **dict.fromkeys(["LabModel", "load_model"], "sprint_lab.core.model"),
}


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` on first use (PEP 562) and cache the value."""
    if name not in LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BASELINE",
    "config_label",
    "is_baseline",
    "parse_config",
    "Head",
    "HeadGate",
    "InputError",
    "LabModel",
    "SetupError",
    "SprintLabError",
    "ablate",
    "all_heads",
    "head_mask",
    "hook_z_name",
    "load_model",
    "mask_for",
    "masks_for",
]
