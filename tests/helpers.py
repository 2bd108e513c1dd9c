"""Test helpers shared by every test folder: tiny models, the embedded model, the near-tie check.

Fixtures in ``conftest.py`` wrap these; tests import the plain functions from here (never from
another test file).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does Tom have now?",
    "A box holds 5 pens. How many pens are in 2 boxes?",
    "Sara had 10 candies and ate 3 of them after lunch on a sunny day. How many are left?",
    "What is 7 times 8?",
]
PLAIN = [f"Question: {q}\nAnswer:" for q in QUESTIONS]


def token_ids(model, text):
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def assert_same_or_near_tie(model, prompts, batched, alone, masks=None):
    """Every row equal, or diverging first at a near-tie (counted, never a large gap)."""
    from sprint_lab.generation.diagnostics import first_divergence

    near_ties = 0
    for i, (a, b) in enumerate(zip(batched, alone, strict=True)):
        if a.token_ids == b.token_ids:
            continue
        prompt = prompts[i] if isinstance(prompts[i], str) else "".join(prompts[i])
        mask = None if masks is None else masks[i]
        d = first_divergence(model, token_ids(model, prompt), a.token_ids, b.token_ids, mask)
        assert d.near_tie, f"row {i} diverges at step {d.step} with top-2 gap {d.top2_gap}"
        near_ties += 1
    assert near_ties <= len(prompts) // 2, f"{near_ties} near-tie rows is implausibly many"
    return near_ties


def shared_data_root() -> Path:
    """``$SPRINT_LAB_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SPRINT_LAB_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def load_embedded_model(dtype: str = "float32"):
    """The embedded SmolLM2-135M-Instruct (de-quantised once, cached by sprint_lab)."""
    from sprint_lab.core.model import load_model

    return load_model("smollm2-135m", dtype=dtype)


def save_tiny_models(root: Path) -> dict[str, Path]:
    """Tiny randomly initialised Llama (GQA) and Qwen2 (MHA) models saved as local folders.

    Returns ``{"llama": path, "qwen2": path}``; the tokenizer is the embedded model's, copied.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from sprint_lab.core.model import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=4096,  # room for an 8-shot prompt: sweeps check the context
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    specs = {
        "llama": (LlamaConfig(num_key_value_heads=2, **common), LlamaForCausalLM),
        "qwen2": (Qwen2Config(num_key_value_heads=4, **common), Qwen2ForCausalLM),
    }
    paths = {}
    for name, (config, cls) in specs.items():
        torch.manual_seed(0)
        config.architectures = [cls.__name__]
        path = Path(root) / f"tiny-{name}"
        path.mkdir(parents=True, exist_ok=True)
        cls(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths
