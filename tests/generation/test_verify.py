"""Verify-then-decode: teacher-forcing a draft and decoding from where it departs is exact."""

from __future__ import annotations

import pytest

import sprint_lab as sl
from sprint_lab.generation.verify import first_divergence

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 3 boxes?",
    "Sara read 15 pages on Monday and 9 on Tuesday. How many pages did she read?",
    "There are 40 chairs and 8 rows. How many chairs are in each row?",
]
PREFIX = "Answer each question with a number.\nQ: What is 2 plus 2?\nA: 4\n"
CONFIGS = [None, ["L0H1"], ["L1H2"], ["L2H3"], ["L0H0", "L2H1"]]


def _run(model, prompts, masks, drafts, verify, batch_size=7, **kwargs):
    return sl.generate(
        model, prompts, head_masks=masks, max_new_tokens=14, batch_size=batch_size,
        deterministic=True, drafts=drafts, verify=verify, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_verify_gives_the_tokens_of_plain_decoding(tiny_models, kind, dtype):
    model = sl.load_model(tiny_models[kind], dtype=dtype)
    prompts = [(PREFIX, f"Q: {q}\nA:") for q in QUESTIONS]
    baseline = _run(model, prompts, None, None, verify=False)
    drafts = [c.token_ids for c in baseline]
    rows = [(p, c, d) for c in CONFIGS for p, d in zip(prompts, drafts, strict=True)]
    # drafts that are wrong from the start, or empty, or absent, must not change any token
    rows += [(prompts[0], ["L0H1"], (7,) * 14), (prompts[1], ["L1H2"], ())]
    rows += [(prompts[2], None, None)]
    all_prompts = [p for p, _, _ in rows]
    masks = sl.masks_for(model, [c for _, c, _ in rows])
    all_drafts = [d for _, _, d in rows]
    plain = _run(model, all_prompts, masks, all_drafts, verify=False)
    timings: dict = {}
    checked = _run(model, all_prompts, masks, all_drafts, verify=True, timings=timings)
    assert [c.token_ids for c in checked] == [c.token_ids for c in plain]
    assert [c.finish_reason for c in checked] == [c.finish_reason for c in plain]
    assert [c.diverged_at for c in checked] == [c.diverged_at for c in plain]
    diverged = [c.diverged_at for c in checked]
    assert diverged[: len(QUESTIONS)] == [None] * len(QUESTIONS)  # the baseline's own draft
    assert any(d is not None and d > 0 for d in diverged)  # some pruned rows keep a prefix
    assert diverged[-3] == 0 and diverged[-1] is None  # a wrong draft; no draft at all
    assert 0 < timings["accepted_tokens"] < timings["draft_tokens"]
    for batch_size in (1, 3):  # and not because of the batch it ran in
        again = _run(model, all_prompts, masks, all_drafts, verify=True, batch_size=batch_size)
        assert [c.token_ids for c in again] == [c.token_ids for c in plain], batch_size


def test_verify_keeps_stop_strings_and_eos(embedded_model):
    problems = sl.load_problems("arith", limit=3, seed=1)
    template = sl.get_template("fewshot_cot")
    prompts = [template.parts(p.question, embedded_model.tokenizer) for p in problems]
    settings = dict(
        max_new_tokens=40, stop=template.stop_strings(embedded_model.tokenizer),
        deterministic=True, batch_size=6,
    )  # fmt: skip
    baseline = sl.generate(embedded_model, prompts, **settings)
    assert {c.finish_reason for c in baseline} <= {"stop", "eos"}  # the drafts end on their own
    drafts = [c.token_ids for c in baseline] * 2
    masks = sl.masks_for(embedded_model, [None] * 3 + [["L3H1"]] * 3)
    plain = sl.generate(embedded_model, prompts * 2, head_masks=masks, drafts=drafts,
                        verify=False, **settings)  # fmt: skip
    checked = sl.generate(embedded_model, prompts * 2, head_masks=masks, drafts=drafts, **settings)
    assert [(c.text, c.n_tokens, c.finish_reason) for c in checked] == [
        (c.text, c.n_tokens, c.finish_reason) for c in plain
    ]
    assert [c.text for c in checked[:3]] == [c.text for c in baseline]
    assert [c.diverged_at for c in checked] == [c.diverged_at for c in plain]


def test_verify_refuses_what_it_cannot_do_exactly(tiny):
    prompts = ["Q: 1+1?\nA:"]
    with pytest.raises(sl.InputError, match="exact only for greedy"):
        sl.generate(tiny, prompts, max_new_tokens=2, drafts=[(1,)], deterministic=True,
                    temperature=0.7)  # fmt: skip
    with pytest.raises(sl.InputError, match="verify=True needs deterministic=True"):
        sl.generate(tiny, prompts, max_new_tokens=2, drafts=[(1,)])
    with pytest.raises(sl.InputError, match="got 2 drafts for 1 prompts"):
        sl.generate(tiny, prompts, max_new_tokens=2, drafts=[(1,), (2,)], deterministic=True)
    with pytest.raises(sl.InputError, match="num_samples=1"):
        sl.generate(tiny, prompts, max_new_tokens=2, drafts=[(1,)], deterministic=True,
                    num_samples=2)  # fmt: skip
    sampled = sl.generate(tiny, prompts, max_new_tokens=3, drafts=[(1, 2, 3)], verify=False,
                          temperature=0.7, seed=1)[0]  # fmt: skip
    assert sampled.diverged_at == first_divergence(sampled.token_ids, (1, 2, 3))  # measured after
