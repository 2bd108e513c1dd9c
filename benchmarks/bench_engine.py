"""Sweep throughput: the local executor vs a vLLM server (each pruned head a LoRA adapter).

The same sweep (baseline + the given heads x the questions, greedy, the template's stop strings)
runs through ``LocalExecutor`` and through ``VLLMExecutor`` on a ``vllm serve`` process started
here (``.ci/vllm_env.sh``'s ``.venvs/vllm`` or ``$SPRINT_LAB_VLLM_PYTHON``), or on a running
server given by ``--base-url``. Both run ``deterministic=False`` (vLLM is not batch-invariant).
Printed: ``engine_startup_s=`` (server start, not part of any rate), ``local_pairs_per_s=``,
``vllm_pairs_per_s=`` (requests only: adapters loaded, start-up excluded), ``vllm_vs_local=``
(their ratio), ``token_mismatches=`` (rows whose text differs) with how many of those start at a
near-tie of the server's top-2 log-probabilities, and ``engine_profile:`` (the server's own
Prometheus counters: engine steps, prefill / decode / queue seconds summed over requests,
the share of prompt tokens served from the prefix cache).

A short warm-up sweep (one question) runs through each executor first, unless ``--no-warmup``.

    python benchmarks/bench_engine.py                      # CPU, embedded model, small
    python benchmarks/bench_engine.py --device cuda --model Qwen/Qwen2.5-Math-1.5B-Instruct \\
        --dtype bfloat16 --prompt fewshot_cot --dataset gsm8k --questions 64 --layers 0 \\
        --new-tokens 256 --concurrency 64 --max-num-seqs 256 --max-num-batched-tokens 8192
"""

from __future__ import annotations

import argparse
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

import sprint_lab as sl
from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import parse_config
from sprint_lab.engines.lora import save_base_model
from sprint_lab.engines.vllm_server import VLLMClient, VLLMServer
from sprint_lab.generation.diagnostics import NEAR_TIE
from sprint_lab.generation.verify import first_divergence
from sprint_lab.sweeps.executor import LocalExecutor
from sprint_lab.sweeps.vllm import VLLMExecutor

METRICS = {
    "prefill_s": "vllm:request_prefill_time_seconds_sum",
    "decode_s": "vllm:request_decode_time_seconds_sum",
    "queue_s": "vllm:request_queue_time_seconds_sum",
    "steps": "vllm:iteration_tokens_total_count",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "cached_tokens": "vllm:prompt_tokens_cached_total",
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="sl.load_model source")
    parser.add_argument("--device", default="cpu", help="device of the local model (cpu, cuda)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--dataset", default="arith", help="sl.load_problems name")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--heads", nargs="*", default=["L5H2", "L3H1"])
    parser.add_argument("--layers", type=int, nargs="*", help="every head of these layers")
    parser.add_argument("--prompt", default="chat_gsm8k")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="local executor rows/pass")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--base-url", help="a running vllm serve (its base must be --model)")
    parser.add_argument("--python", help="interpreter with vLLM (default .venvs/vllm)")
    parser.add_argument("--max-loras", type=int, default=4, help="the server's --max-loras")
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--cpu-kv-cache-gib", type=int, default=2)
    parser.add_argument("--no-warmup", action="store_true")
    return parser.parse_args()


def metrics(client: VLLMClient) -> dict[str, float]:
    """The server's counters of :data:`METRICS` (summed over label sets)."""
    text = client.request("/metrics")
    values = dict.fromkeys(METRICS, 0.0)
    for key, name in METRICS.items():
        for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M):
            values[key] += float(match.group(1))
    return values


def mismatches(model, problems, template, new_tokens, local, engine, executor) -> tuple[int, int]:
    """Rows whose completion differs, and how many of them depart first at a near-tie."""
    merged = local.merge(engine, on=["question_id", "config"], suffixes=("_l", "_v"))
    differ = merged[merged["completion_l"] != merged["completion_v"]]
    by_id = {p.id: p for p in problems}
    near = 0
    for row in differ.itertuples(index=False):
        heads = list(parse_config(row.config, model.n_heads)) or None
        problem = by_id[row.question_id]
        (ours,) = sl.generate(model, [template.parts(problem.question, model.tokenizer)],
                              head_masks=masks_for(model, [heads]), max_new_tokens=new_tokens,
                              stop=template.stop_strings(model.tokenizer))  # fmt: skip
        trace = executor.traces[(row.question_id, row.config)]
        step = first_divergence(list(ours.token_ids), list(trace.token_ids))
        gap = trace.top2_gap(step) if step is not None else None
        near += gap is not None and gap < NEAR_TIE
        print(f"mismatch question={row.question_id} config={row.config} step={step} "
              f"top2_gap={gap} regenerated_equal_local={ours.text == row.completion_l} "
              f"local={row.completion_l[-40:]!r} vllm={row.completion_v[-40:]!r}")  # fmt: skip
    return len(differ), near


