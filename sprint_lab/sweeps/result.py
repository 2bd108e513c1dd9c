"""Sweep results as a tidy table, with honest paired statistics.

One row per (question, configuration). ``deltas`` compares each pruned head with the unpruned
baseline *on the same questions*: the accuracy delta, a paired bootstrap 95% interval, an exact
McNemar p-value on the discordant pairs, and Benjamini-Hochberg q-values across heads, so a
heat map of many heads does not mistake noise for a finding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sprint_lab.core.heads import Head
from sprint_lab.sweeps.stats import benjamini_hochberg, mcnemar_exact, paired_bootstrap_ci

BASELINE = "none"
COLUMNS = [
    "question_id",
    "config",
    "layer",
    "head",
    "completion",
    "extracted",
    "correct",
    "n_tokens",
    "finish_reason",
    "extractor",
]
DELTA_COLUMNS = [
    "config",
    "layer",
    "head",
    "n",
    "accuracy",
    "baseline_accuracy",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
]


def order_table(
    table: pd.DataFrame, problems: Sequence[Any] | None = None, heads: Sequence[Head] | None = None
) -> pd.DataFrame:
    """Sort rows by configuration (baseline first, then heads) and question order."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    table = table.copy()
    if heads is not None:
        config_rank = {label: i for i, label in enumerate([BASELINE] + [h.label for h in heads])}
    else:
        config_rank = {BASELINE: -1}
    if problems is not None:
        question_rank = {p.id: i for i, p in enumerate(problems)}
    else:
        question_rank = {q: i for i, q in enumerate(sorted(table["question_id"].unique()))}
    table["_c"] = [
        config_rank.get(c, len(config_rank) + layer * 10_000 + head)
        for c, layer, head in zip(table["config"], table["layer"], table["head"], strict=True)
    ]
    table["_q"] = table["question_id"].map(question_rank).fillna(len(question_rank))
    table = table.sort_values(["_c", "_q", "question_id"], kind="stable")
    table = table.drop(columns=["_c", "_q"]).reset_index(drop=True)
    table["layer"] = table["layer"].astype("int64")
    table["head"] = table["head"].astype("int64")
    table["n_tokens"] = table["n_tokens"].astype("int64")
    table["correct"] = table["correct"].astype(bool)
    for column in table.columns:  # text columns: one dtype whichever batches the rows came from
        if table[column].dtype == object:
            table[column] = table[column].infer_objects()
    return table


