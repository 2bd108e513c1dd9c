"""Whole-model sweeps: today's decode-every-answer sweep against verify-then-decode.

The same sweep (every head of ``--layers``, all 30 layers by default, + the baseline + one placebo,
on ``--questions`` arith questions, ``--new-tokens`` tokens, greedy) runs twice in one process:
``strategy="decode"`` (every answer decoded from its prompt) and ``strategy="verify"`` (each
pruned row teacher-forces the baseline's answer and decodes only from where it departs), both
batch-invariant (the sweep default). Printed:

* ``pairs_per_s`` of each, ``speedup_vs_decode_sweep=`` (verify over decode);
* ``token_mismatches=`` (pairs whose completion text or token count differ; the goal is 0);
* the verify path's phase split (prefill / verify / decode seconds) and how much of the drafts
  was accepted;
* ``achieved_gflops`` (the useful work of the sweep, 2 x linear parameters x tokens a plain sweep
  would run, over each path's time) against this machine's measured matmul peak in the same
  dtype: ``fraction_of_peak=``;
* ``full_sweep_minutes=``: the extrapolated time of 270 heads x 100 questions (+ baseline) at the
  verify path's pairs/s.

    python benchmarks/bench_full_sweep.py [--layers 0 15 29] [--questions 8] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import platform
import time

import pandas as pd
import torch

import sprint_lab as sl
from sprint_lab.sweeps.batch import BatchRunner, plan


def matmul_peak_gflops(dtype, size=1536, repeats=8):
    """Best GFLOP/s of a square matmul in ``dtype`` on this machine."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def linear_params(model):
    """Parameters of the model's linear layers (the projections, MLP and LM head)."""
    return sum(m.weight.numel() for m in model.hf_model.modules() if isinstance(m, torch.nn.Linear))


def run(model, problems, heads, args, strategy):
    """One sweep through the local runner (the ``LocalExecutor`` loop), keeping its timings."""
    runner = BatchRunner(
        model, problems, max_new_tokens=args.new_tokens, deterministic=True, strategy=strategy
    )
    items = plan(problems, heads, placebos=1)
    start = time.perf_counter()
    frames = [
        runner.run(items[i : i + args.batch_size]) for i in range(0, len(items), args.batch_size)
    ]
    seconds = time.perf_counter() - start
    table = {
        (row.question_id, row.config): (
            row.completion,
            int(row.n_tokens),
            None if pd.isna(row.diverged_at) else int(row.diverged_at),
        )
        for frame in frames
        for row in frame.itertuples()
    }
    return table, seconds, runner


def useful_tokens(model, problems, table, n_configs):
    """Tokens a plain sweep runs: each configuration's few-shot prefix once, bodies, answers."""
    template = sl.get_template("fewshot_cot")
    prefix, _ = template.parts(problems[0].question, model.tokenizer)

    def count(text):
        return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])

    prefix_tokens = count(prefix)
    bodies = {
        p.id: count("".join(template.parts(p.question, model.tokenizer))) - prefix_tokens
        for p in problems
    }
    answer = sum(n for _, n, _ in table.values())
    body = sum(bodies[q] for q, _ in table)
    return prefix_tokens * n_configs + body + answer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="default: all")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    model = sl.load_model("smollm2-135m", dtype=args.dtype)
    layers = args.layers if args.layers is not None else list(range(model.n_layers))
    heads = sl.all_heads(model, layers=layers)
    problems = sl.load_problems("arith", limit=args.questions, seed=0)
    print(
        f"# {platform.machine()} torch {torch.__version__} threads={torch.get_num_threads()} "
        f"dtype={args.dtype} heads={len(heads)} questions={len(problems)} "
        f"new_tokens={args.new_tokens} batch_size={args.batch_size}",
        flush=True,
    )
    decoded, decode_s, _ = run(model, problems, heads, args, "decode")
    print(f"decode  pairs={len(decoded)} seconds={decode_s:.1f}", flush=True)
    verified, verify_s, runner = run(model, problems, heads, args, "verify")
    print(f"verify  pairs={len(verified)} seconds={verify_s:.1f}", flush=True)
    mismatched = sum(decoded[key][:2] != value[:2] for key, value in verified.items())
    diverged = sum(decoded[key][2] != value[2] for key, value in verified.items())
    timings = runner.timings
    accepted = timings.get("accepted_tokens", 0.0) / max(timings.get("draft_tokens", 1.0), 1.0)
    pairs = len(verified)
    work = 2 * linear_params(model) * useful_tokens(model, problems, decoded, 2 + len(heads))
    peak = matmul_peak_gflops(getattr(torch, args.dtype))
    achieved = {name: work / s / 1e9 for name, s in (("decode", decode_s), ("verify", verify_s))}
    identical = sum(value[2] is None for value in verified.values())
    print(
        f"phase_split prefill_s={timings.get('prefill_s', 0):.1f} "
        f"verify_s={timings.get('verify_s', 0):.1f} decode_s={timings.get('decode_s', 0):.1f} "
        f"(pruned rows only; baseline rows decode plainly) draft_accepted={accepted:.2f} "
        f"identical_answers={identical}/{pairs}"
    )
    print(f"decode_pairs_per_s={pairs / decode_s:.2f} verify_pairs_per_s={pairs / verify_s:.2f}")
    print(f"speedup_vs_decode_sweep={decode_s / verify_s:.2f}")
    print(f"token_mismatches={mismatched} diverged_at_mismatches={diverged}")
    print(
        f"peak_gflops={peak:.1f} achieved_gflops_decode={achieved['decode']:.1f} "
        f"achieved_gflops_verify={achieved['verify']:.1f}"
    )
    print(f"fraction_of_peak={achieved['verify'] / peak:.3f}")
    print(f"full_sweep_minutes={271 * 100 / (pairs / verify_s) / 60:.0f}")


if __name__ == "__main__":
    main()
