"""Shared-prefix attention: exact against the bridge's attention, gate intact, hooks restored."""

from __future__ import annotations

import pytest
import torch

from sprint_lab import generate, get_template, head_mask, load_model, mask_for
from sprint_lab.generation.attention_swap import (
    ATTENTION_NAME,
    bridge_only_hooks,
    shared_prefix_attention,
    shared_prefix_supported,
)
from sprint_lab.generation.decoders import SharedPrefixDecoder
from sprint_lab.generation.shared_prefix import flash_attention
from tests.helpers import QUESTIONS, assert_same_or_near_tie


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tiny_models):
    return load_model(tiny_models[request.param], dtype="float32")


def _reference_logits(model, ids: list[int], mask) -> torch.Tensor:
    """Last-position logits of one row alone, through the bridge's own attention, gated."""
    with torch.inference_mode(), head_mask(model, mask):
        return model.hf_model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_logits_equal_one_row_at_a_time(tiny):
    """Two prefix groups, ragged padded suffixes, then a decoding step: every row exact."""
    model = tiny
    torch.manual_seed(1)
    prefix = torch.randint(10, 500, (7,)).tolist()
    suffixes = [torch.randint(10, 500, (n,)).tolist() for n in (3, 5, 1, 4)]
    group_masks = [mask_for(model, []), mask_for(model, ["L1H2", "L2H0"])]
    mask_keys = [0, 1, 1, 0]
    row_masks = torch.stack([group_masks[k] for k in mask_keys])
    width = max(len(s) for s in suffixes)
    ids = torch.zeros((4, width), dtype=torch.long)
    body = torch.zeros((4, width), dtype=torch.long)
    positions = torch.zeros((4, width), dtype=torch.long)
    for i, suffix in enumerate(suffixes):
        n = len(suffix)
        ids[i, width - n :] = torch.tensor(suffix)
        body[i, width - n :] = 1
        positions[i, width - n :] = torch.arange(len(prefix), len(prefix) + n)
    next_tokens = torch.tensor([[11], [12], [13], [14]])
    with torch.inference_mode():
        with head_mask(model, row_masks) as gate, shared_prefix_attention(model):
            decoder = SharedPrefixDecoder(model)
            gate.set_mask(torch.stack(group_masks))
            entries = dict(enumerate(decoder.compute_prefix(prefix, 2)))
            gate.set_mask(row_masks)
            first = decoder.start(entries, mask_keys, ids, body, positions, width + 4)
            second = decoder.step(next_tokens, positions[:, -1:] + 1)
        # the context is gone: the references run through the bridge's own attention
        for i, suffix in enumerate(suffixes):
            expected = _reference_logits(model, prefix + suffix, row_masks[i])
            torch.testing.assert_close(first[i].float(), expected, atol=1e-4, rtol=1e-4)
            expected = _reference_logits(
                model, prefix + suffix + next_tokens[i].tolist(), row_masks[i]
            )
            torch.testing.assert_close(second[i].float(), expected, atol=1e-4, rtol=1e-4)
        # the gate really acted on the shared-prefix path (rows 1 and 2 are ablated)
        unablated = _reference_logits(model, prefix + suffixes[1], group_masks[0])
        assert (first[1].float() - unablated).abs().max() > 1e-3


def test_dropping_rows_keeps_the_others_exact(tiny):
    model = tiny
    prefix = list(range(20, 26))
    suffixes = [[30, 31], [40], [50, 51, 52]]
    ids = torch.tensor([[0, 30, 31], [0, 0, 40], [50, 51, 52]])
    body = (ids != 0).long()
    positions = torch.tensor([[0, 6, 7], [0, 0, 6], [6, 7, 8]])
    mask = mask_for(model, ["L0H1"])
    with torch.inference_mode():
        with head_mask(model, mask), shared_prefix_attention(model):
            decoder = SharedPrefixDecoder(model)
            entries = {0: decoder.compute_prefix(prefix, 1)[0]}
            decoder.start(entries, [0, 0, 0], ids, body, positions, 3 + 3)
            decoder.step(torch.tensor([[60], [61], [62]]), torch.tensor([[8], [7], [9]]))
            decoder.select_rows(torch.tensor([0, 2]))
            logits = decoder.step(torch.tensor([[70], [72]]), torch.tensor([[9], [10]]))
        for row, original in enumerate((0, 2)):
            tokens = prefix + suffixes[original] + [60 + original, 70 + original]
            torch.testing.assert_close(
                logits[row].float(), _reference_logits(model, tokens, mask), atol=1e-4, rtol=1e-4
            )


