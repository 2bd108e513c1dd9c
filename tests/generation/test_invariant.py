"""Batch-invariant generation: a row's tokens do not depend on the batch it lands in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sprint_lab as sl
from sprint_lab.generation.invariant import (
    batch_invariant,
    chunked_attention,
    invariant_active,
    tiled_linear,
)

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 3 boxes?",
    "Sara read 15 pages on Monday and 9 on Tuesday. How many pages did she read?",
    "There are 40 chairs and 8 rows. How many chairs are in each row?",
    "A pen costs 2 dollars. How much do 7 pens cost?",
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_linear_rows_do_not_depend_on_the_batch(dtype):
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 48, dtype=dtype), torch.randn(96, dtype=dtype)
    x = torch.randn(70, 48, dtype=dtype)
    alone = tiled_linear(x[:1], weight, bias, tile=8)
    for rows in (2, 3, 5, 8, 9, 70):
        assert torch.equal(tiled_linear(x[:rows], weight, bias, tile=8)[:1], alone), rows
    shuffled = tiled_linear(torch.cat([x[1:30], x[:1]]), weight, bias, tile=8)[-1:]
    assert torch.equal(shuffled, alone)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert torch.allclose(
        tiled_linear(x, weight, bias).float(), F.linear(x, weight, bias).float(), atol=tol
    )


def test_chunked_attention_matches_softmax_and_ignores_masked_width():
    torch.manual_seed(0)
    q = torch.randn(3, 2, 4, 16)
    k, v = torch.randn(3, 2, 24, 16), torch.randn(3, 2, 24, 16)
    lengths = torch.tensor([5, 13, 24])
    allowed = (torch.arange(24)[None, :] < lengths[:, None])[:, None, None, :].expand(3, 1, 4, 24)
    padded = lambda t: F.pad(t, (0, 0, 0, 8))  # noqa: E731
    wide = F.pad(allowed, (0, 8), value=False)
    out, lse = chunked_attention(q, padded(k), padded(v), wide, 0.25, chunk=8)
    scores = (q @ k.transpose(-1, -2)) * 0.25
    scores = scores.masked_fill(~allowed, float("-inf"))
    reference = torch.softmax(scores, -1) @ v
    assert torch.allclose(out, reference, atol=1e-5)
    assert torch.allclose(lse, torch.logsumexp(scores, -1), atol=1e-5)
    # row 0 alone, in a store only as wide as it needs: the same bits
    narrow, _ = chunked_attention(
        q[:1], k[:1, :, :8], v[:1, :, :8], allowed[:1, ..., :8], 0.25, chunk=8
    )
    assert torch.equal(narrow, out[:1])
    with pytest.raises(ValueError, match="not a multiple of the chunk size"):
        chunked_attention(q, k[:, :, :20], v[:, :, :20], allowed[..., :20], 0.25, chunk=8)


def test_batch_invariant_patches_and_restores_the_linears(tiny):
    linears = [m for m in tiny.hf_model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 7 + 1  # q, k, v, o, gate, up, down per layer + the LM head
    with batch_invariant(tiny):
        assert invariant_active() and all("forward" in vars(m) for m in linears)
    assert not invariant_active() and not any("forward" in vars(m) for m in linears)
    with pytest.raises(RuntimeError, match="boom"):
        with batch_invariant(tiny):
            raise RuntimeError("boom")
    assert not invariant_active() and not any("forward" in vars(m) for m in linears)


def _tokens(model, prompts, masks, batch_size, dtype_model=None):
    completions = sl.generate(
        model, prompts, head_masks=masks, max_new_tokens=12, batch_size=batch_size,
        deterministic=True,
    )  # fmt: skip
    return [c.token_ids for c in completions]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generate_is_batch_invariant(tiny_models, dtype):
    model = sl.load_model(tiny_models["llama"], dtype=dtype)
    prefix = "Answer each question with a number.\nQ: What is 2 plus 2?\nA: 4\n"
    prompts = [(prefix, f"Q: {q}\nA:") for q in QUESTIONS] * 2
    masks = sl.masks_for(model, [None] * 5 + [["L0H1"]] * 3 + [["L2H3"]] * 2)
    alone = [_tokens(model, [p], masks[i : i + 1], 1)[0] for i, p in enumerate(prompts)]
    for batch_size in (3, 7, 10):
        assert _tokens(model, prompts, masks, batch_size) == alone, batch_size
    reordered = list(reversed(range(10)))
    again = _tokens(model, [prompts[i] for i in reordered], masks[reordered], 10)
    assert [again[reordered.index(i)] for i in range(10)] == alone


def test_deterministic_needs_the_shared_prefix_path(tiny):
    with pytest.raises(sl.InputError, match="deterministic=True needs the shared-prefix"):
        sl.generate(tiny, ["Q: 1+1?"], max_new_tokens=2, attention="bridge", deterministic=True)
