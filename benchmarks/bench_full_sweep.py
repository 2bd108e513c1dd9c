"""Whole-model sweeps: today's decode-every-answer sweep against verify-then-decode and
continuous batching.

The same sweep (every head of ``--layers``, all 30 layers by default, + the baseline + one placebo,
on ``--questions`` arith questions, ``--new-tokens`` tokens, greedy, batch-invariant as the sweep
default) runs once per arm in one process:

* ``decode``: every answer decoded from its prompt, one sweep batch per generation call (today's
  sweep, the reference);
* ``verify``: each pruned row teacher-forces the baseline's answer and decodes only from where it
  departs;
* ``*_continuous``: ``--window`` sweep batches per call, ``--batch-size`` rows decoding at once,
  finished rows' slots refilled from the waiting ones.

Printed per arm: ``pairs_per_s``, ``speedup`` over ``decode``, ``token_mismatches`` against it
(pairs whose completion text or token count differ; the goal is 0), the verify phase split
(prefill / verify / decode seconds) and the accepted share of the drafts; then for the fastest
arm ``speedup_vs_decode_sweep=``, ``fraction_of_peak=`` (the useful work of the sweep, 2 x linear
parameters x tokens a plain sweep would run, over its time, against this machine's measured
matmul peak in the same dtype) and ``full_sweep_minutes=`` (270 heads x 100 questions + baseline
extrapolated at its pairs/s); ``token_mismatches=`` sums every arm's.

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


ARMS = {
    "decode": ("decode", 1),
    "decode_continuous": ("decode", None),
    "verify": ("verify", 1),
    "verify_continuous": ("verify", None),
}
"""Benchmark arm -> (strategy, sweep batches per generation call; ``None``: ``--window``)."""


def run(model, problems, heads, args, arm):
    """One sweep through the local runner (the ``LocalExecutor`` loop), keeping its timings.

    An arm with a window hands the runner ``window`` sweep batches per call, decoding
    ``batch_size`` rows at once and refilling finished rows' slots (continuous batching).
    """
    strategy, window = ARMS[arm]
    window = window or args.window
    runner = BatchRunner(
        model, problems, max_new_tokens=args.new_tokens, deterministic=True, strategy=strategy,
        slots=args.batch_size,
    )  # fmt: skip
    items = plan(problems, heads, placebos=1)
    start = time.perf_counter()
    step = args.batch_size * window
    frames = [runner.run(items[i : i + step]) for i in range(0, len(items), step)]
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
    parser.add_argument(
        "--window", type=int, default=4, help="sweep batches per call in the continuous arms"
    )
    parser.add_argument(
        "--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
        help="what to run; the first is the reference (today's sweep: decode)",
    )  # fmt: skip
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
    results = {}
    for arm in args.arms:
        table, seconds, runner = run(model, problems, heads, args, arm)
        results[arm] = (table, seconds, runner)
        print(f"{arm:<18} pairs={len(table)} seconds={seconds:.1f}", flush=True)
    reference, decode_s, _ = results[args.arms[0]]
    pairs = len(reference)
    work = 2 * linear_params(model) * useful_tokens(model, problems, reference, 2 + len(heads))
    peak = matmul_peak_gflops(getattr(torch, args.dtype))
    for arm, (table, seconds, runner) in results.items():
        mismatched = sum(reference[key][:2] != value[:2] for key, value in table.items())
        diverged = sum(reference[key][2] != value[2] for key, value in table.items())
        timings = runner.timings
        drafts = max(timings.get("draft_tokens", 1.0), 1.0)
        identical = sum(value[2] is None for value in table.values())
        print(
            f"{arm}: pairs_per_s={pairs / seconds:.2f} speedup={decode_s / seconds:.2f} "
            f"token_mismatches={mismatched} diverged_at_mismatches={diverged} "
            f"achieved_gflops={work / seconds / 1e9:.1f} identical_answers={identical}/{pairs}"
        )
        if timings:
            print(
                f"  phase_split prefill_s={timings.get('prefill_s', 0):.1f} "
                f"verify_s={timings.get('verify_s', 0):.1f} "
                f"decode_s={timings.get('decode_s', 0):.1f} (pruned rows only) "
                f"draft_accepted={timings.get('accepted_tokens', 0.0) / drafts:.2f}"
            )
    best = min(results, key=lambda arm: results[arm][1])
    best_s = results[best][1]
    mismatches = sum(
        sum(reference[key][:2] != value[:2] for key, value in results[arm][0].items())
        for arm in results
    )
    print(f"fastest={best}")
    print(f"speedup_vs_decode_sweep={decode_s / best_s:.2f}")
    print(f"token_mismatches={mismatches}")
    print(f"peak_gflops={peak:.1f} achieved_gflops={work / best_s / 1e9:.1f}")
    print(f"fraction_of_peak={work / best_s / 1e9 / peak:.3f}")
    print(f"full_sweep_minutes={271 * 100 / (pairs / best_s) / 60:.0f}")


if __name__ == "__main__":
    main()
