"""The pieces of the generation loop: layout, sampling, stopping, the decoder registry."""

from __future__ import annotations

import pytest
import torch

from sprint_lab import load_model
from sprint_lab.generation.decoders import (
    ATTENTION_NAMES,
    ATTENTION_PATHS,
    CacheDecoder,
    Decoder,
    SharedPrefixDecoder,
    make_decoder,
    resolve_attention,
)
from sprint_lab.generation.kv import PrefixCache, left_pad
from sprint_lab.generation.sampling import Sampler
from sprint_lab.generation.stopping import StopRule


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return load_model(tiny_models["llama"], dtype="float32")


def test_left_pad_skips_padding_in_positions():
    padded = left_pad([[1, 2, 3], [4], []], prefix_len=2, pad_id=9)
    assert padded.ids.tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 9]]
    assert padded.body_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert padded.positions.tolist() == [[2, 3, 4], [0, 0, 2], [0, 0, 0]]
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[], []], prefix_len=0, pad_id=0)


def test_prefix_cache_is_lru():
    store = PrefixCache(max_entries=2)
    entry = [(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))]
    store.put("a", entry)
    store.put("b", entry)
    assert store.get("a") is entry  # "a" is now the most recent
    store.put("c", entry)
    assert store.get("b") is None and store.get("a") is entry and store.get("c") is entry
    assert (store.hits, store.misses) == (3, 3)


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = Sampler(temperature=1.0, top_p=0.7).filtered_logits(logits).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = Sampler(temperature=1.0, top_k=3).filtered_logits(logits).isfinite()
    assert kept.tolist() == [[True, True, True, False]]


def test_row_generators_are_seeded_by_prompt_and_sample():
    sampler = Sampler(temperature=1.0)
    draws = [torch.rand(1, generator=sampler.generator(7, p, s)).item() for p, s in [(0, 0)] * 2]
    assert draws[0] == draws[1]
    assert sampler.generator(7, 0, 0).initial_seed() != sampler.generator(7, 0, 1).initial_seed()
    assert Sampler().generator(7, 0, 0) is None


def test_stop_rule_reasons(tiny):
    rule = StopRule.build(tiny.tokenizer, ["xyz"], {2}, max_new_tokens=3)
    generated: list[int] = []
    assert rule.reason(generated, 2) == "eos" and generated == []
    assert rule.reason(generated, 5) is None and generated == [5]
    assert rule.reason(generated, 6) is None
    assert rule.reason(generated, 7) == "length" and generated == [5, 6, 7]
    assert rule.cut("abcxyzdef", "length") == ("abc", "stop")
    assert rule.cut("abc", "eos") == ("abc", "eos")


def test_attention_registry(tiny):
    assert ATTENTION_NAMES == ("auto", "shared_prefix", "bridge")
    assert resolve_attention(tiny, "auto") == "shared_prefix"
    assert isinstance(make_decoder(tiny, "shared_prefix", True), SharedPrefixDecoder)
    assert isinstance(make_decoder(tiny, "bridge", True), CacheDecoder)
    uncached = make_decoder(tiny, "shared_prefix", False)
    assert isinstance(uncached, CacheDecoder) and not uncached.use_cache
    assert all(isinstance(path.make(tiny, True), Decoder) for path in ATTENTION_PATHS.values())
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        resolve_attention(tiny, "flash")


def test_uncached_decoder_equals_cached(tiny):
    ids = torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]])
    body = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    positions = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    logits = []
    with torch.inference_mode():
        for use_cache in (True, False):
            decoder = CacheDecoder(tiny, use_cache=use_cache)
            first = decoder.start(None, [0, 0], ids, body, positions, 6)
            second = decoder.step(torch.tensor([[3], [4]]), positions[:, -1:] + 1)
            decoder.select_rows(torch.tensor([1]))
            third = decoder.step(torch.tensor([[12]]), torch.tensor([[5]]))
            logits.append((first, second, third))
    for cached, uncached in zip(*logits, strict=True):
        torch.testing.assert_close(cached, uncached, atol=1e-4, rtol=1e-4)
