"""Continuous batching: refilling finished rows' slots changes no token, only the work's shape."""

from __future__ import annotations

from collections import deque

import pandas as pd
import pytest
import torch

import sprint_lab as sl
from sprint_lab.generation.batch import Row, RowQueue
from sprint_lab.generation.decoders import SharedPrefixDecoder
from sprint_lab.generation.invariant import InvariantPrefixState
from sprint_lab.sweeps.batch import BatchRunner, WorkItem
from sprint_lab.sweeps.executor import LocalExecutor

PREFIX = "Answer each question with a number.\nQ: What is 2 plus 2?\nA: 4\n"
QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 3 boxes?",
    "Sara read 15 pages on Monday and 9 on Tuesday. How many pages did she read?",
    "There are 40 chairs and 8 rows. How many chairs are in each row?",
    "Ali had 20 stamps and gave away 5. How many are left?",
]
CONFIGS = [None, ["L0H1"], ["L1H2"], ["L2H3"], ["L0H0", "L2H1"]]


@pytest.fixture
def absorbed(monkeypatch) -> list[int]:
    """Rows merged into running batches (one entry per refill)."""
    merged: list[int] = []
    original = SharedPrefixDecoder.absorb

    def counting(self, other):
        merged.append(other.state.batch_size)
        return original(self, other)

    monkeypatch.setattr(SharedPrefixDecoder, "absorb", counting)
    return merged


def _rows(model):
    """Prompts x configurations, with stop strings so answers end at different lengths."""
    rows = [(PREFIX, f"Q: {q}\nA:") for q in QUESTIONS]
    prompts = [p for _ in CONFIGS for p in rows]
    masks = sl.masks_for(model, [c for c in CONFIGS for _ in rows])
    return prompts, masks


def _generate(model, prompts, masks, continuous, batch_size=4, **kwargs):
    return sl.generate(
        model, prompts, head_masks=masks, max_new_tokens=12, batch_size=batch_size,
        deterministic=True, stop=["\n", "."], continuous=continuous, **kwargs,
    )  # fmt: skip


def _texts(completions):
    return [(c.token_ids, c.finish_reason, c.diverged_at) for c in completions]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_refilled_batches_give_the_tokens_of_plain_batches(tiny_models, kind, dtype, absorbed):
    model = sl.load_model(tiny_models[kind], dtype=dtype)
    prompts, masks = _rows(model)
    plain = _generate(model, prompts, masks, continuous=False)
    assert not absorbed
    lengths = {len(c.token_ids) for c in plain}
    assert len(lengths) > 1  # rows finish at different steps, so there are slots to refill
    for batch_size in (2, 4, 9):
        refilled = _generate(model, prompts, masks, continuous=True, batch_size=batch_size)
        assert _texts(refilled) == _texts(plain), batch_size
    assert absorbed and sum(absorbed) > 0


def test_refills_run_each_prefix_once(tiny, monkeypatch, absorbed):
    """Without a prefix cache given, a refill reuses the prefixes its batch already ran."""
    computed: list[int] = []
    original = SharedPrefixDecoder.compute_prefix

    def counting(self, prefix_ids, n):
        computed.append(n)
        return original(self, prefix_ids, n)

    monkeypatch.setattr(SharedPrefixDecoder, "compute_prefix", counting)
    prompts, masks = _rows(tiny)
    _generate(tiny, prompts, masks, continuous=True, batch_size=4)
    assert absorbed
    assert sum(computed) == len(CONFIGS)  # one prefix per distinct mask, whatever the refills


def test_refilled_verify_batches_are_exact(tiny_models, absorbed):
    model = sl.load_model(tiny_models["llama"], dtype="float32")
    prompts, masks = _rows(model)
    baseline = _generate(model, prompts[: len(QUESTIONS)], None, continuous=False)
    drafts = [c.token_ids for c in baseline] * len(CONFIGS)
    plain = _generate(model, prompts, masks, continuous=False, drafts=drafts, verify=False)
    timings: dict = {}
    refilled = _generate(model, prompts, masks, continuous=True, drafts=drafts, timings=timings)
    assert _texts(refilled) == _texts(plain)
    assert absorbed
    assert timings["prefill_s"] > 0 and timings["decode_s"] >= 0


def test_refill_on_the_embedded_model_with_stop_strings(embedded_model, absorbed):
    problems = sl.load_problems("arith", limit=4, seed=2)
    template = sl.get_template("fewshot_cot")
    prompts = [template.parts(p.question, embedded_model.tokenizer) for p in problems] * 3
    masks = sl.masks_for(embedded_model, [None] * 4 + [["L3H1"]] * 4 + [["L20H5", "L7H0"]] * 4)
    settings = dict(
        head_masks=masks, max_new_tokens=40, stop=template.stop_strings(embedded_model.tokenizer),
        deterministic=True, batch_size=4,
    )  # fmt: skip
    plain = sl.generate(embedded_model, prompts, continuous=False, **settings)
    refilled = sl.generate(embedded_model, prompts, **settings)  # continuous is the default
    assert _texts(refilled) == _texts(plain)
    assert absorbed


