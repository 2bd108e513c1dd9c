"""Cost of the head gate: forward time with a per-row mask / forward time with no hooks.

Eight prompts of about 150 tokens through the embedded model; each row ablates a different
head (in eight different layers, so eight hook points fire). Prints the median of several runs.

    python benchmarks/bench_gate.py [--dtype bfloat16] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sprint_lab import Head, head_mask, load_model, mask_for


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=150)
    args = parser.parse_args()

    model = load_model("smollm2-135m", dtype=args.dtype)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.tokenizer.vocab_size, (8, args.tokens), generator=generator)
    heads = [Head(layer, layer % model.n_heads) for layer in range(0, 8 * 3, 3)]
    masks = torch.stack([mask_for(model, [head]) for head in heads])

    def plain():
        with torch.inference_mode():
            model.hf_model(input_ids=ids)

    def gated():
        with torch.inference_mode(), head_mask(model, masks):
            model.hf_model(input_ids=ids)

    # interleave to spread background noise evenly across the two measurements
    plain_times, gated_times = [], []
    for _ in range(3):
        plain_times.append(_median_time(plain, args.repeats))
        gated_times.append(_median_time(gated, args.repeats))
    t_plain, t_gated = statistics.median(plain_times), statistics.median(gated_times)
    print(f"machine={platform.machine()} threads={torch.get_num_threads()} dtype={args.dtype}")
    print(f"no_hooks_s={t_plain:.4f} per_row_mask_s={t_gated:.4f}")
    print(f"gate_overhead_ratio={t_gated / t_plain:.3f}")


if __name__ == "__main__":
    main()
