"""The head gate: ablation through hook_z equals zeroing o_proj input columns, per row, safely."""

from __future__ import annotations

import copy

import pytest
import torch

from sprint_lab import Head, ablate, all_heads, generate, head_mask, load_model
from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import mask_for, validate_mask

PROMPTS = [
    "Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA:",
    "Q: A box holds 5 pens. How many pens are in 2 boxes?\nA:",
    "The capital of France is",
]


def _tokens(model, text):
    return model.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def _reference_with_zeroed_columns(model, heads):
    """An independent plain transformers copy whose o_proj input columns are zeroed."""
    from transformers import AutoModelForCausalLM

    from sprint_lab.core.model import resolve_source

    location, _ = resolve_source(model.name)
    reference = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    for head in heads:
        o_proj = reference.model.layers[head.layer].self_attn.o_proj
        with torch.no_grad():
            o_proj.weight[:, head.head * model.d_head : (head.head + 1) * model.d_head] = 0.0
    return reference


@pytest.fixture(scope="module")
def tiny_gqa(tiny_models):
    return load_model(tiny_models["llama"], dtype="float32")


def test_no_mask_equals_plain_transformers(embedded_model):
    reference = _reference_with_zeroed_columns(embedded_model, [])
    tokens = _tokens(embedded_model, PROMPTS[0])
    with torch.no_grad():
        diff = (embedded_model.hf_model(tokens).logits - reference(tokens).logits).abs().max()
    assert diff <= 1e-4


@pytest.mark.parametrize("model_name", ["embedded", "tiny_gqa"])
def test_gate_equals_zeroed_o_proj_columns(model_name, embedded_model, tiny_gqa):
    model = embedded_model if model_name == "embedded" else tiny_gqa
    heads = [Head(1, 2)] if model_name == "embedded" else [Head(1, 3)]
    if model_name == "embedded":
        heads = [Head(3, 5)]
    reference = _reference_with_zeroed_columns(model, heads)
    tokens = _tokens(model, PROMPTS[0])
    with torch.no_grad():
        plain = model.hf_model(tokens).logits
        with ablate(model, heads):
            gated = model.hf_model(tokens).logits
        expected = reference(tokens).logits
    assert (gated - expected).abs().max() <= 1e-4
    assert (gated - plain).abs().max() > 1e-3  # the ablation really changed something


def test_gqa_model_shapes(tiny_gqa):
    assert (tiny_gqa.n_layers, tiny_gqa.n_heads, tiny_gqa.n_kv_heads, tiny_gqa.d_head) == (
        3,
        4,
        2,
        16,
    )


def test_per_row_masks_equal_rows_alone(embedded_model):
    model = embedded_model
    heads = [Head(0, 1), Head(5, 4), Head(29, 8)]
    tokens = _tokens(model, PROMPTS[1]).repeat(len(heads), 1)
    masks = torch.stack([mask_for(model, [h]) for h in heads])
    with torch.no_grad():
        with head_mask(model, masks):
            batched = model.hf_model(tokens).logits
        for row, head in enumerate(heads):
            with ablate(model, [head]):
                alone = model.hf_model(tokens[row : row + 1]).logits
            assert (batched[row] - alone[0]).abs().max() <= 1e-4


def test_hooks_removed_after_exception_and_interrupt(embedded_model):
    model = embedded_model
    tokens = _tokens(model, PROMPTS[2])
    with torch.no_grad():
        clean = model.hf_model(tokens).logits
        for error in (RuntimeError("boom"), KeyboardInterrupt()):
            with pytest.raises(type(error)):
                with ablate(model, ["L2H3", "L10H0"]):
                    model.hf_model(tokens)
                    raise error
            after = model.hf_model(tokens).logits
            assert torch.equal(after, clean)
    hooked = [name for name, hp in model.bridge.hook_dict.items() if hp._forward_hooks]
    assert hooked == []


def test_bad_heads_and_masks_raise(embedded_model):
    model = embedded_model
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.29"):
        with ablate(model, ["L30H0"]):
            pass
    with pytest.raises(ValueError, match=r"valid heads are 0\.\.8"):
        with ablate(model, [(0, 9)]):
            pass
    with pytest.raises(ValueError, match=r"expected \[n_layers, n_heads\] = \[30, 9\]"):
        with head_mask(model, torch.ones(30, 8)):
            pass
    with pytest.raises(ValueError, match="not a head label"):
        Head.parse("layer3head5")


def test_head_values_and_candidates(embedded_model):
    assert Head.parse("L3H5") == Head(3, 5) and Head(3, 5).label == "L3H5"
    heads = all_heads(embedded_model, layers=[0, 5])
    assert [h.label for h in heads[:2]] == ["L0H0", "L0H1"] and len(heads) == 18
    with pytest.raises(ValueError, match="unknown layer 30"):
        all_heads(embedded_model, layers=[30])


def test_gradient_through_gate_reaches_mask(embedded_model):
    model = embedded_model
    tokens = _tokens(model, PROMPTS[0])
    mask = torch.ones(model.n_layers, model.n_heads, requires_grad=True)
    with head_mask(model, mask):
        loss = model.hf_model(tokens, labels=tokens).loss
    loss.backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    assert copy.copy(mask.grad).shape == (30, 9)


def test_nan_mask_refused_naming_layer_and_head(tiny_gqa):
    mask = torch.ones(3, 4)
    mask[1, 2] = float("nan")
    with pytest.raises(InputError, match=r"head mask holds nan at layer 1 head 2 \(L1H2\)"):
        with head_mask(tiny_gqa, mask):
            pass
    hooked = [name for name, hp in tiny_gqa.bridge.hook_dict.items() if hp._forward_hooks]
    assert hooked == []


def test_inf_in_batched_mask_refused_naming_row_layer_and_head(tiny_gqa):
    masks = torch.ones(3, 3, 4)
    masks[2, 0, 3] = float("inf")
    masks[2, 1, 0] = float("-inf")
    with pytest.raises(
        InputError, match=r"holds inf at batch row 2, layer 0 head 3 \(L0H3\)"
    ) as err:
        validate_mask(tiny_gqa, masks)
    assert "2 non-finite entries" in str(err.value)
    assert isinstance(err.value, ValueError)
    per_prompt = [mask_for(tiny_gqa, []) for _ in range(3)]
    per_prompt[1][2, 1] = float("nan")
    with pytest.raises(InputError, match=r"head_masks\[1\]: head mask holds nan at layer 2 head 1"):
        generate(tiny_gqa, ["a", "b", "c"], head_masks=per_prompt, max_new_tokens=1)
