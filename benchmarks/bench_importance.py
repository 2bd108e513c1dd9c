"""Benchmark: cheap head-importance proxies against a real generation sweep.

Runs a small single-head pruning sweep (greedy generation, graded) on the embedded
SmolLM2-135M, then Michel et al.'s gradient importance and the teacher-forced gold-answer
log-prob proxy on the same problems and heads, and prints the time of each and the
Spearman/Pearson correlation of each proxy with the sweep's accuracy deltas.

Example:
    OMP_NUM_THREADS=1 python benchmarks/bench_importance.py --n-problems 16 --layers 0 15
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

import sprint_lab
from sprint_lab.importance.correlate import correlate
from sprint_lab.importance.proxies import head_importance


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model to load (embedded)")
    parser.add_argument("--dataset", default="arith", help="load_problems name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n-problems", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="problem subset seed")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 15])
    parser.add_argument("--prompt", default="fewshot_cot")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--sweep-dtype", default="bfloat16")
    parser.add_argument(
        "--proxy-dtype",
        default="float32",
        help="dtype of the proxies (bfloat16 is faster but adds ~0.03 nats of noise to logprob)",
    )
    parser.add_argument("--sweep-batch-size", type=int, default=32)
    parser.add_argument("--proxy-batch-size", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch intra-op threads (default: $OMP_NUM_THREADS or 1)",
    )
    parser.add_argument("--csv", default=None, help="write per-head proxies + deltas here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    problems = sprint_lab.load_problems(args.dataset, args.split, limit=args.n_problems,
                                        seed=args.seed)  # fmt: skip
    sweep_model = sprint_lab.load_model(args.model, dtype=args.sweep_dtype)
    if args.proxy_dtype == args.sweep_dtype:
        proxy_model = sweep_model
    else:
        proxy_model = sprint_lab.load_model(args.model, dtype=args.proxy_dtype)
    heads = sprint_lab.all_heads(sweep_model, layers=args.layers)
    print(
        f"{len(problems)} {args.dataset} problems x {len(heads)} heads (layers {args.layers}) "
        f"+ baseline; prompt {args.prompt}; sweep {args.sweep_dtype}, "
        f"proxies {args.proxy_dtype}; {args.threads} thread(s)",
        flush=True,
    )

    started = time.perf_counter()
    result = sprint_lab.sweep(
        sweep_model,
        problems,
        heads,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.sweep_batch_size,
        progress=True,
    )
    sweep_s = time.perf_counter() - started
    deltas = result.deltas()

    imp = head_importance(
        proxy_model,
        problems,
        prompt=args.prompt,
        layers=args.layers,
        batch_size=args.proxy_batch_size,
        progress=True,
    )
    seconds = imp.meta["seconds"]
    corr = correlate(imp, deltas)

    base = deltas["baseline_accuracy"].iloc[0] if len(deltas) else float("nan")
    print(f"\nbaseline accuracy {base:.3f}; deltas range {deltas['delta'].min():+.3f} .. "
          f"{deltas['delta'].max():+.3f}; {(deltas['delta'] != 0).sum()} of {len(deltas)} "
          "heads change accuracy")  # fmt: skip
    print("\ntime (s)")
    print(f"  {f'sweep ({args.max_new_tokens} new tokens)':28s}{sweep_s:8.1f}")
    print(f"  {'gradient proxy':28s}{seconds['gradient']:8.1f}")
    print(f"  {'logprob proxy':28s}{seconds['logprob']:8.1f}")
    with pd.option_context("display.width", 120, "display.precision", 3):
        print("\ncorrelation with the sweep's accuracy deltas (positive = proxy agrees)")
        print(corr.to_string(index=False))
        table = imp.to_long().pivot_table(index=["layer", "head"], columns="proxy", values="score")
        table = table.join(deltas.set_index(["layer", "head"])[["delta", "q_value"]])
        print("\nper head")
        print(table.to_string())
    if args.csv:
        table.to_csv(args.csv)
    return corr


if __name__ == "__main__":
    main()
