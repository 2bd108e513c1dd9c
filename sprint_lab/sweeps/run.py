"""The ablation sweep: every candidate head pruned in turn, every question answered.

A sweep is a set of (configuration, question) pairs: the unpruned baseline ``"none"`` plus one
configuration per candidate head (:func:`~sprint_lab.sweeps.batch.plan`). Pairs are ordered
configuration-major and packed into mixed batches, each row carrying its own head mask, so a
forward pass serves several configurations and each configuration's few-shot prefix is computed
once. Rows are graded as they finish and, with ``out=``, appended batch by batch to a Parquet
store, so an interrupted sweep resumes where it stopped. Where the pairs run is the executor's
business (:mod:`sprint_lab.sweeps.executor`): in this process, on Ray actors, or elsewhere.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sprint_lab.core.ablation import HeadMeans, head_means
from sprint_lab.core.configs import Candidate, as_candidate, as_configs
from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import Head, as_heads, config_kind
from sprint_lab.generation.attention_swap import shared_prefix_supported
from sprint_lab.generation.limits import check_problem_lengths
from sprint_lab.sweeps.batch import check_strategy, plan
from sprint_lab.sweeps.executor import (
    Executor,
    RowSink,
    SweepJob,
    SweepProgress,
    resolve_executor,
)
from sprint_lab.sweeps.identity import (
    model_fingerprint,
    question_fingerprints,
    settings_fingerprint,
)
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.rows import config_labels
from sprint_lab.sweeps.store import (
    StaleRowsError,
    StoreStatus,
    SweepExistsError,
    SweepStore,
)
from sprint_lab.tasks.prompts import PromptTemplate, get_template

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem


class SweepCancelled(Exception):
    """Raised inside the runner when the ``cancel`` event is set (the sweep returns cleanly)."""


def sweep_meta(
    model: LabModel,
    problems: Sequence[Problem],
    heads: Sequence[Candidate],
    template: PromptTemplate,
    max_new_tokens: int,
    grade_mode: str,
    seed: int,
    deterministic: bool = True,
) -> dict[str, Any]:
    """The settings recorded with a sweep (and checked when a store is resumed).

    Besides the readable settings it holds the fingerprints of :mod:`sprint_lab.sweeps.identity`:
    ``model_fingerprint`` (the weights), ``settings_fingerprint`` and ``fingerprints`` (question
    id -> the fingerprint its rows must carry).
    """
    settings = settings_fingerprint(model, template, max_new_tokens, grade_mode, deterministic)
    return {
        "deterministic": bool(deterministic),
        "model": model.name,
        "model_fingerprint": model_fingerprint(model),
        "settings_fingerprint": settings,
        "fingerprints": question_fingerprints(model, problems, template, settings),
        "dtype": str(model.dtype).removeprefix("torch."),
        "prompt": template.name,
        "max_new_tokens": int(max_new_tokens),
        "grade_mode": grade_mode,
        "seed": int(seed),
        "heads": [head.label for head in heads],
        "question_ids": [p.id for p in problems],
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
    }


def _candidates(model: LabModel, heads: Any, configs: Any) -> list[Candidate]:
    """The sweep's candidates from ``heads=`` (one head each) or ``configs=`` (any set)."""
    if (heads is None) == (configs is None):
        raise InputError("pass the candidates as heads= (one head each) or configs=, not both")
    if configs is not None:
        return [as_candidate(config) for config in as_configs(model, configs)]
    candidates = as_heads(heads)
    if len(set(candidates)) != len(candidates):
        raise ValueError("a head is listed twice in heads")
    masks_for(model, [[h] for h in candidates])  # validates every head against the model
    return list(candidates)


def _checked(
    model: LabModel,
    problems: Iterable[Problem],
    heads: Any,
    configs: Any,
    batch_size: int,
) -> tuple[list[Problem], list[Candidate]]:
    """The problems and candidates as lists, after checking them against each other and the
    model."""
    candidates = _candidates(model, heads, configs)
    problems = list(problems)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids repeat; each question needs a unique id")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return problems, candidates


def ablation_reference(
    model: LabModel,
    problems: Sequence[Problem],
    candidates: Sequence[Candidate],
    template: PromptTemplate,
    resample_seed: int,
) -> tuple[HeadMeans | None, dict[str, Any]]:
    """The reference means a sweep's ``@mean`` / ``@resample`` candidates need, and its meta.

    The reference set is the sweep's own prompts (:mod:`sprint_lab.core.ablation`); without such
    candidates nothing is computed.
    """
    if all(config_kind(candidate.label) == "zero" for candidate in candidates):
        return None, {}
    prompts = [template.parts(p.question, model.tokenizer) for p in problems]
    reference = head_means(model, prompts, ids=[p.id for p in problems])
    meta = {
        "ablation_reference": f"sweep prompts:{reference.fingerprint}",
        "resample_seed": int(resample_seed),
    }
    return reference, meta


def invariance_available(model: LabModel, executor: Any) -> bool:
    """Whether ``executor`` can run ``model`` batch-invariantly (``sweep``'s default).

    Batch-invariant generation needs the shared-prefix attention path: models that path cannot
    reproduce exactly (sliding windows, soft-capping; see
    :func:`~sprint_lab.generation.attention_swap.shared_prefix_supported`) and executors set to
    the bridge's own attention run the fast, batch-dependent path instead, and so does an
    executor that says ``batch_invariant = False`` (a serving engine's batched kernels).

    Example:
        >>> from sprint_lab.sweeps.executor import LocalExecutor
        >>> invariance_available(model, LocalExecutor()), invariance_available(
        ...     model, LocalExecutor(attention="bridge"))
        (True, False)
    """
    return (
        shared_prefix_supported(model)
        and getattr(executor, "attention", "auto") != "bridge"
        and bool(getattr(executor, "batch_invariant", True))
    )


def _refuse_stale(store: SweepStore, status: StoreStatus) -> None:
    questions = status.stale_questions()
    more = f" and {len(questions) - 10} more" if len(questions) > 10 else ""
    shown = ", ".join(questions[:10]) + more
    raise StaleRowsError(
        f"{store.path}: {len(status.stale)} stored row(s) of {len(questions)} question(s) were "
        f"made from another version of the question record or prompt (ids: {shown}); pass "
        "recompute_stale=True (CLI: --recompute-stale) to recompute them, or use another folder"
    )


@contextmanager
def _opened_store(
    out: Any, resume: bool, meta: dict[str, Any], configs: Sequence[str], recompute_stale: bool
) -> Iterator[tuple[SweepStore | None, set[tuple[str, str]]]]:
    """The store at ``out``, locked for this sweep, and the pairs it already holds fresh.

    Raises:
        SweepExistsError: rows are stored and ``resume`` is off.
        InputError: the stored sweep ran with other settings.
        StaleRowsError: stored rows of planned pairs carry another fingerprint.
        StoreLockedError: another sweep writes into ``out``.
    """
    if out is None:
        yield None, set()
        return
    store = SweepStore(out)
    with store.lock("sweep"):
        store.clean_temp()
        done: set[tuple[str, str]] = set()
        if store.has_rows():
            if not resume:
                raise SweepExistsError(
                    f"{store.path} already holds sweep rows; pass resume=True to continue, "
                    "or choose an empty folder"
                )
            store.check_compatible(meta)
            status = store.status(meta["fingerprints"], configs)
            if status.stale and not recompute_stale:
                _refuse_stale(store, status)
            if status.foreign:
                warnings.warn(
                    f"{store.path} holds {len(status.foreign)} row(s) outside this sweep's plan "
                    "(other questions or heads); they stay on disk but are not part of this result",
                    stacklevel=4,
                )
            done = status.done
        store.write_meta({**store.read_meta(), **meta})
        yield store, done


