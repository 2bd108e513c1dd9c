"""Peer check of head ablation with lm-evaluation-harness: same completions, same verdicts?

For each head, sprint_lab exports a PEFT LoRA adapter that zeroes it
(``sl.export_head_adapters``); lm-eval 0.4.13 (its own venv, ``bash .ci/lmeval_env.sh``) runs its
``gsm8k_cot`` task, pointed at the local GSM8K test file, on the float32 base model plus that
adapter; sprint_lab generates the same first N questions with its ``fewshot_cot`` template under
``sl.ablate(model, [head])``. Both decode greedily with the same limit (sprint_lab's
``max_new_tokens`` = lm-eval's ``max_gen_toks``, passed as ``--gen_kwargs``) and stop at
gsm8k_cot's ``until`` strings. Prints, per configuration and overall, how many prompts,
completions and strict-match / flexible-extract verdicts agree, and each mismatch.

    python benchmarks/lmeval_check.py [--limit 20] [--heads L5H2,L0H3] [--max-new-tokens 256]
        [--no-baseline] [--attn eager] [--out sprint-lab-out/lmeval_check]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sprint_lab import load_model
from sprint_lab.engines.lmeval import FILTER_MODES, Agreement, peer_check

REPO = Path(__file__).resolve().parents[1]


def default_data_file() -> Path:
    """``$SPRINT_LAB_DATA/gsm8k/test.jsonl``, else ``../shared/data/gsm8k/test.jsonl``."""
    root = os.environ.get("SPRINT_LAB_DATA") or REPO.parent / "shared" / "data"
    return Path(root) / "gsm8k" / "test.jsonl"


def print_agreement(result: Agreement) -> None:
    verdicts = " ".join(f"{name}={result.verdicts[name]}/{result.n}" for name in FILTER_MODES)
    print(
        f"[{result.config}] prompt_agreement={result.prompts}/{result.n} "
        f"lmeval_agreement={result.completions}/{result.n} "
        f"verdict_agreement={result.all_verdicts}/{result.n} ({verdicts})"
    )
    for line in result.mismatches:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--limit", type=int, default=20, help="first N GSM8K test questions")
    parser.add_argument("--heads", default="L5H2,L0H3", help="comma-separated head labels")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="= lm-eval max_gen_toks")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unablated model")
    parser.add_argument("--attn", default="eager", help="lm-eval's attn_implementation")
    parser.add_argument("--data", type=Path, default=default_data_file())
    parser.add_argument("--out", type=Path, default=REPO / "sprint-lab-out" / "lmeval_check")
    parser.add_argument("--venv", default=None, help="lm-eval venv (default .venvs/lmeval)")
    args = parser.parse_args()
    heads = [label.strip() for label in args.heads.split(",") if label.strip()]
    start = time.perf_counter()
    model = load_model("smollm2-135m", dtype="float32")
    results = peer_check(
        model,
        heads,
        args.out,
        args.data,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        baseline=not args.no_baseline,
        venv=args.venv,
        attn_implementation=args.attn or None,
    )
    for result in results:
        print_agreement(result)
    ablated = [result for result in results if result.config != "none"]
    baseline = next((result for result in results if result.config == "none"), None)
    if baseline is not None:
        for result in ablated:
            changed = sum(a != b for a, b in zip(result.texts, baseline.texts, strict=True))
            print(f"[{result.config}] completions changed by the ablation: {changed}/{result.n}")
    total = sum(result.n for result in ablated)
    same_text = sum(result.completions for result in ablated)
    same_verdicts = sum(result.all_verdicts for result in ablated)
    print(
        f"overall (heads {','.join(heads)}): lmeval_agreement={same_text}/{total} "
        f"verdict_agreement={same_verdicts}/{total} "
        f"(max_new_tokens=max_gen_toks={args.max_new_tokens}, attn={args.attn}, float32) "
        f"in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