class SweepResult:
    """The rows of a sweep, plus the settings it ran with.

    Attributes:
        table: tidy DataFrame: ``question_id``, ``config`` (``"none"`` or ``"L3H5"``), ``layer``,
            ``head`` (-1 for the baseline), ``completion``, ``extracted``, ``correct``,
            ``n_tokens``, ``finish_reason``, ``extractor``, and ``level``/``subject`` when known.
        meta: the sweep's settings (model, dtype, prompt, max_new_tokens, heads, question ids).
        complete: ``False`` when the sweep was cancelled before every pair was done.

    Example:
        >>> result = SweepResult.load("results/")     # doctest: +SKIP
        >>> result.deltas().sort_values("delta").head()  # doctest: +SKIP
    """

    def __init__(
        self, table: pd.DataFrame, meta: dict[str, Any] | None = None, complete: bool = True
    ) -> None:
        missing = {"question_id", "config", "layer", "head", "correct"} - set(table.columns)
        if len(table) and missing:
            raise ValueError(f"sweep table lacks columns {sorted(missing)}")
        self.table = table
        self.meta = dict(meta or {})
        self.complete = complete

    def __repr__(self) -> str:
        n_q = self.table["question_id"].nunique() if len(self.table) else 0
        n_c = self.table["config"].nunique() if len(self.table) else 0
        return f"SweepResult({len(self.table)} rows: {n_q} questions x {n_c} configurations)"

    def __len__(self) -> int:
        return len(self.table)

    @property
    def heads(self) -> list[Head]:
        """The pruned heads present in the table, in table order."""
        configs = [c for c in dict.fromkeys(self.table.get("config", [])) if c != BASELINE]
        return [Head.parse(c) for c in configs]

    @property
    def layers(self) -> list[int]:
        """The swept layers, ascending."""
        return sorted({head.layer for head in self.heads})

    def correctness(self) -> pd.DataFrame:
        """Boolean matrix: one row per question, one column per configuration."""
        matrix = self.table.pivot(index="question_id", columns="config", values="correct")
        order = [BASELINE] + [h.label for h in self.heads]
        return matrix[[c for c in order if c in matrix.columns]]

    def accuracy(self, by: str | None = None) -> pd.DataFrame:
        """Accuracy per configuration (and per ``by`` group): columns config, [by], n, accuracy."""
        keys = ["config", "layer", "head"] + ([by] if by else [])
        frame = self.table.groupby(keys, sort=False, dropna=False)["correct"]
        return frame.agg(n="size", accuracy="mean").reset_index()

    def deltas(
        self, by: str | None = None, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
    ) -> pd.DataFrame:
        """Per head: accuracy, delta against the baseline on the same questions, CI, p and q.

        Args:
            by: ``None``, ``"level"`` or ``"subject"``: break the comparison down by group
                (q-values are then computed within each group).
            n_boot: bootstrap resamples for the paired confidence interval.
            level: confidence level of the interval.
            seed: bootstrap seed.

        Returns:
            One row per head (per group): ``config``, ``layer``, ``head``, ``n``, ``accuracy``,
            ``baseline_accuracy``, ``delta``, ``ci_low``, ``ci_high``, ``p_value``, ``q_value``.

        Raises:
            ValueError: when the table has no baseline rows, or ``by`` is not a column.
        """
        table = self.table
        if table.empty:
            return pd.DataFrame(columns=DELTA_COLUMNS + ([by] if by else []))
        if by is not None and by not in table.columns:
            raise ValueError(f"cannot break down by {by!r}: the sweep has no such column")
        base = table[table["config"] == BASELINE].set_index("question_id")["correct"]
        if base.empty:
            raise ValueError("the sweep has no baseline ('none') rows to compare against")
        groups = [(None, table)] if by is None else list(table.groupby(by, sort=True))
        frames = []
        for group, part in groups:
            rows = []
            for config, rows_of_head in part[part["config"] != BASELINE].groupby(
                "config", sort=False
            ):
                pruned = rows_of_head.set_index("question_id")["correct"]
                common = pruned.index.intersection(base.index)
                p_arr = pruned.loc[common].to_numpy(bool)
                b_arr = base.loc[common].to_numpy(bool)
                if len(common):
                    low, high = paired_bootstrap_ci(
                        b_arr, p_arr, n_boot=n_boot, level=level, seed=seed
                    )
                    p_value = mcnemar_exact(b_arr, p_arr)
                else:
                    low = high = p_value = float("nan")
                head = Head.parse(config)
                rows.append(
                    {
                        "config": config,
                        "layer": head.layer,
                        "head": head.head,
                        "n": len(common),
                        "accuracy": p_arr.mean() if len(common) else float("nan"),
                        "baseline_accuracy": b_arr.mean() if len(common) else float("nan"),
                        "ci_low": low,
                        "ci_high": high,
                        "p_value": p_value,
                    }
                )
            frame = pd.DataFrame(rows)
            if frame.empty:
                continue
            frame["delta"] = frame["accuracy"] - frame["baseline_accuracy"]
            frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy(float))
            if by is not None:
                frame[by] = group[0] if isinstance(group, tuple) else group
            frames.append(frame)
        columns = DELTA_COLUMNS + ([by] if by else [])
        if not frames:
            return pd.DataFrame(columns=columns)
        out = pd.concat(frames, ignore_index=True)[columns]
        sort = ([by] if by else []) + ["layer", "head"]
        return out.sort_values(sort, kind="stable").reset_index(drop=True)

    def top_heads(self, n: int = 10, *, alpha: float | None = None) -> pd.DataFrame:
        """Heads whose pruning helps most (largest delta, then smallest q)."""
        deltas = self.deltas()
        if alpha is not None:
            deltas = deltas[deltas["q_value"] <= alpha]
        return deltas.sort_values(["delta", "q_value"], ascending=[False, True]).head(n)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table to a Parquet file (``.parquet``) or a store folder; return the path.

        The settings travel in the Parquet schema metadata, so :meth:`load` restores both.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.suffix != ".parquet":
            from sprint_lab.sweeps.store import SweepStore

            store = SweepStore(path)
            if store.has_rows():
                for part in store.parts():
                    part.unlink()
            store.write_meta(self.meta)
            store.append(self.table, tag="saved-")
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        arrow = pa.Table.from_pandas(self.table, preserve_index=False)
        schema_meta = dict(arrow.schema.metadata or {})
        schema_meta[b"sprint_lab"] = json.dumps(
            {"meta": self.meta, "complete": self.complete}, default=str
        ).encode()
        pq.write_table(arrow.replace_schema_metadata(schema_meta), path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepResult:
        """Read a result saved with :meth:`save`, or a sweep's ``out=`` folder."""
        import pyarrow.parquet as pq

        path = Path(path)
        if path.is_dir():
            from sprint_lab.sweeps.store import SweepStore

            store = SweepStore(path)
            if not store.has_rows():
                raise FileNotFoundError(f"{path} holds no sweep rows (part-*.parquet)")
            meta = store.read_meta()
            heads = [Head.parse(h) for h in meta.get("heads", [])] or None
            problems = None
            if meta.get("question_ids"):
                problems = [_Id(q) for q in meta["question_ids"]]
            table = order_table(store.read(), problems, heads)
            expected = len(meta.get("question_ids", [])) * (len(meta.get("heads", [])) + 1)
            return cls(table, meta, complete=not expected or len(table) >= expected)
        if not path.is_file():
            raise FileNotFoundError(f"no sweep result at {path}")
        arrow = pq.read_table(path)
        extra = (arrow.schema.metadata or {}).get(b"sprint_lab")
        info = json.loads(extra) if extra else {}
        return cls(arrow.to_pandas(), info.get("meta", {}), complete=info.get("complete", True))

    def equals(self, other: SweepResult) -> bool:
        """Same rows, same values (the settings are not compared)."""
        a = self.table.reset_index(drop=True)
        b = other.table.reset_index(drop=True)
        return a.shape == b.shape and bool(a.equals(b[a.columns]))


class _Id:
    def __init__(self, id: str) -> None:
        self.id = id
