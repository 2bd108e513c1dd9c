"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder with the shared benchmark files (``gsm8k/``, ``math500/``).

    Taken from ``$SPRINT_LAB_DATA``, else ``<repo>/../shared/data``; the test is skipped when the
    folder or its files are absent.
    """
    env = os.environ.get("SPRINT_LAB_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    needed = [root / "gsm8k" / "test.jsonl", root / "math500" / "test.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(
            f"shared benchmark data not found ({', '.join(missing)}); set SPRINT_LAB_DATA to the "
            "folder holding gsm8k/{train,test}.jsonl and math500/test.jsonl"
        )
    return root


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct in float32, loaded once per test session."""
    from sprint_lab.model import load_model

    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Tiny randomly initialised Llama (GQA) and Qwen2 (MHA) models saved as local directories.

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

    from sprint_lab.model import EMBEDDED_MODEL, _resolve_source

    tokenizer = AutoTokenizer.from_pretrained(_resolve_source(EMBEDDED_MODEL)[0])
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=512,
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
        path = tmp_path_factory.mktemp(f"tiny-{name}")
        cls(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths
