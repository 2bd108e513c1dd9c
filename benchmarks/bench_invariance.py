"""Batch invariance: do a (question, configuration) pair's tokens depend on the batch it lands in?

For each precision, the same sweep (every head of ``--layers`` + the baseline + one placebo, on
``--questions`` arith questions, greedy, ``--new-tokens`` tokens) runs several ways, with the
default (``deterministic=True``) and today's fast path (``deterministic=False``):

* ``sweep(batch_size=32)``: mixed batches (the reference);
* ``sweep(batch_size=1)`` on the first ``--bs1-questions`` questions (batch size 1 is slow);
* ``sweep(batch_size=7)``: other batch boundaries, rows leaving at other times;
* single-configuration batches: one ``generate`` per configuration over all questions;
* a 2-worker Ray sweep (``--no-ray`` skips it).

A pair counts as a mismatch when its completion text or token count differs from the
reference's. Printed per precision and mode, then ``token_mismatches_default=N`` (the sum over
every comparison in the default mode; the goal is 0) and ``invariant_speed_ratio=`` (pairs per
second of the mixed sweep, deterministic path over the fast path, in the first precision; then
per precision).

    python benchmarks/bench_invariance.py [--layers 0 14 29] [--questions 24] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

import sprint_lab as sl
from sprint_lab.core.gate import mask_for


def answers(table):
    """``{(question_id, config): (completion, n_tokens)}`` of a sweep table."""
    return {
        (row.question_id, row.config): (row.completion, int(row.n_tokens))
        for row in table.itertuples()
    }


def mismatches(reference, other):
    """Pairs of ``other`` whose answer differs from ``reference``'s."""
    return sum(reference[key] != value for key, value in other.items())


def single_config(model, problems, configs, new_tokens, deterministic):
    """One ``generate`` per configuration, all questions in one batch."""
    template = sl.get_template("fewshot_cot")
    parts = [template.parts(p.question, model.tokenizer) for p in problems]
    stop = template.stop_strings(model.tokenizer)
    out = {}
    for config in configs:
        heads = list(sl.parse_config(config))
        completions = sl.generate(
            model,
            parts,
            head_masks=mask_for(model, heads),
            max_new_tokens=new_tokens,
            stop=stop,
            batch_size=32,
            deterministic=deterministic,
        )
        for problem, completion in zip(problems, completions, strict=True):
            out[(problem.id, config)] = (completion.text, completion.n_tokens)
    return out


def run_sweep(model, problems, heads, new_tokens, deterministic, batch_size, executor="local"):
    start = time.perf_counter()
    result = sl.sweep(
        model,
        problems,
        heads,
        max_new_tokens=new_tokens,
        batch_size=batch_size,
        progress=False,
        placebos=1,
        deterministic=deterministic,
        strategy="decode",  # every answer decoded from its prompt (bench_full_sweep.py: verify)
        executor=executor,
    )
    return answers(result.table), time.perf_counter() - start


def one_precision(dtype, args):
    model = sl.load_model("smollm2-135m", dtype=dtype)
    problems = sl.load_problems("arith", limit=args.questions, seed=0)
    heads = [h for layer in args.layers for h in sl.all_heads(model) if h.layer == layer]
    results = {}
    for deterministic in (True, False):
        mode = "deterministic" if deterministic else "fast"
        reference, seconds = run_sweep(model, problems, heads, args.new_tokens, deterministic, 32)
        configs = sorted({config for _, config in reference})
        counts = {}
        if args.speed_only:
            print(f"{dtype:9s} {mode:13s} pairs={len(reference)} "
                  f"pairs_per_s={len(reference) / seconds:.2f}", flush=True)  # fmt: skip
            results[mode] = (counts, len(reference) / seconds, 0)
            continue
        small, _ = run_sweep(
            model, problems[: args.bs1_questions], heads, args.new_tokens, deterministic, 1
        )
        counts["bs1_vs_bs32"] = mismatches(reference, small)
        seven, _ = run_sweep(model, problems, heads, args.new_tokens, deterministic, 7)
        counts["bs7_vs_bs32"] = mismatches(reference, seven)
        single = single_config(model, problems, configs, args.new_tokens, deterministic)
        counts["single_vs_mixed"] = mismatches(reference, single)
        if args.ray:
            ray_answers, _ = run_sweep(
                model,
                problems,
                heads,
                args.new_tokens,
                deterministic,
                32,
                executor=sl.RayExecutor(workers=2),
            )
            counts["ray2_vs_local"] = mismatches(reference, ray_answers)
        pairs = len(reference)
        placebo = sum(
            reference[(q, c)] != reference[(q, "none")] for q, c in reference if sl.is_placebo(c)
        )
        print(
            f"{dtype:9s} {mode:13s} pairs={pairs} pairs_per_s={pairs / seconds:.2f} "
            + " ".join(f"{k}={v}" for k, v in counts.items())
            + f" placebo_differs={placebo}",
            flush=True,
        )
        results[mode] = (counts, pairs / seconds, placebo)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 14, 29])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--bs1-questions", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--no-ray", dest="ray", action="store_false")
    parser.add_argument(
        "--speed-only", action="store_true", help="only the two bs32 sweeps (no comparisons)"
    )
    args = parser.parse_args()
    print(
        f"# {platform.machine()} torch {torch.__version__} threads={torch.get_num_threads()} "
        f"layers={args.layers} questions={args.questions} bs1_questions={args.bs1_questions} "
        f"new_tokens={args.new_tokens}",
        flush=True,
    )
    with tempfile.TemporaryDirectory():
        per_dtype = {dtype: one_precision(dtype, args) for dtype in args.dtypes}
    default = sum(
        sum(r["deterministic"][0].values()) + r["deterministic"][2] for r in per_dtype.values()
    )
    fast = sum(sum(r["fast"][0].values()) + r["fast"][2] for r in per_dtype.values())
    if not args.speed_only:
        print(f"token_mismatches_default={default}")
        print(f"token_mismatches_fast_path={fast}")
    ratios = {dtype: r["deterministic"][1] / r["fast"][1] for dtype, r in per_dtype.items()}
    print(f"invariant_speed_ratio={ratios[args.dtypes[0]]:.2f}")
    for dtype, ratio in ratios.items():
        print(f"invariant_speed_ratio_{dtype}={ratio:.2f}")


if __name__ == "__main__":
    main()