def sweep(
    model: LabModel,
    problems: Sequence[Problem],
    heads: Iterable[Head | str | tuple[int, int]] | None = None,
    *,
    configs: Iterable[Any] | None = None,
    prompt: Any = "fewshot_cot",
    max_new_tokens: int = 256,
    batch_size: int = 32,
    out: Any = None,
    resume: bool = True,
    progress: bool = True,
    seed: int = 0,
    grade_mode: str = "flexible",
    callback: Callable[[SweepProgress], None] | None = None,
    cancel: threading.Event | None = None,
    executor: str | Executor = "local",
    tags: dict[str, Any] | None = None,
    recompute_stale: bool = False,
    placebos: int = 0,
    deterministic: bool | None = None,
    strategy: str = "decode",
    resample_seed: int = 0,
) -> SweepResult:
    """Prune each head in turn (plus the unpruned baseline) and answer every question.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel`.
        problems: :class:`~sprint_lab.tasks.problems.Problem` objects (ids must be unique).
        heads: candidate heads (``Head``, ``"L3H5"`` or ``(layer, head)``), one configuration
            each; the baseline is added. The shorthand for ``configs=`` of single heads.
        configs: candidate configurations instead of ``heads``: head sets (``["L3H5",
            "L7H2"]``, ``"L3H5+L7H2"``), whole layers (``sl.layer(model, 12)``, ``"L12"``) and
            ablation kinds (``"L3H5@mean"``, ``sl.Config(heads, kind="resample")``;
            :mod:`sprint_lab.core.configs`, :mod:`sprint_lab.core.ablation`).
        prompt: prompt template name (``"fewshot_cot"``, ``"chat_boxed"``, ...) or object.
        max_new_tokens: generation limit per answer (greedy decoding).
        batch_size: rows per forward pass (per shard on Ray); rows mix configurations.
        out: a folder for the Parquet store; rows are appended as batches finish.
        resume: with ``out``, skip (question, configuration) pairs already stored. With
            ``resume=False`` a non-empty store is an error (nothing computed is overwritten).
        progress: show a tqdm progress bar.
        seed: recorded with the results (greedy decoding does not sample).
        grade_mode: answer extraction mode (``"flexible"`` or ``"strict"``, see grading).
        callback: called with a :class:`~sprint_lab.sweeps.executor.SweepProgress` after each
            batch (widgets use it).
        cancel: a ``threading.Event``; when set, the sweep stops after the batch in flight and
            returns what it has (``result.complete`` is then ``False``).
        executor: where the pairs run: an :class:`~sprint_lab.sweeps.executor.Executor` such as
            ``LocalExecutor()`` or ``RayExecutor(workers=4)`` (:mod:`sprint_lab.sweeps.ray`),
            or a registered name (``"local"``, ``"ray"``) for one with default settings.
        tags: extra JSON-able facts stored in the result's ``meta`` (e.g. the dataset name).
        recompute_stale: with ``out``, recompute stored pairs whose fingerprint (question record,
            rendered prompt, model, settings; :mod:`sprint_lab.sweeps.identity`) no longer
            matches; without it such rows raise :class:`~sprint_lab.sweeps.store.StaleRowsError`.
        placebos: add this many unpruned configurations (``"none~1"``, ...) that run exactly
            like pruned ones (own rows, own positions in mixed batches, spread over the sweep).
            Their deltas against the baseline are the noise floor of the measurement: zero
            when generation is batch-invariant. ``deltas()`` lists them next to the heads.
        deterministic: batch-invariant generation (:mod:`sprint_lab.generation.invariant`): a
            pair's tokens do not depend on the batch size, the other rows of its batch, the
            executor or the number of workers. ``None`` (default): on whenever the execution
            path supports it (:func:`invariance_available`); ``False`` is the faster,
            batch-dependent path. The choice is recorded in ``meta["deterministic"]`` and is
            part of the rows' identity.
        strategy: how pruned rows are generated: ``"verify"`` teacher-forces the baseline's
            answer and decodes only from the first token where the pruned model departs from it
            (verify-then-decode, :mod:`sprint_lab.generation.verify`: the same tokens as
            ``"decode"``, which decodes every answer from its prompt, the default: on a 2-core
            CPU ``"verify"`` measured 0.81x its speed, see ``benchmarks/bench_full_sweep.py``).
            Recorded in ``meta["strategy"]``; not part of the rows' identity (both give the same
            rows).
        resample_seed: pairs each question with the donor question whose head outputs
            ``@resample`` configurations use (recorded in ``meta``).

    Returns:
        A :class:`~sprint_lab.sweeps.result.SweepResult`, one row per (question, configuration).

    Example:
        >>> result = sweep(model, problems[:2], sl.all_heads(model, layers=[0])[:1],
        ...                max_new_tokens=4, progress=False)
        >>> result.table[["question_id", "config", "correct"]].shape
        (4, 3)
    """
    problems, candidates = _checked(model, problems, heads, configs, batch_size)
    template = get_template(prompt)
    check_problem_lengths(model, problems, template, max_new_tokens)
    runner = resolve_executor(executor)
    if deterministic is None:
        deterministic = invariance_available(model, runner)
    check_strategy(strategy, deterministic)
    meta = {
        **(tags or {}),
        **sweep_meta(
            model, problems, candidates, template, max_new_tokens, grade_mode, seed, deterministic
        ),
    }
    labels = config_labels(candidates, placebos)  # validates placebos
    meta["placebos"] = int(placebos)
    meta["strategy"] = strategy
    reference, reference_meta = ablation_reference(
        model, problems, candidates, template, resample_seed
    )
    meta.update(reference_meta)

    with _opened_store(out, resume, meta, labels, recompute_stale) as (store, done):
        items = plan(problems, candidates, done, placebos)
        job = SweepJob(
            model, problems, candidates, template, max_new_tokens=max_new_tokens,
            grade_mode=grade_mode, batch_size=batch_size, progress=progress, callback=callback,
            cancel=cancel, store=store, meta=meta, placebos=placebos,
            deterministic=deterministic, strategy=strategy, reference=reference,
            resample_seed=resample_seed,
        )  # fmt: skip
        with RowSink(job, pending=len(items)) as sink:
            complete = runner.run(job, items, sink)
            return sink.result(complete)