def test_rows_with_another_prefix_wait_for_their_own_batch(tiny, absorbed):
    """A prompt without the batch's prefix is not merged into it (it gets a batch of its own)."""
    prompts = [(PREFIX, f"Q: {q}\nA:") for q in QUESTIONS[:3]] + ["Q: 7 + 1?\nA:"]
    prompts += [(PREFIX, f"Q: {q}\nA:") for q in QUESTIONS[3:]]
    plain = _generate(tiny, prompts, None, continuous=False, batch_size=1)
    refilled = _generate(tiny, prompts, None, continuous=True, batch_size=2)
    assert _texts(refilled) == _texts(plain)


def test_fast_path_ignores_continuous(tiny, absorbed):
    prompts, masks = _rows(tiny)
    sl.generate(tiny, prompts, head_masks=masks, max_new_tokens=4, batch_size=3, continuous=True)
    assert not absorbed  # deterministic=False: rows are not merged (a row would change bits)


def test_hooks_are_removed_when_a_refill_raises(tiny, monkeypatch):
    prompts, masks = _rows(tiny)

    def broken(self, other):
        raise RuntimeError("refill failed")

    monkeypatch.setattr(SharedPrefixDecoder, "absorb", broken)
    with pytest.raises(RuntimeError, match="refill failed"):
        _generate(tiny, prompts, masks, continuous=True, batch_size=4)
    assert not any(hp.fwd_hooks for hp in tiny.bridge.hook_dict.values())


def test_row_queue_keeps_rows_of_another_prefix_in_order():
    rows = [Row(i, i, 0, [5, 6, 7], [5, 6] if i != 1 else [9], 2 if i != 1 else 1, 0, None)
            for i in range(4)]  # fmt: skip
    queue = RowQueue(deque((row, None) for row in rows), slots=4)
    assert [row.index for row, _ in queue.take(2, [5, 6])] == [0, 2]
    assert [row.index for row, _ in queue.items] == [1, 3]
    assert [row.index for row, _ in queue.take(5, [])] == [1, 3]  # no prefix: any row fits


def test_merged_state_drops_unused_prefix_groups():
    def state(n_rows, groups, capacity):
        prefix = [(torch.randn(groups, 1, 3, 4), torch.randn(groups, 1, 3, 4))]
        made = InvariantPrefixState(1, torch.arange(n_rows) % groups, prefix, capacity)
        made.begin(torch.ones(n_rows, 2, dtype=torch.bool))
        kv = torch.randn(n_rows, 1, 2, 4)
        made.attend(0, torch.randn(n_rows, 2, 2, 4), kv, kv, 0.5)
        made.commit()
        return made

    running, joining = state(2, 2, 4), state(3, 1, 300)
    kept_group = running.prefix[0][0][1, :, :3].clone()
    running.select_rows(torch.tensor([1]))  # group 0 has no row left
    running.absorb(joining)
    assert running.batch_size == 4 and running.row_group.tolist() == [0, 1, 1, 1]
    assert running.prefix[0][0].shape[0] == 2  # the unused group is gone
    assert torch.equal(running.prefix[0][0][0, :, :3], kept_group)
    assert running.capacity == joining.capacity == running.keys[0].shape[2]
    with pytest.raises(ValueError, match="prefix lengths"):
        running.absorb(InvariantPrefixState(1, torch.zeros(1, dtype=torch.long), None, 4))


def test_sweep_runner_with_slots_gives_the_same_rows(tiny):
    problems = sl.load_problems("arith", limit=3, seed=0)
    items = [WorkItem(config, q) for config in ("none", "L0H1", "L1H2+L2H0") for q in range(3)]
    tables = []
    for slots in (None, 2):
        runner = BatchRunner(tiny, problems, max_new_tokens=8, deterministic=True,
                             strategy="verify", slots=slots)  # fmt: skip
        tables.append(runner.run(items).drop(columns=["seconds"], errors="ignore"))
    assert tables[0].equals(tables[1])
    with pytest.raises(sl.InputError, match="slots must be >= 1"):
        BatchRunner(tiny, problems, slots=0)


def test_a_windowed_local_sweep_gives_the_same_table(embedded_model, tmp_path, absorbed):
    problems = sl.load_problems("arith", limit=4, seed=0)
    heads = ["L0H1", "L3H1", "L20H5"]
    settings = dict(max_new_tokens=30, batch_size=3, progress=False, strategy="verify")
    plain = sl.sweep(embedded_model, problems, heads, **settings)
    assert not absorbed
    windowed = sl.sweep(embedded_model, problems, heads, out=tmp_path / "store",
                        executor=LocalExecutor(window=3), **settings)  # fmt: skip
    assert absorbed  # rows were refilled
    columns = ["question_id", "config", "completion", "n_tokens", "correct", "diverged_at"]
    pd.testing.assert_frame_equal(plain.table[columns], windowed.table[columns])
    with pytest.raises(sl.InputError, match="window must be an int >= 1, got 0"):
        LocalExecutor(window=0)