def test_generate_paths_agree_on_the_embedded_model(embedded_model):
    model = embedded_model
    template = get_template("fewshot_cot")
    parts = [template.parts(q, model.tokenizer) for q in QUESTIONS]
    masks = torch.stack([mask_for(model, h) for h in ([], ["L0H4"], [], ["L9H2"])])
    kwargs = dict(head_masks=masks, max_new_tokens=24, stop=template.stop_strings(model.tokenizer))
    fast = generate(model, parts, attention="shared_prefix", **kwargs)
    bridge = generate(model, parts, attention="bridge", **kwargs)
    assert_same_or_near_tie(model, parts, fast, bridge, masks)
    assert sum(c.n_tokens for c in fast) >= 16


def test_context_restores_the_bridge_after_an_error(tiny):
    model = tiny
    before = model.hf_model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with shared_prefix_attention(model):
            assert model.hf_model.config._attn_implementation == ATTENTION_NAME
            assert all("forward" in block.attn.__dict__ for block in model.bridge.blocks)
            raise RuntimeError("boom")
    assert model.hf_model.config._attn_implementation == before
    assert not any("forward" in block.attn.__dict__ for block in model.bridge.blocks)
    # the bridge's own attention runs again, with its internal hooks
    seen = []

    def record(pattern, hook):
        seen.append(pattern.shape)

    with model.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", record)]):
        model.hf_model(input_ids=torch.tensor([[5, 6, 7]]))
    assert seen


def test_attention_internal_hooks_force_the_bridge_path(tiny):
    model = tiny
    calls = []

    def count(pattern, hook):
        calls.append(pattern.shape)

    with model.bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", count)]):
        assert bridge_only_hooks(model) == ["blocks.1.attn.hook_pattern"]
        out = generate(model, ["a b c"], max_new_tokens=3)  # auto: the bridge, hook fires
        assert calls and len(out) == 1
        with pytest.raises(ValueError, match="blocks.1.attn.hook_pattern"):
            generate(model, ["a b c"], max_new_tokens=3, attention="shared_prefix")
    assert bridge_only_hooks(model) == []


def test_unsupported_models_fall_back(tiny):
    model = tiny
    hf_attn = model.bridge.blocks[1].attn.original_component
    hf_attn.sliding_window = 4
    try:
        assert not shared_prefix_supported(model)
        with pytest.raises(ValueError, match="cannot use shared-prefix attention"):
            generate(model, ["a b c"], max_new_tokens=2, attention="shared_prefix")
        assert len(generate(model, ["a b c"], max_new_tokens=2)) == 1  # auto -> bridge
    finally:
        hf_attn.sliding_window = None
    assert shared_prefix_supported(model)
    with pytest.raises(ValueError, match="unknown attention"):
        generate(model, ["a b c"], max_new_tokens=2, attention="flash")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_and_matmul_kernels_agree_with_softmax_attention(dtype):
    torch.manual_seed(0)
    query = torch.randn(3, 2, 5, 16)
    keys, values = torch.randn(3, 2, 7, 16), torch.randn(3, 2, 7, 16)
    allowed = torch.rand(3, 1, 5, 7) > 0.4
    allowed[..., 0] = True  # no empty row
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    scores = (query @ keys.transpose(-1, -2)) * 0.25 + mask
    expected_out = scores.softmax(-1) @ values
    expected_lse = scores.logsumexp(-1)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    for fused in (True, False):
        out, lse = flash_attention(
            query.to(dtype), keys.to(dtype), values.to(dtype), mask.to(dtype), 0.25, fused=fused
        )
        torch.testing.assert_close(out.float(), expected_out, **tol)
        torch.testing.assert_close(lse, expected_lse, **tol)
