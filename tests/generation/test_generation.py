"""Batched, gated generation: exact against one-by-one, per-mask and uncached decoding."""

from __future__ import annotations

import pytest
import torch

from sprint_lab import ablate, generate, get_template, mask_for
from tests.helpers import PLAIN, QUESTIONS, assert_same_or_near_tie, token_ids


def test_kv_cache_equals_no_cache(embedded_model):
    model = embedded_model
    mask = mask_for(model, ["L4H2"])
    for head_masks in (None, mask):
        cached = generate(model, PLAIN[:2], head_masks=head_masks, max_new_tokens=20)
        uncached = generate(
            model, PLAIN[:2], head_masks=head_masks, max_new_tokens=20, use_cache=False
        )
        assert [c.token_ids for c in cached] == [c.token_ids for c in uncached]
        assert sum(c.n_tokens for c in cached) >= 20  # long enough to exercise the cache


def test_cached_generation_matches_plain_transformers_generate(embedded_model):
    """Catches a transformers/TransformerLens cache regression (e.g. transformers 5.24)."""
    model = embedded_model
    ids = torch.tensor([token_ids(model, PLAIN[0])])
    out = model.hf_model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=True)
    no_cache = model.hf_model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=False)
    ours = generate(model, PLAIN[0], max_new_tokens=16)[0]
    assert out[0, ids.shape[1] :].tolist() == no_cache[0, ids.shape[1] :].tolist()
    assert list(ours.token_ids) == out[0, ids.shape[1] :].tolist()[: len(ours.token_ids)]


def test_batched_equals_one_by_one(embedded_model):
    model = embedded_model
    batched = generate(model, PLAIN, max_new_tokens=24, batch_size=4)
    alone = [generate(model, p, max_new_tokens=24)[0] for p in PLAIN]
    assert_same_or_near_tie(model, PLAIN, batched, alone)


def test_per_row_masks_equal_separate_runs(embedded_model):
    model = embedded_model
    heads = ["L0H3", "L5H1", "L12H7", "L29H0"]
    masks = torch.stack([mask_for(model, [h]) for h in heads])
    batched = generate(model, PLAIN, head_masks=masks, max_new_tokens=24)
    alone = []
    for prompt, head in zip(PLAIN, heads, strict=True):
        with ablate(model, [head]):  # the context-manager path must agree with head_masks
            alone.append(generate(model, prompt, max_new_tokens=24)[0])
    assert_same_or_near_tie(model, PLAIN, batched, alone, masks)
    plain = generate(model, PLAIN, max_new_tokens=24)
    assert any(a.token_ids != b.token_ids for a, b in zip(batched, plain, strict=True))


def test_shared_prefix_cache_equals_full_prompts(embedded_model):
    model = embedded_model
    template = get_template("fewshot_cot")
    parts = [template.parts(q, model.tokenizer) for q in QUESTIONS[:3]]
    masks = torch.stack([mask_for(model, h) for h in ([], ["L3H3"], [])])
    reused = generate(model, parts, head_masks=masks, max_new_tokens=16)
    full = generate(model, ["".join(p) for p in parts], head_masks=masks, max_new_tokens=16)
    assert_same_or_near_tie(model, parts, reused, full, masks)


def test_stop_string_ends_one_row_only(embedded_model):
    model = embedded_model
    out = generate(model, PLAIN[:2], max_new_tokens=30, stop=["\n"])
    free = generate(model, PLAIN[:2], max_new_tokens=30)
    for stopped, unstopped in zip(out, free, strict=True):
        if stopped.finish_reason == "stop":
            assert "\n" not in stopped.text
            assert unstopped.text.startswith(stopped.text)
    assert {c.finish_reason for c in free} <= {"length", "eos"}


def test_sampling_is_seeded_and_batch_independent(embedded_model):
    model = embedded_model
    kwargs = dict(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.95, num_samples=3)
    a = generate(model, PLAIN[:2], seed=7, **kwargs)
    b = generate(model, PLAIN[:2], seed=7, batch_size=2, **kwargs)
    c = generate(model, PLAIN[:2], seed=8, **kwargs)
    assert len(a) == 6 and [(x.prompt_index, x.sample_index) for x in a][:3] == [
        (0, 0),
        (0, 1),
        (0, 2),
    ]
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({x.token_ids for x in a[:3]}) > 1  # samples of one prompt differ


def test_bad_arguments(embedded_model):
    model = embedded_model
    with pytest.raises(ValueError, match="2 head masks for 3 prompts"):
        generate(model, PLAIN[:3], head_masks=torch.ones(2, 30, 9), max_new_tokens=2)
    with pytest.raises(ValueError, match="expected"):
        generate(model, PLAIN[:1], head_masks=torch.ones(30, 10), max_new_tokens=2)
    with pytest.raises(ValueError, match="num_samples"):
        generate(model, PLAIN[:1], num_samples=0)
