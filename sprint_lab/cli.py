"""The ``sprint-lab`` command line, for long runs outside a notebook.

``sprint-lab demo`` is the main job on the embedded model; ``sweep`` / ``report`` run and
summarise head-ablation sweeps; ``repair`` mends a results folder after a crash;
``train-selector`` and ``compare`` fit SPRINT's selector on a sweep and score it against
best-of-N and random heads on held-out questions.

Every anticipated failure ends the command with one line on stderr,
``sprint-lab <command>: error: <message>``, and an exit code that says what to change:
2 for the arguments or the data, 3 for the machine (missing data, device or optional extra, a
full disk, no write permission), 130 for an interrupt (finished batches are kept). The ordered
table :data:`ERROR_RULES` maps exceptions to codes; the first rule that matches wins. Anything
else is a bug: it keeps Python's traceback and exit code 1. ``--debug`` (before or after the
command) prints the traceback for anticipated errors too. ``--help`` answers before torch is
imported: heavy imports live inside the command functions.

Example:
    >>> exit_code_for(InputError("temperature must be >= 0, got -1"))
    2
    >>> exit_code_for(OSError(errno.ENOSPC, "No space left on device", "out/part-1.parquet"))
    3
    >>> print(describe_error(OSError(errno.ENOSPC, "No space left", "out/part-1.parquet")))
    disk full writing out/part-1.parquet: free some space or pass --out on another disk, ...
    >>> exit_code_for(KeyboardInterrupt()), exit_code_for(ZeroDivisionError()) is None
    (130, True)
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sprint_lab.core.errors import InputError, SprintLabError

if TYPE_CHECKING:
    from sprint_lab.sweeps.executor import Executor


# -- exceptions -> one line and an exit code -----------------------------------------------------

#: Exit codes of ``sprint-lab``.
EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_SETUP, EXIT_INTERRUPT = 0, 1, 2, 3, 130

#: Module an ``ImportError`` names -> the optional extra that installs it.
EXTRAS = {
    "ray": "ray",
    "plotly": "viz",
    "kaleido": "viz",
    "ipywidgets": "notebook",
    "anywidget": "notebook",
}


@dataclass(frozen=True)
class ErrorRule:
    """One row of :data:`ERROR_RULES`.

    Attributes:
        kind: the exception class the rule is for.
        exit_code: what the command exits with (``None``: the error's own ``exit_code``).
        describe: the one-line message, from the error and the command's arguments.
        errnos: when set, the rule only matches an ``OSError`` with one of these ``errno``s.
    """

    kind: type[BaseException]
    exit_code: int | None
    describe: Callable[[BaseException, argparse.Namespace], str]
    errnos: frozenset[int] = frozenset()

    def matches(self, error: BaseException) -> bool:
        """Whether this rule is for ``error``."""
        if not isinstance(error, self.kind):
            return False
        return not self.errnos or getattr(error, "errno", None) in self.errnos


def _target(error: BaseException, args: argparse.Namespace) -> str:
    """The file an ``OSError`` is about (else the command's ``--out`` folder)."""
    filename = getattr(error, "filename", None)
    if filename is None:
        filename = getattr(args, "out", None)
    return str(filename) if filename is not None else "(file not named)"


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _plain(error: BaseException, args: argparse.Namespace) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.strerror}: {error.filename}"
    return str(error) or type(error).__name__


def _interrupted(error: BaseException, args: argparse.Namespace) -> str:
    out = getattr(args, "out", None)
    where = f" in {out}" if out else ""
    return f"interrupted: finished batches are kept{where}; run the same command again to resume"


def _disk_full(error: BaseException, args: argparse.Namespace) -> str:
    return (
        f"disk full writing {_target(error, args)}: free some space or pass --out on another "
        "disk, then run the same command to resume"
    )


def _quota(error: BaseException, args: argparse.Namespace) -> str:
    return (
        f"disk quota exceeded writing {_target(error, args)}: free some space or pass --out "
        "elsewhere, then run the same command to resume"
    )


def _no_permission(error: BaseException, args: argparse.Namespace) -> str:
    return (
        f"cannot write {_target(error, args)} ({_os_reason(error)}): choose a folder you can "
        "write to, or fix its permissions"
    )


def _is_folder(error: BaseException, args: argparse.Namespace) -> str:
    return f"{_target(error, args)} is a folder; give a file path inside it instead"


def _not_folder(error: BaseException, args: argparse.Namespace) -> str:
    return f"bad path {_target(error, args)}: a part of it is a file, not a folder"


def _missing_extra(error: BaseException, args: argparse.Namespace) -> str:
    name = (getattr(error, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    advice = f"pip install 'sprint_lab[{extra}]'" if extra else f"pip install {name or 'it'}"
    return f"{error} (an optional dependency; install it with: {advice})"


def _environment(error: BaseException, args: argparse.Namespace) -> str:
    return _plain(error, args)


#: Exception -> exit code and message, in order: the first rule that matches an error wins.
#: An error no rule matches is a bug (traceback, exit code 1).
ERROR_RULES: list[ErrorRule] = [
    ErrorRule(SprintLabError, None, _plain),
    ErrorRule(KeyboardInterrupt, EXIT_INTERRUPT, _interrupted),
    ErrorRule(OSError, EXIT_SETUP, _disk_full, frozenset({errno.ENOSPC})),
    ErrorRule(OSError, EXIT_SETUP, _quota, frozenset({errno.EDQUOT})),
    ErrorRule(OSError, EXIT_SETUP, _no_permission, frozenset({errno.EACCES, errno.EPERM})),
    ErrorRule(OSError, EXIT_SETUP, _no_permission, frozenset({errno.EROFS})),
    ErrorRule(IsADirectoryError, EXIT_INPUT, _is_folder),
    ErrorRule(NotADirectoryError, EXIT_INPUT, _not_folder),
    ErrorRule(FileExistsError, EXIT_INPUT, _plain),
    ErrorRule(FileNotFoundError, EXIT_INPUT, _plain),
    ErrorRule(ValueError, EXIT_INPUT, _plain),
    ErrorRule(ImportError, EXIT_SETUP, _missing_extra),
    ErrorRule(OSError, EXIT_SETUP, _environment),
]


def rule_for(error: BaseException) -> ErrorRule | None:
    """The first rule of :data:`ERROR_RULES` that matches ``error`` (``None``: a bug)."""
    return next((rule for rule in ERROR_RULES if rule.matches(error)), None)


def exit_code_for(error: BaseException) -> int | None:
    """The exit code ``sprint-lab`` gives ``error`` (``None``: not anticipated, a bug)."""
    rule = rule_for(error)
    if rule is None:
        return None
    if rule.exit_code is None:
        return int(getattr(error, "exit_code", EXIT_BUG))
    return rule.exit_code


def describe_error(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """The one-line message for ``error`` (newlines folded, so it stays one line)."""
    rule = rule_for(error)
    namespace = args if args is not None else argparse.Namespace()
    text = rule.describe(error, namespace) if rule else str(error)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``prog: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- arguments -----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from error


SWEEP_DTYPE_HELP = (
    "float32 (default: the batch-invariant sweep runs about as fast as in bfloat16 on CPU and "
    "keeps the model's own precision) or bfloat16"
)


def _add_model_args(parser: argparse.ArgumentParser, dtype: str | None = None) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="smollm2-135m (embedded), a .gguf file, a model folder or a hub id",
    )
    dtype_help = SWEEP_DTYPE_HELP if dtype == "float32" else "bfloat16 (default) or float32"
    parser.add_argument("--dtype", default=dtype, help=dtype_help)
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


def _add_determinism_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch-invariant generation (default where the model supports it); "
        "--no-deterministic is faster but a row's answer can depend on its batch",
    )
    parser.add_argument(
        "--strategy",
        choices=("verify", "decode"),
        default="decode",
        help="decode (default): decode every answer from its prompt; verify: check the "
        "baseline's answer under each pruned head in one pass and decode only from where it "
        "departs (the same tokens; needs --deterministic; slower on CPU so far)",
    )


_DEBUG_HELP = "print the traceback of an error (for a bug report)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests).

    ``--debug`` is accepted before and after the command.

    Example:
        >>> build_parser().parse_args(["--debug", "report", "out"]).debug
        True
        >>> build_parser().parse_args(["report", "out", "--debug"]).debug
        True
    """
    parser = CommandParser(prog="sprint-lab", description=(__doc__ or "sprint-lab").splitlines()[0])
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # After the command: the default is SUPPRESS, so a flag given before it is not reset.
    debug = CommandParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", parents=[debug], help="small sweep on the embedded model + HTML report"
    )
    demo.add_argument("--layers", type=_ints, default=[0, 15])
    demo.add_argument("--limit", type=int, default=20)
    demo.add_argument("--max-new-tokens", type=int, default=48)
    demo.add_argument("--out", default="sprint-lab-out/demo")
    demo.add_argument("--dtype", default="float32", help=SWEEP_DTYPE_HELP)
    _add_determinism_arg(demo)
    demo.add_argument(
        "--placebos", type=int, default=1, help="unpruned re-runs that measure batch noise"
    )

    sweep = sub.add_parser(
        "sweep", parents=[debug], help="prune each head of some layers and answer every question"
    )
    _add_model_args(sweep, dtype="float32")
    _add_data_args(sweep)
    _add_generation_args(sweep)
    sweep.add_argument("--layers", type=_ints, default=None, help="e.g. 0,5,10 (default: all)")
    sweep.add_argument("--heads", default=None, help="explicit heads, e.g. L0H1,L5H3")
    sweep.add_argument(
        "--configs",
        default=None,
        help="configurations instead of heads: head sets, whole layers, ablation kinds, "
        "comma-separated, e.g. L3H5,L3H5+L7H2,L12,L3H5@mean",
    )
    sweep.add_argument(
        "--kind",
        choices=("zero", "mean", "resample"),
        default=None,
        help="ablate every configuration this way (default: zero, or the label's @kind)",
    )
    sweep.add_argument(
        "--resample-seed", type=int, default=0, help="pairs each question with its donor"
    )
    sweep.add_argument("--out", required=True, help="results folder (Parquet store)")
    _add_determinism_arg(sweep)
    sweep.add_argument("--no-resume", action="store_true", help="refuse to continue a store")
    sweep.add_argument("--executor", default="local", choices=["local", "ray", "vllm"])
    sweep.add_argument(
        "--vllm-url",
        default=None,
        help="a running vLLM server for --executor vllm (default: start one from .venvs/vllm)",
    )
    sweep.add_argument("--max-loras", type=int, default=None, help="the vLLM server's --max-loras")
    sweep.add_argument("--workers", type=int, default=None, help="Ray workers")
    sweep.add_argument("--address", default=None, help="Ray cluster address")
    sweep.add_argument("--gpus-per-worker", type=float, default=None)
    sweep.add_argument("--threads-per-worker", type=int, default=None, help="torch threads")
    sweep.add_argument("--max-shard-retries", type=int, default=3)
    sweep.add_argument(
        "--placebos",
        type=int,
        default=0,
        help="add this many unpruned configurations (none~1, ...) as a placebo check",
    )
    sweep.add_argument(
        "--recompute-stale",
        action="store_true",
        help="recompute stored rows whose question or settings changed since they were written",
    )

    report = sub.add_parser("report", parents=[debug], help="summarise a results folder")
    report.add_argument("results")
    report.add_argument("--html", default=None, help="write a self-contained HTML report")
    report.add_argument("--top", type=int, default=15)

    repair = sub.add_parser(
        "repair",
        parents=[debug],
        help="mend a results folder after a crash (quarantine bad parts, drop temp files)",
    )
    repair.add_argument("results", help="a sweep's results folder (its --out)")

    train = sub.add_parser(
        "train-selector", parents=[debug], help="fit the SPRINT selector on a sweep"
    )
    train.add_argument("results", help="a sweep's results folder (training questions)")
    train.add_argument("--out", required=True, help="folder for the trained selector")
    train.add_argument("--encoder", default="minilm")
    train.add_argument("--dim", type=int, default=64)
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--lr", type=float, default=1e-2)
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", default=None)

    compare = sub.add_parser(
        "compare", parents=[debug], help="SPRINT vs best-of-N vs random heads (held out)"
    )
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
        raise InputError(
            "the results folder does not record its dataset in meta.json (make it with "
            "sprint-lab sweep, or train the selector from Python)"
        )
    problems = load_problems(
        meta["dataset"], meta.get("split", "test"), data_dir=data_dir or meta.get("data_dir")
    )
    wanted = set(meta.get("question_ids", []))
    return [p for p in problems if p.id in wanted]


def executor_for(args: argparse.Namespace) -> Executor:
    """The executor the ``sweep`` flags ask for (``--executor ray`` / ``vllm`` and their flags)."""
    from sprint_lab.sweeps.executor import LocalExecutor
    from sprint_lab.sweeps.ray import RayExecutor
    from sprint_lab.sweeps.vllm import VLLMExecutor

    if args.executor == "vllm":
        return VLLMExecutor(base_url=args.vllm_url, max_loras=args.max_loras)
    if args.executor != "ray":
        return LocalExecutor()
    return RayExecutor(
        workers=args.workers,
        address=args.address,
        resources_per_worker={"num_gpus": args.gpus_per_worker} if args.gpus_per_worker else None,
        threads_per_worker=args.threads_per_worker,
        max_shard_retries=args.max_shard_retries,
    )


def sweep_candidates(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The ``heads=`` or ``configs=`` argument of :func:`~sprint_lab.sweeps.run.sweep` that the
    ``--heads`` / ``--layers`` / ``--configs`` / ``--kind`` flags ask for.

    Raises:
        InputError: ``--configs`` together with ``--heads`` or ``--layers``, or an unreadable
            configuration (named with its flag).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> flags = argparse.Namespace(heads=None, layers=None, configs="L0H1+L1H0,L1@mean",
        ...                            kind=None)
        >>> [c.label for c in sweep_candidates(flags, NS(n_layers=2, n_heads=2))["configs"]]
        ['L0H1+L1H0', 'L1@mean']
    """
    from sprint_lab.core.configs import as_configs
    from sprint_lab.core.heads import all_heads, as_heads

    if args.configs is not None and (args.heads or args.layers):
        raise InputError("--configs replaces --heads and --layers; pass one of them")
    flag = "--configs" if args.configs is not None else "--heads"
    try:
        if args.configs is not None:
            items = [item.strip() for item in args.configs.split(",") if item.strip()]
        elif args.heads:
            items = as_heads(args.heads.split(","))
        else:
            items = all_heads(model, args.layers)
        if args.configs is None and args.kind in (None, "zero"):
            return {"heads": items}
        return {"configs": as_configs(model, items, kind=args.kind)}
    except ValueError as error:
        raise InputError(f"{flag}: {error}") from error


def _run_sweep(args) -> int:
    from sprint_lab.core.model import load_model
    from sprint_lab.sweeps.run import sweep
    from sprint_lab.sweeps.store import SweepStore
    from sprint_lab.tasks.problems import load_problems
    from sprint_lab.viz.report import format_top_heads

    # The cheap checks first (data, the results folder), then the model.
    problems = load_problems(
        args.dataset, args.split, limit=args.limit, seed=args.seed, data_dir=args.data_dir
    )
    SweepStore(args.out)  # an existing file at --out is an InputError now, not after loading
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    result = sweep(
        model,
        problems,
        **sweep_candidates(args, model),
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        out=args.out,
        resume=not args.no_resume,
        executor=executor_for(args),
        tags={
            "dataset": args.dataset,
            "split": args.split,
            "limit": args.limit,
            "problem_seed": args.seed,
            "data_dir": args.data_dir,
        },
        recompute_stale=args.recompute_stale,
        placebos=args.placebos,
        deterministic=args.deterministic,
        strategy=args.strategy,
        resample_seed=args.resample_seed,
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


def _repair(args) -> int:
    from sprint_lab.sweeps.store import SweepStore

    store = SweepStore(args.results)  # a file, not a folder: ValueError (exit 2)
    if not store.path.is_dir() or not (store.meta_path.is_file() or store.parts()):
        raise InputError(
            f"{store.path} is not a sweep results folder (no {store.meta_path.name} and no "
            "part-*.parquet files); give the --out folder of a sweep"
        )
    print(store.repair())
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
        f"sweeping {len(heads)} heads (layers {args.layers}) + baseline + {args.placebos} "
        f"placebo(s) on "
        f"{len(problems)} arith problems, {args.max_new_tokens} new tokens each"
    )
    result = sweep(
        model,
        problems,
        heads,
        max_new_tokens=args.max_new_tokens,
        out=Path(args.out) / "results",
        tags={"dataset": "arith", "split": "test", "limit": args.limit, "problem_seed": 0},
        placebos=args.placebos,
        deterministic=args.deterministic,
        strategy=args.strategy,
    )
    print(f"\n{result} in {time.perf_counter() - start:.0f}s")
    print(format_top_heads(result, 10))
    for check in result.placebo_check().itertuples():
        print(
            f"placebo {check.config}: {check.mismatched} of {check.n} answers differ from the "
            f"baseline's (delta {check.delta:+.3f}); nonzero means batch noise"
        )
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
    "repair": _repair,
    "train-selector": _train,
    "compare": _compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sprint-lab`` console script.

    Returns:
        The exit code: 0, or the code :data:`ERROR_RULES` gives the error that ended the
        command (after one line on stderr). An error no rule matches is re-raised (a bug).
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt) as error:
        code = exit_code_for(error)
        if code is None:
            error.add_note(f"sprint-lab {args.command}: an unexpected error; please report it")
            raise
        if getattr(args, "debug", False):
            traceback.print_exception(error)
        print(f"sprint-lab {args.command}: error: {describe_error(error, args)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
