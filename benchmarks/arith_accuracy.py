"""Few-shot accuracy of the embedded model on the embedded arith problems, per level.

The arith generator is tuned so that SmolLM2-135M-Instruct solves some but not all easy
problems (20-80% at levels 1-2) and fewer as the level rises.

    python benchmarks/arith_accuracy.py [--per-level 10] [--new-tokens 96] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

from sprint_lab import generate_arith, get_task, get_template, grade, load_model
from sprint_lab.generation.generator import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-level", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model("smollm2-135m", dtype=args.dtype)
    task = get_task("arith")
    template = get_template(task.prompt)
    problems = []
    for level in range(1, 6):
        problems += generate_arith(args.per_level, seed=args.seed, levels=(level,))
    completions = generate(
        model,
        [template.parts(p.question, model.tokenizer) for p in problems],
        max_new_tokens=args.new_tokens,
        stop=template.stop_strings(model.tokenizer),
        batch_size=25,
    )
    correct = [
        grade(c.text, p, mode=task.grade_mode).correct
        for p, c in zip(problems, completions, strict=True)
    ]
    print(f"level  correct  n  accuracy   ({template.name}, greedy, {args.dtype})")
    for level in range(1, 6):
        rows = [ok for p, ok in zip(problems, correct, strict=True) if p.level == level]
        print(f"{level:>5}  {sum(rows):>7}  {len(rows)}  {sum(rows) / len(rows):.2f}")
    total = sum(correct)
    print(f"all    {total:>7}  {len(problems)}  {total / len(problems):.2f}")


if __name__ == "__main__":
    main()
