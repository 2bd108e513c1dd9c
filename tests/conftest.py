"""Shared pytest fixtures (thin wrappers over ``tests/helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_embedded_model, save_tiny_models, shared_data_root


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder with the shared benchmark files (``gsm8k/``, ``math500/``).

    Taken from ``$SPRINT_LAB_DATA``, else ``<repo>/../shared/data``; the test is skipped when the
    folder or its files are absent.
    """
    root = shared_data_root()
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
    return load_embedded_model("float32")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Tiny randomly initialised Llama (GQA) and Qwen2 (MHA) models saved as local directories."""
    return save_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny(tiny_models):
    """The tiny Llama (GQA) of :func:`tiny_models`, loaded once in float32."""
    from sprint_lab.core.model import load_model

    return load_model(tiny_models["llama"], dtype="float32")
