"""A sweep's unit of work, and the runner that generates and grades one batch of it.

A sweep is a set of (configuration, question) pairs (:class:`WorkItem`): the unpruned baseline
``"none"`` plus one configuration per candidate head, ordered configuration-major
(:func:`plan`). :class:`BatchRunner` answers a batch of pairs in one mixed generation call (each
row carrying its own head mask, each configuration's few-shot prefix computed once and kept in a
prefix cache) and grades every answer into a row of the sweep's table
(:func:`~sprint_lab.sweeps.result.make_row`). Every executor that runs a model in-process (the
local loop, each Ray actor) shares it.

Each runner keeps every question's baseline answer (its token ids) as the *draft* of that
question's pruned rows. With ``strategy="verify"`` (verify-then-decode,
:mod:`sprint_lab.generation.verify`) a pruned row teacher-forces the draft in one pass and decodes
only from the first token where the pruned model departs from it: exact greedy decoding, on the
batch-invariant path. With ``strategy="decode"`` every row decodes from its prompt. Both record
``diverged_at``. A baseline the runner has not generated yet (a resumed sweep, a Ray shard) is
generated first, once per question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from sprint_lab.core.ablation import HeadMeans, replacement_for
from sprint_lab.core.errors import InputError
from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import config_kind, is_baseline, parse_config
from sprint_lab.generation.generator import Completion, generate
from sprint_lab.generation.kv import PrefixCache
from sprint_lab.sweeps.rows import config_labels, group_columns, make_row
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.prompts import get_template

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem


STRATEGIES = ("verify", "decode")
"""How a sweep's pruned rows are generated: ``"verify"`` (check the baseline's answer, decode
from where it departs) or ``"decode"`` (decode every answer from its prompt)."""


def check_strategy(strategy: str, deterministic: bool) -> str:
    """``strategy`` if it is known and usable with ``deterministic``.

    Raises:
        InputError: for an unknown strategy, or ``"verify"`` without batch-invariant generation.

    Example:
        >>> check_strategy("verify", True)
        'verify'
        >>> check_strategy("verify", False)
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: strategy='verify' is exact only with deterministic=...
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    if strategy == "verify" and not deterministic:
        raise InputError(
            "strategy='verify' is exact only with deterministic=True (batch-invariant "
            "generation); use strategy='decode' with deterministic=False"
        )
    return strategy


@dataclass(frozen=True)
class WorkItem:
    """One (configuration, question) pair: ``config`` is ``"none"`` or a head label."""

    config: str
    question_index: int


def plan(
    problems: Sequence[Problem],
    heads: Sequence[Any],
    done: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    placebos: int = 0,
) -> list[WorkItem]:
    """The work still to do, configuration-major (baseline first), skipping ``done`` pairs.

    Example:
        >>> [(it.config, it.question_index) for it in plan(problems[:2], [sl.Head(0, 1)])]
        [('none', 0), ('none', 1), ('L0H1', 0), ('L0H1', 1)]
        >>> len(plan(problems[:2], [sl.Head(0, 1)], done={(problems[0].id, "none")}))
        3
    """
    return [
        WorkItem(config, q)
        for config in config_labels(heads, placebos)
        for q, problem in enumerate(problems)
        if (problem.id, config) not in done
    ]


