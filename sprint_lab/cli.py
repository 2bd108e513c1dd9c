"""The ``sprint-lab`` command line, for long runs outside a notebook.

``sprint-lab demo`` is the main job on the embedded model; ``sweep`` / ``report`` run and
summarise head-ablation sweeps; ``train-selector`` and ``compare`` fit SPRINT's selector on a
sweep and score it against best-of-N and random heads on held-out questions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sprint_lab.sweeps.executor import Executor


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from error


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="smollm2-135m (embedded), a .gguf file, a model folder or a hub id",
    )
    parser.add_argument("--dtype", default=None, help="bfloat16 (default) or float32")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")


def _add_data_args(parser: argparse.ArgumentParser, split: str = "test") -> None:
    parser.add_argument("--dataset", default="arith", help="arith, gsm8k, math500 or a .jsonl")
    parser.add_argument("--split", default=split)
    parser.add_argument("--limit", type=int, default=None, help="seeded subset size")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--data-dir", default=None, help="folder with gsm8k/ and math500/ JSONL")


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="fewshot_cot", help="prompt template")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="sprint-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="small sweep on the embedded model + HTML report")
    demo.add_argument("--layers", type=_ints, default=[0, 15])
    demo.add_argument("--limit", type=int, default=20)
    demo.add_argument("--max-new-tokens", type=int, default=48)
    demo.add_argument("--out", default="sprint-lab-out/demo")
    demo.add_argument("--dtype", default=None)

    sweep = sub.add_parser("sweep", help="prune each head of some layers and answer every question")
    _add_model_args(sweep)
    _add_data_args(sweep)
    _add_generation_args(sweep)
    sweep.add_argument("--layers", type=_ints, default=None, help="e.g. 0,5,10 (default: all)")
    sweep.add_argument("--heads", default=None, help="explicit heads, e.g. L0H1,L5H3")
    sweep.add_argument("--out", required=True, help="results folder (Parquet store)")
    sweep.add_argument("--no-resume", action="store_true", help="refuse to continue a store")
    sweep.add_argument("--executor", default="local", choices=["local", "ray"])
    sweep.add_argument("--workers", type=int, default=None, help="Ray workers")
    sweep.add_argument("--address", default=None, help="Ray cluster address")
    sweep.add_argument("--gpus-per-worker", type=float, default=None)
    sweep.add_argument("--threads-per-worker", type=int, default=None, help="torch threads")
    sweep.add_argument("--max-shard-retries", type=int, default=3)

    report = sub.add_parser("report", help="summarise a results folder")
    report.add_argument("results")
    report.add_argument("--html", default=None, help="write a self-contained HTML report")
    report.add_argument("--top", type=int, default=15)

    train = sub.add_parser("train-selector", help="fit the SPRINT selector on a sweep")
    train.add_argument("results", help="a sweep's results folder (training questions)")
    train.add_argument("--out", required=True, help="folder for the trained selector")
    train.add_argument("--encoder", default="minilm")
    train.add_argument("--dim", type=int, default=64)
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--lr", type=float, default=1e-2)
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", default=None)

    compare = sub.add_parser("compare", help="SPRINT vs best-of-N vs random heads (held out)")
    compare.add_argument("--selector", required=True, help="folder written by train-selector")
    _add_model_args(compare)
    _add_data_args(compare)
    _add_generation_args(compare)
    compare.add_argument("--ns", type=_ints, default=[1, 2, 4, 8, 16])
    compare.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    compare.add_argument("--out", required=True, help="folder for answers and the table")
    return parser


def _problems_from_meta(meta: dict, data_dir: str | None):
    from sprint_lab.tasks.problems import load_problems

    if "dataset" not in meta:
        raise SystemExit("the results folder does not record its dataset (run it with sprint-lab)")
    problems = load_problems(
        meta["dataset"], meta.get("split", "test"), data_dir=data_dir or meta.get("data_dir")
    )
    wanted = set(meta.get("question_ids", []))
    return [p for p in problems if p.id in wanted]


def _executor(args: argparse.Namespace) -> Executor:
    """The executor the ``sweep`` flags ask for (the Ray flags build a ``RayExecutor``)."""
    from sprint_lab.sweeps.executor import LocalExecutor
    from sprint_lab.sweeps.ray import RayExecutor

    if args.executor != "ray":
        return LocalExecutor()
    return RayExecutor(
        workers=args.workers,
        address=args.address,
        resources_per_worker={"num_gpus": args.gpus_per_worker} if args.gpus_per_worker else None,
        threads_per_worker=args.threads_per_worker,
        max_shard_retries=args.max_shard_retries,
    )


def _run_sweep(args) -> int:
    from sprint_lab import all_heads, load_model, load_problems, sweep
    from sprint_lab.core.heads import as_heads
    from sprint_lab.viz.report import format_top_heads

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    problems = load_problems(
        args.dataset, args.split, limit=args.limit, seed=args.seed, data_dir=args.data_dir
    )
    heads = as_heads(args.heads.split(",")) if args.heads else all_heads(model, args.layers)
    result = sweep(
        model,
        problems,
        heads,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        out=args.out,
        resume=not args.no_resume,
        executor=_executor(args),
        tags={
            "dataset": args.dataset,
            "split": args.split,
            "limit": args.limit,
            "problem_seed": args.seed,
            "data_dir": args.data_dir,
        },
    )
    print(result)
    print(format_top_heads(result, 10))
    return 0


def _report(args) -> int:
    from sprint_lab.sweeps.result import SweepResult
    from sprint_lab.viz.report import format_top_heads, write_report

    result = SweepResult.load(args.results)
    print(result)
    print(format_top_heads(result, args.top))
    if args.html:
        print(f"report written to {write_report(result, args.html, top=args.top)}")
    return 0


def _demo(args) -> int:
    from sprint_lab import all_heads, load_model, load_problems, sweep
    from sprint_lab.viz.report import format_top_heads, write_report

    start = time.perf_counter()
    model = load_model("smollm2-135m", dtype=args.dtype)
    print(f"loaded {model} in {time.perf_counter() - start:.1f}s")
    problems = load_problems("arith", "test", limit=args.limit, seed=0)
    heads = all_heads(model, args.layers)
    print(
        f"sweeping {len(heads)} heads (layers {args.layers}) + baseline on "
        f"{len(problems)} arith problems, {args.max_new_tokens} new tokens each"
    )
    result = sweep(
        model,
        problems,
        heads,
        max_new_tokens=args.max_new_tokens,
        out=Path(args.out) / "results",
        tags={"dataset": "arith", "split": "test", "limit": args.limit, "problem_seed": 0},
    )
    print(f"\n{result} in {time.perf_counter() - start:.0f}s")
    print(format_top_heads(result, 10))
    report = write_report(result, Path(args.out) / "report.html")
    print(f"\nHTML report: {report}")
    return 0


def _train(args) -> int:
    from sprint_lab.selection.selector import SprintSelector
    from sprint_lab.sweeps.result import SweepResult

    result = SweepResult.load(args.results)
    problems = _problems_from_meta(result.meta, args.data_dir)
    selector = SprintSelector(result.heads, encoder=args.encoder, dim=args.dim, seed=args.seed)
    selector.fit(result, problems, epochs=args.epochs, lr=args.lr, val_fraction=args.val_fraction)
    selector.save(args.out)
    print(selector)
    print(selector.history.tail(3).to_string(index=False))
    print(f"selector saved to {args.out}")
    return 0


def _compare(args) -> int:
    from sprint_lab import load_model, load_problems
    from sprint_lab.selection.selector import SprintSelector
    from sprint_lab.selection.strategies import compare_strategies

    model = load_model(args.model, dtype=args.dtype, device=args.device)
    selector = SprintSelector.load(args.selector)
    problems = load_problems(
        args.dataset, args.split, limit=args.limit, seed=args.seed, data_dir=args.data_dir
    )
    table = compare_strategies(
        model,
        problems,
        selector,
        ns=args.ns,
        seeds=args.seeds,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        out=args.out,
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    table.to_parquet(Path(args.out) / "comparison.parquet", index=False)
    wide = table.pivot_table(index=["metric", "n"], columns="strategy", values="value")
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


COMMANDS = {
    "demo": _demo,
    "sweep": _run_sweep,
    "report": _report,
    "train-selector": _train,
    "compare": _compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sprint-lab`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished batches are kept in the results folder", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"sprint-lab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
