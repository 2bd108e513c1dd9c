"""Throughput of the Ray executor with 1 and 2 workers against the local executor.

Runs the same sweep (embedded model, arithmetic questions x (layer-0 heads + baseline)) three
times and reports (question x configuration) pairs per second: end to end (the Ray runs include
starting the actors, each of which imports torch/transformers and loads the model) and in the
steady state (after the first actor is ready). ``ray.init`` is timed separately: it is paid
once per process. Every run uses the same number of torch threads per process (default 1), so
``ray1`` vs ``local`` is the Ray overhead and ``ray2`` vs ``local`` the scaling from a second
process.

Example:
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --questions 8 --heads 4 \\
        --max-new-tokens 32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def _spin(kind: str, seconds: float, start, out) -> None:
    """Count iterations of a compute-bound (small fp32 matmul, in cache) or memory-bound
    (bf16 matrix x 8 vectors over 256 MB, like one decode step) kernel on one thread."""
    import torch

    torch.set_num_threads(1)
    if kind == "compute":
        a, b = torch.randn(256, 256), torch.randn(256, 256)
        step = lambda: a @ b  # noqa: E731
    else:
        weight = torch.randn(256 * 1024 * 1024 // (576 * 2), 576, dtype=torch.bfloat16)
        x = torch.randn(576, 8, dtype=torch.bfloat16)
        step = lambda: weight @ x  # noqa: E731
    step()
    start.wait()
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        step()
        count += 1
    out.put(count)


def cpu_scaling(kind: str, seconds: float) -> float:
    """Aggregate throughput of 2 concurrent single-thread processes / that of 1 (ideal 2.0)."""
    ctx = mp.get_context("spawn")
    totals = []
    for n in (1, 2):
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_spin, args=(kind, seconds, start, out)) for _ in range(n)]
        for proc in procs:
            proc.start()
        time.sleep(3.0)  # let them import torch and allocate
        start.set()
        totals.append(sum(out.get() for _ in procs))
        for proc in procs:
            proc.join()
    return totals[1] / totals[0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print ``key=value`` lines; return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--questions", type=int, default=8, help="arith questions")
    parser.add_argument("--heads", type=int, default=4, help="layer-0 heads (plus the baseline)")
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="local batch / Ray shard rows")
    parser.add_argument("--prompt", default="fewshot_cot")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument(
        "--calibrate-s", type=float, default=4.0,
        help="seconds per kernel for the 1-vs-2-process hardware ceiling (0: skip)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch

    from sprint_lab import RayExecutor, all_heads, load_model, load_problems, sweep

    torch.set_num_threads(args.threads)
    model = load_model(args.model, dtype=args.dtype)
    problems = load_problems("arith", limit=args.questions)
    heads = all_heads(model, layers=[args.layer])[: args.heads]
    pairs = len(problems) * (len(heads) + 1)
    common = dict(
        prompt=args.prompt, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        progress=False,
    )  # fmt: skip
    print(
        f"sweep: {len(problems)} questions x {len(heads) + 1} configurations = {pairs} pairs, "
        f"{args.max_new_tokens} new tokens, {args.dtype}, prompt={args.prompt}, "
        f"batch_size={args.batch_size}, threads/process={args.threads}"
    )
    numbers: dict[str, float] = {}
    if args.calibrate_s > 0:
        for kind in ("compute", "memory"):
            numbers[f"cpu_scaling_2proc_{kind}"] = cpu_scaling(kind, args.calibrate_s)

    started = time.perf_counter()
    local = sweep(model, problems, heads, **common)
    numbers["local_s"] = time.perf_counter() - started
    numbers["local_pairs_per_s"] = pairs / numbers["local_s"]

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    numbers["ray_init_s"] = time.perf_counter() - started
    try:
        for workers in (1, 2):
            started = time.perf_counter()
            executor = RayExecutor(workers=workers, resources_per_worker={"num_cpus": args.threads})
            result = sweep(model, problems, heads, executor=executor, **common)
            wall = time.perf_counter() - started
            stats = result.meta["ray"]
            key = f"ray{workers}"
            numbers[f"{key}_s"] = wall
            numbers[f"{key}_pairs_per_s"] = pairs / wall
            numbers[f"{key}_startup_s"] = stats["startup_s"]
            numbers[f"{key}_steady_pairs_per_s"] = pairs / max(wall - stats["startup_s"], 1e-9)
            print(
                f"{key}: shards={stats['shards']} prefix_prefills={stats['prefix_prefills']} "
                f"worker_load_s={stats['worker_load_s']} busy_s={stats['busy_s']:.1f} "
                f"wall_after_startup_s={wall - stats['startup_s']:.1f}"
            )
            left, right = local.table.copy(), result.table.copy()
            for frame in (left, right):
                for column in ("completion", "extracted", "finish_reason", "extractor"):
                    frame[column] = frame[column].astype("str")
            numbers[f"{key}_same_table"] = float(left.equals(right))
    finally:
        ray.shutdown()
    if args.calibrate_s > 0:  # again: a drop means something else took a core meanwhile
        numbers["cpu_scaling_2proc_compute_after"] = cpu_scaling("compute", args.calibrate_s)
    for workers in (1, 2):
        key = f"ray{workers}"
        numbers[f"ratio_{key}_vs_local"] = (
            numbers[f"{key}_pairs_per_s"] / numbers["local_pairs_per_s"]
        )
        numbers[f"steady_ratio_{key}_vs_local"] = (
            numbers[f"{key}_steady_pairs_per_s"] / numbers["local_pairs_per_s"]
        )
    for key, value in numbers.items():
        print(f"{key}={value:.3f}")
    return numbers


if __name__ == "__main__":
    main()