class BatchRunner:
    """Generates and grades batches of work items: shared by the local and the Ray executors.

    Args:
        model: the :class:`~sprint_lab.core.model.LabModel`.
        problems: the questions, indexed by ``WorkItem.question_index``.
        prompt: a prompt template name or object (see :mod:`sprint_lab.tasks.prompts`).
        max_new_tokens: generation limit.
        grade_mode: extraction mode passed to :func:`~sprint_lab.tasks.grading.grade`.
        prefix_cache_entries: how many (prefix, configuration) KV caches to keep.
        reuse_prefix: reuse the shared few-shot prefix's KV cache (off only to measure its gain).
        attention: attention path for :func:`~sprint_lab.generation.generator.generate` (``"auto"``,
            ``"shared_prefix"`` or ``"bridge"``).
        deterministic: batch-invariant generation (:mod:`sprint_lab.generation.invariant`).
        strategy: ``"verify"`` or ``"decode"`` (:data:`STRATEGIES`; ``"verify"`` needs
            ``deterministic``).
        reference: the reference means for ``@mean`` / ``@resample`` configurations
            (:func:`~sprint_lab.core.ablation.head_means`).
        resample_seed: the seed that pairs each question with its resample donor.
        slots: rows decoding at once within one :meth:`run` call (``None``: all of its pairs).
            With fewer slots than pairs and batch-invariant generation, finished rows' slots are
            refilled from the waiting pairs (continuous batching,
            :mod:`sprint_lab.generation.batch`).

    Attributes:
        drafts: question index -> the baseline's answer tokens, as generated by this runner.
        timings: phase seconds and token counts of verify-then-decode, summed over batches.

    Example:
        >>> runner = BatchRunner(model, problems, max_new_tokens=4)
        >>> rows = runner.run([WorkItem("none", 0), WorkItem("L0H1", 0)])
        >>> rows[["config", "layer", "head"]].values.tolist()
        [['none', -1, -1], ['L0H1', 0, 1]]
    """

    def __init__(
        self,
        model: LabModel,
        problems: Sequence[Problem],
        *,
        prompt: Any = "fewshot_cot",
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        prefix_cache_entries: int = 8,
        reuse_prefix: bool = True,
        attention: str = "auto",
        deterministic: bool = False,
        strategy: str = "decode",
        reference: HeadMeans | None = None,
        resample_seed: int = 0,
        slots: int | None = None,
    ) -> None:
        if slots is not None and slots < 1:
            raise InputError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.strategy = check_strategy(strategy, deterministic)
        self.reference = reference
        self.resample_seed = resample_seed
        self.model = model
        self.attention = attention
        self.deterministic = deterministic
        self.problems = list(problems)
        self.template = get_template(prompt)
        self.max_new_tokens = max_new_tokens
        self.grade_mode = grade_mode
        self.stop = self.template.stop_strings(model.tokenizer)
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        self.reuse_prefix = reuse_prefix
        self.parts = [self.template.parts(p.question, model.tokenizer) for p in self.problems]
        self.groups = group_columns(self.problems)
        self.drafts: dict[int, tuple[int, ...]] = {}
        self.timings: dict[str, float] = {}

    def _generate(
        self, items: Sequence[WorkItem], drafts: list[tuple[int, ...]] | None = None
    ) -> list[Completion]:
        configs = [parse_config(item.config, self.model.n_heads) for item in items]
        return generate(
            self.model,
            [self.parts[item.question_index] for item in items],
            head_masks=masks_for(self.model, [list(heads) or None for heads in configs]),
            head_replacements=self._replacements(items, configs),
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            batch_size=self.slots or max(1, len(items)),
            prefix_cache=self.prefix_cache,
            reuse_prefix=self.reuse_prefix,
            attention=self.attention,
            deterministic=self.deterministic,
            drafts=drafts,
            verify=self.strategy == "verify",
            timings=self.timings,
        )

    def _replacements(self, items: Sequence[WorkItem], configs: Sequence[Sequence[Any]]) -> Any:
        """Per-row replacements when any item is a mean/resample configuration, else ``None``."""
        kinds = [config_kind(item.config) for item in items]
        if all(kind == "zero" for kind in kinds):
            return None
        return [
            replacement_for(
                self.model,
                heads,
                kind,
                self.reference,
                self.problems[item.question_index].id,
                self.resample_seed,
            )  # fmt: skip
            for item, heads, kind in zip(items, configs, kinds, strict=True)
        ]

    def baseline_drafts(self, question_indices: Sequence[int]) -> list[tuple[int, ...]]:
        """The baseline's answer tokens for each question (generated once, when missing)."""
        missing = list(dict.fromkeys(q for q in question_indices if q not in self.drafts))
        if missing:
            answers = self._generate([WorkItem("none", q) for q in missing])
            for q, completion in zip(missing, answers, strict=True):
                self.drafts[q] = completion.token_ids
        return [self.drafts[q] for q in question_indices]

    def run(self, items: Sequence[WorkItem]) -> pd.DataFrame:
        """Generate and grade one batch (its baseline rows first); return its tidy rows."""
        completions: dict[int, Completion] = {}
        baseline = [k for k, item in enumerate(items) if is_baseline(item.config)]
        if baseline:
            answers = self._generate([items[k] for k in baseline])
            for k, completion in zip(baseline, answers, strict=True):
                completions[k] = completion
                self.drafts[items[k].question_index] = completion.token_ids
        pruned = [items[k] for k in range(len(items)) if k not in completions]
        if pruned:
            drafts = self.baseline_drafts([item.question_index for item in pruned])
            answers = iter(self._generate(pruned, drafts))
            for k in range(len(items)):
                if k not in completions:
                    completions[k] = next(answers)
        records = []
        for k, item in enumerate(items):
            completion = completions[k]
            problem = self.problems[item.question_index]
            verdict = grade(completion.text, problem, mode=self.grade_mode)
            records.append(make_row(problem, item.config, completion, verdict, self.groups))
        return pd.DataFrame.from_records(records)
