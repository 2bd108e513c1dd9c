"""bfloat16 vs float32 on the same sweep: speed, and how often greedy answers and verdicts change.

The default precision of ``load_model`` is chosen from these figures.

    python benchmarks/bench_dtype.py [--layers 0] [--questions 16] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import time

from sprint_lab import all_heads, load_model, load_problems, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="0")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    problems = load_problems("arith", limit=args.questions, seed=0)
    layers = [int(x) for x in args.layers.split(",")]
    tables, seconds = {}, {}
    for dtype in ("float32", "bfloat16"):
        model = load_model("smollm2-135m", dtype=dtype)
        heads = all_heads(model, layers)
        sweep(model, problems[:2], heads[:1], max_new_tokens=4, progress=False)  # warm-up
        start = time.perf_counter()
        result = sweep(model, problems, heads, max_new_tokens=args.new_tokens, progress=False)
        seconds[dtype] = time.perf_counter() - start
        tables[dtype] = result.table.set_index(["question_id", "config"])
    a, b = tables["float32"], tables["bfloat16"]
    n = len(a)
    completions = (a["completion"] != b.loc[a.index, "completion"]).sum()
    verdicts = (a["correct"] != b.loc[a.index, "correct"]).sum()
    print(f"pairs={n} float32_s={seconds['float32']:.1f} bfloat16_s={seconds['bfloat16']:.1f}")
    print(f"speedup_bf16_vs_fp32={seconds['float32'] / seconds['bfloat16']:.2f}")
    print(f"completions_changed={completions}/{n} ({completions / n:.1%})")
    print(f"verdicts_changed={verdicts}/{n} ({verdicts / n:.1%})")
    print(f"accuracy float32={a['correct'].mean():.3f} bfloat16={b['correct'].mean():.3f}")


if __name__ == "__main__":
    main()
