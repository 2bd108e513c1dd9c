"""Engines: carry sprint_lab's head ablation into inference engines that have no head gate.

A serving engine (vLLM, SGLang, TGI, plain ``peft``) cannot run the gate's TransformerLens
hooks, but each can apply LoRA adapters, many at once, one per request. Zeroing a head's slice
of the ``o_proj`` input is exactly a LoRA on ``o_proj`` (:mod:`sprint_lab.engines.lora`), so
:func:`export_head_adapters` turns every pruning configuration into an adapter that the engine
serves next to the unpruned base model.

Example:
    >>> from sprint_lab.engines import adapter_name
    >>> adapter_name("L3H5+L7H2")
    'L3H5_L7H2'
"""

from sprint_lab.engines.lora import (
    adapter_name,
    adapter_path,
    export_head_adapters,
    head_adapter_weights,
    hf_state_dict,
    save_base_model,
)

__all__ = [
    "adapter_name",
    "adapter_path",
    "export_head_adapters",
    "head_adapter_weights",
    "hf_state_dict",
    "save_base_model",
]