def timed_sweep(model, problems, heads, args, executor) -> tuple[float, sl.SweepResult]:
    start = time.perf_counter()
    result = sl.sweep(model, problems, heads, prompt=args.prompt, max_new_tokens=args.new_tokens,
                      batch_size=args.batch_size, progress=False, deterministic=False,
                      executor=executor)  # fmt: skip
    return time.perf_counter() - start, result


def start_server(model, args, folder: Path) -> tuple[VLLMServer | None, float]:
    if args.base_url:
        return None, 0.0
    base = save_base_model(model, folder / "base", dtype=model.dtype)
    server = VLLMServer(
        base, dtype=str(model.dtype).removeprefix("torch."), python=args.python,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len, cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        max_loras=args.max_loras,
    )  # fmt: skip
    start = time.perf_counter()
    server.start()
    return server, time.perf_counter() - start


def main() -> None:
    args = arguments()
    model = sl.load_model(args.model, dtype=args.dtype, device=args.device)
    problems = sl.load_problems(args.dataset, limit=args.questions)
    heads = sl.all_heads(model, layers=args.layers) if args.layers else args.heads
    args.heads = [str(h) for h in heads]
    template = sl.get_template(args.prompt)
    pairs = len(problems) * (len(heads) + 1)
    print(f"platform={platform.processor() or platform.machine()} threads={torch.get_num_threads()}"
          f" model={model.name} dtype={args.dtype} device={args.device} prompt={args.prompt} "
          f"questions={len(problems)} configs={len(heads) + 1} pairs={pairs} "
          f"new_tokens={args.new_tokens}")  # fmt: skip
    local = LocalExecutor()
    if not args.no_warmup:
        timed_sweep(model, problems[:1], heads[:1], args, local)
    local_s, local_result = timed_sweep(model, problems, heads, args, local)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        server, startup_s = start_server(model, args, Path(tmp))
        try:
            url = args.base_url or server.base_url
            executor = VLLMExecutor(base_url=args.base_url, server=server,
                                    adapters_dir=Path(tmp) / "adapters",
                                    concurrency=args.concurrency,
                                    max_loras=args.max_loras)  # fmt: skip
            if not args.no_warmup:
                timed_sweep(model, problems[:1], heads[:1], args, executor)
            before = metrics(VLLMClient(url))
            _, vllm_result = timed_sweep(model, problems, heads, args, executor)
            after = metrics(VLLMClient(url))
        finally:
            if server is not None:
                server.stop()
    vllm_s = vllm_result.meta["vllm"]["wall_s"]
    differ, near = mismatches(model, problems, template, args.new_tokens, local_result.table,
                              vllm_result.table, executor)  # fmt: skip
    spent = {key: after[key] - before[key] for key in METRICS}
    cached = spent["cached_tokens"] / max(1.0, spent["prompt_tokens"])
    print(f"engine_startup_s={startup_s:.1f}")
    print(f"local_s={local_s:.1f} local_pairs_per_s={pairs / local_s:.3f}")
    print(f"vllm_s={vllm_s:.1f} vllm_pairs_per_s={pairs / vllm_s:.3f}")
    print(f"vllm_vs_local={(pairs / vllm_s) / (pairs / local_s):.2f}")
    print(f"token_mismatches={differ}/{pairs} near_ties={near}")
    print(f"engine_profile: steps={spent['steps']:.0f} "
          f"s_per_step={vllm_s / max(1.0, spent['steps']):.3f} "
          f"prefill_s={spent['prefill_s']:.1f} decode_s={spent['decode_s']:.1f} "
          f"queue_s={spent['queue_s']:.1f} (summed over requests) "
          f"prompt_tokens={spent['prompt_tokens']:.0f} cached_share={cached:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
