"""Benchmark: group-knockout screening against single-head references, at a quarter of the cost.

On the embedded SmolLM2-135M (float32) and arithmetic word problems, for the heads of
``--layers``:

(a) the single-head reference: the teacher-forced log-prob proxy (one evaluation per head per
    question, plus the baseline) and, with ``--with-sweep``, a real single-head generation
    sweep whose accuracy deltas then become the reference;
(b) :func:`sprint_lab.importance.screen.screen` with ``n_masks`` chosen so that its evaluations
    ((n_masks + 1) x questions) are at most ``--fraction`` (default a quarter) of the reference's
    ((heads + 1) x questions).

It prints ``spearman_vs_sweep=`` (Spearman between the screen's effects and the reference
deltas, head by head), ``top10_overlap=`` (shared heads among the 10 largest ``|value|``),
``evaluations_ratio=`` (screen / reference evaluations), and one table comparing the screen
and the two existing proxies (``gradient`` compared with ``-delta``, as in
:func:`sprint_lab.importance.correlate.correlate`) with the reference. Measured values of one
run; nothing is asserted.

Example:
    OMP_NUM_THREADS=1 python benchmarks/bench_screen.py --n-problems 4 --layers 0
    python benchmarks/bench_screen.py --n-problems 32 --layers 0 15 29 --with-sweep
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

import sprint_lab
from sprint_lab.importance.correlate import rank_correlation
from sprint_lab.importance.proxies import head_importance
from sprint_lab.importance.screen import screen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model to load (embedded)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n-problems", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="problem subset and screen seed")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 15, 29])
    parser.add_argument("--prompt", default="fewshot_cot")
    parser.add_argument("--metric", default="logprob", choices=["logprob", "accuracy"])
    parser.add_argument("--fraction", type=float, default=0.25, help="screen / reference cost")
    parser.add_argument("--n-masks", type=int, default=None, help="override the cost rule")
    parser.add_argument("--group-size", type=int, default=None)
    parser.add_argument(
        "--mask-blocks", type=int, default=1, help="question blocks with masks of their own"
    )
    parser.add_argument("--n-bootstrap", type=int, default=50)
    parser.add_argument("--with-sweep", action="store_true", help="reference = generation sweep")
    parser.add_argument(
        "--store", default=None, help="folder for the reference sweep's store (resumable)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch intra-op threads (default: $OMP_NUM_THREADS or 1)",
    )
    return parser.parse_args(argv)


def top_overlap(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Fraction of the ``k`` largest ``|x|`` that are among the ``k`` largest ``|y|``."""
    top_x = set(np.argsort(-np.abs(x), kind="stable")[:k].tolist())
    top_y = set(np.argsort(-np.abs(y), kind="stable")[:k].tolist())
    return len(top_x & top_y) / k


def compare(
    table: pd.DataFrame, reference: str, evaluations: dict[str, int], k: int
) -> pd.DataFrame:
    """One row per method: Spearman (signed and |.|) and top-k overlap with ``reference``."""
    ref = table[reference].to_numpy(float)
    methods = [
        ("screen", "effect", ref),
        ("logprob", "logprob", ref),
        ("gradient", "gradient", -ref),
    ]
    rows = []
    for name, column, against in methods:
        values = table[column].to_numpy(float)
        rows.append(
            {
                "method": name,
                "against": "-delta" if name == "gradient" else "delta",
                "spearman": rank_correlation(values, against)["spearman"],
                "spearman_abs": rank_correlation(np.abs(values), np.abs(ref))["spearman"],
                f"top{k}_overlap": top_overlap(values, ref, k),
                "evaluations": evaluations[name],
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = sprint_lab.load_model(args.model, dtype=args.dtype)
    problems = sprint_lab.load_problems("arith", limit=args.n_problems, seed=args.seed)
    heads = sprint_lab.all_heads(model, layers=args.layers)
    n_q, n_heads = len(problems), len(heads)
    reference_evaluations = (n_heads + 1) * n_q
    n_masks = args.n_masks or max(2, int(args.fraction * (n_heads + 1)) - 1)
    print(
        f"{n_q} arith problems x {n_heads} heads (layers {args.layers}); prompt {args.prompt}; "
        f"{args.dtype}; {args.threads} thread(s); screen {args.metric} with {n_masks} masks",
        flush=True,
    )

    imp = head_importance(model, problems, prompt=args.prompt, layers=args.layers, progress=False)
    print(f"proxies: {imp.meta['seconds']}", flush=True)
    table = imp.to_long().pivot_table(index=["layer", "head", "config"], columns="proxy",
                                      values="score").reset_index()  # fmt: skip
    reference = "logprob"
    if args.with_sweep:
        started = time.perf_counter()
        result = sprint_lab.sweep(
            model,
            problems,
            heads,
            prompt=args.prompt,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            out=args.store,
            progress=False,
        )
        print(f"sweep: {time.perf_counter() - started:.1f}s", flush=True)
        deltas = result.deltas()[["layer", "head", "delta"]]
        table = table.merge(deltas, on=["layer", "head"], how="left")
        reference = "delta"

    started = time.perf_counter()
    screened = screen(
        model,
        problems,
        heads,
        n_masks=n_masks,
        group_size=args.group_size,
        metric=args.metric,
        seed=args.seed,
        n_bootstrap=args.n_bootstrap,
        mask_blocks=args.mask_blocks,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - started
    effects = screened.effects[["layer", "head", "effect", "stability", "rank"]]
    table = table.merge(effects, on=["layer", "head"], how="left")
    meta = screened.meta
    print(
        f"screen: {seconds:.1f}s, group_size={meta['group_size']}, "
        f"mask_blocks={meta['mask_blocks']}, alpha={meta['alpha']:.3g}, "
        f"non-zero effects {int((table['effect'] != 0).sum())}/{n_heads}",
        flush=True,
    )

    k = min(args.top_k, max(1, n_heads // 2))  # top-k of all heads would be trivially 1
    evaluations = {"screen": meta["evaluations"], "logprob": reference_evaluations,
                   "gradient": n_q}  # fmt: skip
    comparison = compare(table, reference, evaluations, k)
    screen_row = comparison.iloc[0]
    print(f"reference={'sweep accuracy delta' if args.with_sweep else 'single-head logprob'}")
    print(f"spearman_vs_sweep={screen_row['spearman']:.3f}")
    print(f"top{k}_overlap={screen_row[f'top{k}_overlap']:.2f}")
    print(f"evaluations_ratio={meta['evaluations'] / reference_evaluations:.3f} "
          f"({meta['evaluations']} / {reference_evaluations})")  # fmt: skip
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(comparison.to_string(index=False))
    return comparison


if __name__ == "__main__":
    main()
