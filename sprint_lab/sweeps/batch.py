"""A sweep's unit of work, and the runner that generates and grades one batch of it.

A sweep is a set of (configuration, question) pairs (:class:`WorkItem`): the unpruned baseline
``"none"`` plus one configuration per candidate head, ordered configuration-major
(:func:`plan`). :class:`BatchRunner` answers a batch of pairs in one mixed generation call (each
row carrying its own head mask, each configuration's few-shot prefix computed once and kept in a
prefix cache) and grades every answer into a row of the sweep's table
(:func:`~sprint_lab.sweeps.result.make_row`). Every executor that runs a model in-process (the
local loop, each Ray actor) shares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from sprint_lab.core.gate import masks_for
from sprint_lab.core.heads import Head, parse_config
from sprint_lab.generation.generator import generate
from sprint_lab.generation.kv import PrefixCache
from sprint_lab.sweeps.rows import config_labels, group_columns, make_row
from sprint_lab.tasks.grading import grade
from sprint_lab.tasks.prompts import get_template

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem


@dataclass(frozen=True)
class WorkItem:
    """One (configuration, question) pair: ``config`` is ``"none"`` or a head label."""

    config: str
    question_index: int


def plan(
    problems: Sequence[Problem],
    heads: Sequence[Head],
    done: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    placebos: int = 0,
) -> list[WorkItem]:
    """The work still to do, configuration-major (baseline first), skipping ``done`` pairs.

    Example:
        >>> [(it.config, it.question_index) for it in plan(problems[:2], [Head(0, 1)])]
        [('none', 0), ('none', 1), ('L0H1', 0), ('L0H1', 1)]
        >>> len(plan(problems[:2], [Head(0, 1)], done={(problems[0].id, "none")}))
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
    ) -> None:
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

    def run(self, items: Sequence[WorkItem]) -> pd.DataFrame:
        """Generate and grade one batch; return its tidy rows."""
        configs = [list(parse_config(item.config)) or None for item in items]
        completions = generate(
            self.model,
            [self.parts[item.question_index] for item in items],
            head_masks=masks_for(self.model, configs),
            max_new_tokens=self.max_new_tokens,
            stop=self.stop,
            batch_size=max(1, len(items)),
            prefix_cache=self.prefix_cache,
            reuse_prefix=self.reuse_prefix,
            attention=self.attention,
            deterministic=self.deterministic,
        )
        records = []
        for item, completion in zip(items, completions, strict=True):
            problem = self.problems[item.question_index]
            verdict = grade(completion.text, problem, mode=self.grade_mode)
            records.append(make_row(problem, item.config, completion, verdict, self.groups))
        return pd.DataFrame.from_records(records)
