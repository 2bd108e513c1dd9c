"""Configurations beyond one zeroed head: head sets, whole layers, mean and resample ablation.

The mean-ablation gate (``z * m + (1 - m) * r``) is checked against an independent computation:
a plain transformers copy of the model whose ``o_proj`` input slice is overwritten by the mean.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import sprint_lab as sl
from sprint_lab.core.ablation import replacement_for
from sprint_lab.core.configs import as_configs, candidate_from_label
from sprint_lab.core.errors import InputError
from sprint_lab.sweeps.rows import config_position

PROMPTS = ["Q: 2 + 3 = ?\nA:", "The cat sat on the mat because", "Numbers: 4, 8, 15,"]


@pytest.fixture(scope="module")
def plain(tiny_models):
    """The tiny Llama as plain transformers, float32 and eager attention (no bridge)."""
    model = AutoModelForCausalLM.from_pretrained(
        tiny_models["llama"], dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def _o_proj_inputs(plain, ids):
    """Each layer's o_proj input ``[pos, n_heads * d_head]`` for one prompt."""
    seen = {}
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda module, args, index=i: seen.__setitem__(index, args[0][0].detach().clone())
        )
        for i, layer in enumerate(plain.model.layers)
    ]
    try:
        with torch.no_grad():
            plain(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_head_means_equal_plain_o_proj_inputs(tiny, plain):
    reference = sl.head_means(tiny, PROMPTS)
    sums, count = None, 0
    for prompt in PROMPTS:
        ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        inputs = _o_proj_inputs(plain, ids)
        stacked = torch.stack([inputs[i] for i in range(tiny.n_layers)])  # [layers, pos, d]
        total = stacked.double().sum(dim=1)
        sums = total if sums is None else sums + total
        count += len(ids)
    expected = (sums / count).reshape(tiny.n_layers, tiny.n_heads, tiny.d_head).float()
    assert torch.allclose(reference.mean(), expected, atol=1e-5)
    assert reference.counts.sum().item() == count


@pytest.mark.parametrize("heads", [["L1H2"], ["L0H1", "L2H3"], ["L1H0", "L1H1", "L1H2", "L1H3"]])
def test_mean_ablation_equals_replacing_the_o_proj_input_slice(tiny, plain, heads):
    reference = sl.head_means(tiny, PROMPTS)
    mean = reference.mean()
    parsed = [sl.Head.parse(h) for h in heads]
    ids = tiny.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    d_head = tiny.d_head

    def replace(layer_index):
        def hook(module, args):
            z = args[0].clone()
            for head in parsed:
                if head.layer == layer_index:
                    z[..., head.head * d_head : (head.head + 1) * d_head] = mean[
                        layer_index, head.head
                    ]
            return (z,)

        return hook

    handles = [
        layer.self_attn.o_proj.register_forward_pre_hook(replace(i))
        for i, layer in enumerate(plain.model.layers)
    ]
    try:
        with torch.no_grad():
            expected = plain(torch.tensor([ids])).logits
    finally:
        for handle in handles:
            handle.remove()
    replacement = replacement_for(tiny, parsed, "mean", reference, "q")
    with torch.no_grad(), sl.head_mask(tiny, sl.mask_for(tiny, heads), replacement):
        gated = tiny.hf_model(torch.tensor([ids])).logits
    with torch.no_grad():
        unpruned = tiny.hf_model(torch.tensor([ids])).logits
    assert (gated - expected).abs().max().item() <= 1e-4
    assert (gated - unpruned).abs().max().item() > 1e-3  # the ablation changes the logits


def test_zero_replacement_gates_exactly_like_zeroing(tiny):
    ids = torch.tensor([tiny.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"]])
    mask = sl.mask_for(tiny, ["L1H2", "L2H0"])
    zeros = torch.zeros(tiny.n_layers, tiny.n_heads, tiny.d_head)
    with torch.no_grad(), sl.head_mask(tiny, mask):
        zeroed = tiny.hf_model(ids).logits
    with torch.no_grad(), sl.head_mask(tiny, mask, zeros):
        affine = tiny.hf_model(ids).logits
    assert torch.equal(zeroed, affine)


def test_resample_donor_is_seeded_and_never_the_question_itself():
    reference = sl.HeadMeans(
        ("a", "b", "c", "d"),
        torch.zeros(4, 1, 1, 1, dtype=torch.float64),
        torch.ones(4, dtype=torch.int64),
        "x",
    )
    donors = {q: reference.donor(q, seed=0) for q in reference.ids}
    assert all(reference.ids[donors[q]] != q for q in reference.ids)
    assert donors == {q: reference.donor(q, seed=0) for q in reference.ids}
    many = {tuple(reference.donor(q, seed=s) for q in reference.ids) for s in range(20)}
    assert len(many) > 1  # the seed changes the pairing
    lonely = sl.HeadMeans(
        ("a",), torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.int64), "x"
    )
    with pytest.raises(InputError, match="at least two"):
        lonely.donor("a")


def test_config_labels_and_positions(tiny):
    configs = as_configs(tiny, [["L0H1", "L2H0"], sl.layer(tiny, 1), "L1H2@mean", (0, 0)])
    assert [c.label for c in configs] == ["L0H1+L2H0", "L1", "L1H2@mean", "L0H0"]
    assert [config_position(c.label) for c in configs] == [(-1, -1), (1, -1), (1, 2), (0, 0)]
    assert config_position("L1H0+L1H3") == (1, -1)
    assert candidate_from_label("L1", n_heads=tiny.n_heads).heads == sl.layer(tiny, 1).heads
    with pytest.raises(ValueError, match="listed twice"):
        as_configs(tiny, ["L0H1", ["L0H1"]])
    with pytest.raises(ValueError, match="unknown ablation kind"):
        as_configs(tiny, ["L0H1@median"])
    with pytest.raises(ValueError, match="unknown layer"):
        sl.layer(tiny, 3)


CONFIGS = [["L0H1"], ["L0H1", "L2H0"], "L1", "L1H2@mean", "L1H2@resample", "L0H1@mean"]


@pytest.fixture(scope="module")
def arith():
    return sl.load_problems("arith")[:3]


def test_sweep_of_configs_is_batch_invariant(tiny, arith):
    big = sl.sweep(tiny, arith, configs=CONFIGS, max_new_tokens=6, progress=False, placebos=1)
    one = sl.sweep(
        tiny, arith, configs=CONFIGS, max_new_tokens=6, progress=False, placebos=1, batch_size=1
    )
    assert big.equals(one)
    assert big.configs == ["L0H1", "L0H1+L2H0", "L1", "L1H2@mean", "L1H2@resample", "L0H1@mean"]
    assert big.placebo_check()["mismatched"].tolist() == [0]
    assert big.meta["ablation_reference"].startswith("sweep prompts:")
    # zero-ablation rows do not change when the batch also holds replacement rows
    alone = sl.sweep(tiny, arith, ["L0H1"], max_new_tokens=6, progress=False)
    rows = big.table[big.table["config"] == "L0H1"].reset_index(drop=True)
    assert (
        rows["completion"].tolist()
        == alone.table[alone.table["config"] == "L0H1"]["completion"].tolist()
    )


def test_mean_rows_differ_from_zero_rows_somewhere(tiny, arith):
    result = sl.sweep(tiny, arith, configs=["L1", "L1@mean"], max_new_tokens=8, progress=False)
    zero = result.table[result.table["config"] == "L1"]["completion"].tolist()
    mean = result.table[result.table["config"] == "L1@mean"]["completion"].tolist()
    assert zero != mean


def test_resume_refuses_another_ablation_reference(tiny, arith, tmp_path):
    sl.sweep(tiny, arith, configs=["L1H2@mean"], max_new_tokens=4, progress=False, out=tmp_path)
    again = sl.sweep(
        tiny, arith, configs=["L1H2@mean"], max_new_tokens=4, progress=False, out=tmp_path
    )
    assert again.complete
    with pytest.raises(InputError, match="ablation_reference"):
        sl.sweep(
            tiny, arith[:2], configs=["L1H2@mean"], max_new_tokens=4, progress=False,
            out=tmp_path,
        )  # fmt: skip


def test_heads_and_configs_are_exclusive(tiny, arith):
    with pytest.raises(InputError, match="not both"):
        sl.sweep(tiny, arith, ["L0H1"], configs=["L0H1"], max_new_tokens=2, progress=False)
