"""Head-ablation LoRA adapters: loaded by peft, they give the gate's logits and greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from sprint_lab import ablate, generate
from sprint_lab.core.errors import InputError
from sprint_lab.core.model import load_model
from sprint_lab.engines.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BASE_FOLDER,
    MANIFEST,
    adapter_name,
    adapter_path,
    export_head_adapters,
    head_adapter_weights,
)
from tests.helpers import PLAIN, token_ids

TOLERANCE = 1e-4
"""Largest |logit difference| allowed between the peft adapter and the gate (float32)."""

TINY_CASES = {
    "single": ["L1H2"],
    "same_layer": ["L1H0", "L1H3"],
    "two_layers": ["L0H1", "L2H3"],
    "uneven": ["L0H0", "L0H2", "L2H1"],  # 2 heads in layer 0, 1 in layer 2: padded rank
}
EMBEDDED_CASES = {
    "single": ["L4H2"],
    "same_layer": ["L4H2", "L4H5"],
    "two_layers": ["L0H3", "L12H7"],
}


def prompt_ids(model) -> torch.Tensor:
    """Two rows of equal length (no padding needed): ``[2, pos]``."""
    rows = [token_ids(model, text) for text in PLAIN[:2]]
    length = min(len(row) for row in rows)
    return torch.tensor([row[:length] for row in rows])


def gate_logits(model, heads, ids) -> torch.Tensor:
    with torch.no_grad(), ablate(model, heads):
        return model.hf_model(ids).logits


def base_model(model, out):
    """The exported base, with the attention kernel sprint_lab's model runs (eager), so the
    comparisons measure the adapter, not sdpa against eager rounding (about 4e-5 on SmolLM2)."""
    return AutoModelForCausalLM.from_pretrained(
        out / BASE_FOLDER,
        dtype=torch.float32,
        attn_implementation=model.hf_model.config._attn_implementation,
    ).eval()


def peft_model(model, out, heads):
    return PeftModel.from_pretrained(base_model(model, out), adapter_path(out, heads)).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny_export(request, tiny_models, tmp_path_factory):
    """A tiny model (GQA Llama or MHA Qwen2) and its adapters for every case plus the baseline."""
    model = load_model(tiny_models[request.param], dtype="float32")
    out = tmp_path_factory.mktemp(f"lora-{request.param}") / "adapters"
    listing = export_head_adapters(model, [*TINY_CASES.values(), "none"], out)
    return model, out, listing


@pytest.mark.parametrize("case", list(TINY_CASES))
def test_adapter_logits_equal_gate_logits(tiny_export, case):
    model, out, _ = tiny_export
    heads = TINY_CASES[case]
    ids = prompt_ids(model)
    expected = gate_logits(model, heads, ids)
    with torch.no_grad():
        got = peft_model(model, out, heads)(ids).logits
        unablated = model.hf_model(ids).logits
    difference = float((got - expected).abs().max())
    print(f"{model.name} {case} {'+'.join(heads)}: max |logit difference| {difference:.3g}")
    assert difference < TOLERANCE
    assert float((expected - unablated).abs().max()) > 100 * TOLERANCE  # the heads matter


def test_baseline_needs_no_adapter_and_base_equals_unablated(tiny_export):
    model, out, listing = tiny_export
    ids = prompt_ids(model)
    with torch.no_grad():
        difference = float(
            (base_model(model, out)(ids).logits - model.hf_model(ids).logits).abs().max()
        )
    print(f"{model.name} baseline: max |logit difference| {difference:.3g}")
    assert difference < TOLERANCE
    row = listing.set_index("config").loc["none"]
    assert row["name"] is None and row["path"] is None and row["rank"] == 0
    assert row["base"] == str((out / BASE_FOLDER).resolve())
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["adapters"] == {
        "L1H2": "L1H2",
        "L1H0+L1H3": "L1H0_L1H3",
        "L0H1+L2H3": "L0H1_L2H3",
        "L0H0+L0H2+L2H1": "L0H0_L0H2_L2H1",
        "none": None,
    }
    with pytest.raises(InputError, match="baseline: it needs no adapter"):
        adapter_path(out, "none")


def test_greedy_tokens_equal_gated_generate(tiny_export):
    model, out, _ = tiny_export
    heads = TINY_CASES["two_layers"]
    ids = torch.tensor([token_ids(model, PLAIN[0])])
    with ablate(model, heads):
        ours = generate(model, PLAIN[0], max_new_tokens=6)[0]
    with torch.no_grad():
        theirs = peft_model(model, out, heads).generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False
        )
    assert ours.n_tokens > 0
    assert list(ours.token_ids) == theirs[0, ids.shape[1] :].tolist()[: ours.n_tokens]
    unablated = generate(model, PLAIN[0], max_new_tokens=6)[0]
    assert unablated.token_ids != ours.token_ids  # the ablation changes the answer here


def test_adapter_files_follow_the_peft_layout(tiny_export):
    model, out, listing = tiny_export
    folder = adapter_path(out, "L0H0+L0H2+L2H1")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    rank = 2 * model.d_head
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == config["lora_alpha"] == rank
    assert config["target_modules"] == ["o_proj"] and config["layers_to_transform"] == [0, 2]
    assert config["lora_dropout"] == 0.0 and config["bias"] == "none"
    assert config["base_model_name_or_path"] == str((out / BASE_FOLDER).resolve())
    tensors = load_file(folder / ADAPTER_WEIGHTS)
    prefix = "base_model.model.model.layers.{}.self_attn.o_proj.lora_{}.weight"
    assert sorted(tensors) == sorted(prefix.format(layer, ab) for layer in (0, 2) for ab in "AB")
    width = model.n_heads * model.d_head
    assert tensors[prefix.format(2, "A")].shape == (rank, width)
    assert tensors[prefix.format(2, "B")].shape == (model.hf_model.config.hidden_size, rank)
    assert not tensors[prefix.format(2, "A")][model.d_head :].any()  # layer 2 pads one head
    assert not tensors[prefix.format(2, "B")][:, model.d_head :].any()
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    row = listing.set_index("config").loc["L0H0+L0H2+L2H1"]
    assert (row["layers"], row["n_heads"], row["rank"]) == ([0, 2], 3, rank)


def test_head_adapter_weights_match_the_files(tiny_export):
    model, out, _ = tiny_export
    tensors, rank = head_adapter_weights(model, ["L1H2"], dtype="bfloat16")
    stored = load_file(adapter_path(out, "L1H2") / ADAPTER_WEIGHTS)
    assert rank == model.d_head and sorted(tensors) == sorted(stored)
    for key, tensor in tensors.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, stored[key].to(torch.bfloat16))


def test_adapter_names():
    assert adapter_name("L3H5+L7H2") == adapter_name(["L3H5", (7, 2)]) == "L3H5_L7H2"
    long_name = adapter_name([f"L{layer}H{head}" for layer in range(12) for head in range(9)])
    assert long_name.startswith("L0H0_and_107_more_") and len(long_name) < 40
    assert long_name != adapter_name(
        [f"L{layer}H{head}" for layer in range(12) for head in range(8)]
    )


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        (["L1H9"], "configs[0]: configuration L1H9: unknown head 9 in L1H9: valid heads are 0..3"),
        ([["L0H1", "L3H0"]], "unknown layer 3 in L3H0: valid layers are 0..2"),
        ([[]], "configs[0]: cannot read configuration []: it lists no heads"),
        ([], "configs is empty"),
        ([["L0H1", "L0H1"]], "configuration L0H1+L0H1 lists L0H1 twice"),
        (["L0H1+L1H2", ["L1H2", "L0H1"]], "configs[1]: L1H2+L0H1 repeats configs[0]"),
        (["L0H1", 3.5], "configs[1]: cannot read configuration 3.5"),
        (["L0X1"], "not a head label: 'L0X1'"),
    ],
)
def test_bad_configurations_are_refused_before_any_write(tiny, tmp_path, configs, message):
    out = tmp_path / "adapters"
    with pytest.raises(InputError) as error:
        export_head_adapters(tiny, configs, out)
    assert message in str(error.value)
    assert not out.exists()


def test_non_empty_folder_needs_overwrite(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=f"export folder {tmp_path} is not empty.*overwrite=True"):
        export_head_adapters(tiny, ["L0H1"], tmp_path, base=False)
    with pytest.raises(InputError, match="unknown dtype 'float8'"):
        export_head_adapters(tiny, ["L0H1"], tmp_path / "new", dtype="float8")
    listing = export_head_adapters(tiny, "L0H1", tmp_path, base=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert listing["path"].tolist() == [str(tmp_path / "L0H1")]
    assert listing["base"].tolist() == [str(Path(tiny.name).resolve())]
    assert not (tmp_path / BASE_FOLDER).exists()
    with pytest.raises(InputError, match=r"no adapter for L0H2 in .*L0H2/adapter_config.json is"):
        adapter_path(tmp_path, "L0H2")


@pytest.mark.slow
def test_embedded_model_adapters_equal_the_gate(embedded_model, tmp_path):
    model = embedded_model
    out = tmp_path / "adapters"
    export_head_adapters(model, list(EMBEDDED_CASES.values()), out)
    ids = prompt_ids(model)
    names = list(EMBEDDED_CASES)
    served = PeftModel.from_pretrained(
        base_model(model, out), adapter_path(out, EMBEDDED_CASES[names[0]]), adapter_name=names[0]
    ).eval()
    for name in names[1:]:  # one base, several adapters, as a multi-LoRA engine serves them
        served.load_adapter(adapter_path(out, EMBEDDED_CASES[name]), adapter_name=name)
    for name in names:
        served.set_adapter(name)
        with torch.no_grad():
            got = served(ids).logits
        difference = float((got - gate_logits(model, EMBEDDED_CASES[name], ids)).abs().max())
        print(f"smollm2-135m {name}: max |logit difference| {difference:.3g}")
        assert difference < TOLERANCE
    heads = EMBEDDED_CASES["two_layers"]
    served.set_adapter("two_layers")
    one = torch.tensor([token_ids(model, PLAIN[0])])
    with ablate(model, heads):
        ours = generate(model, PLAIN[0], max_new_tokens=12)[0]
    with torch.no_grad():
        theirs = served.generate(
            input_ids=one, attention_mask=torch.ones_like(one), max_new_tokens=12, do_sample=False
        )
    assert ours.n_tokens > 0
    assert list(ours.token_ids) == theirs[0, one.shape[1] :].tolist()[: ours.n_tokens]
    with served.disable_adapter(), torch.no_grad():
        difference = float((served(ids).logits - model.hf_model(ids).logits).abs().max())
    print(f"smollm2-135m baseline: max |logit difference| {difference:.3g}")
    assert difference < TOLERANCE
