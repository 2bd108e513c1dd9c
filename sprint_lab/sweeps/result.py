"""Sweep results as a tidy table, with honest paired statistics.

One row per (question, configuration) (the schema: :mod:`sprint_lab.sweeps.rows`).
:class:`SweepResult` owns the views every later stage reads from that table: the
[question x configuration] correctness pivot (:meth:`SweepResult.correctness`), one head's
per-question outcomes (:meth:`SweepResult.outcomes`) and the per-head deltas, and it is the one
adapter that reads a result, an object with a ``.table`` or a bare DataFrame
(:meth:`SweepResult.coerce`; :meth:`SweepResult.deltas_of` for deltas tables).

``deltas`` compares each pruned head with the unpruned baseline *on the same questions*: the
accuracy delta, a paired bootstrap 95% interval, an exact McNemar p-value on the discordant
pairs, and Benjamini-Hochberg q-values across heads, so a heat map of many heads does not mistake
noise for a finding.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from sprint_lab.core.configs import Candidate, Config, candidate_from_label
from sprint_lab.core.heads import (
    BASELINE,
    Head,
    config_label,
    is_baseline,
    is_placebo,
    normalise_label,
)
from sprint_lab.sweeps.rows import (
    COLUMNS,
    DELTA_COLUMNS,
    OUTCOME_COLUMNS,
    REQUIRED_COLUMNS,
    config_labels,
    config_position,
    order_table,
)
from sprint_lab.sweeps.stats import (
    benjamini_hochberg,
    mcnemar_exact,
    mcnemar_power,
    minimum_detectable_effect,
    paired_bootstrap_ci,
    required_questions,
)
from sprint_lab.sweeps.store import FINGERPRINT, CorruptStoreError, SweepExistsError, SweepStore

if TYPE_CHECKING:
    from sprint_lab.tasks.problems import Problem

__all__ = [
    "BASELINE",
    "COLUMNS",
    "DELTA_COLUMNS",
    "OUTCOME_COLUMNS",
    "SweepResult",
    "planned_deltas",
]


def _rows(table: pd.DataFrame, keep: Any) -> pd.DataFrame:
    """The rows of ``table`` where the boolean ``keep`` is true (typed as a DataFrame)."""
    return cast(pd.DataFrame, table.loc[keep])


def _paired_delta(
    config: str, pruned: pd.Series, base: pd.Series, n_boot: int, level: float, seed: int
) -> dict[str, Any]:
    """One head's paired comparison with the baseline on the questions both answered."""
    common = pruned.index.intersection(base.index)
    p_arr = pruned.loc[common].to_numpy(bool)
    b_arr = base.loc[common].to_numpy(bool)
    if len(common):
        low, high = paired_bootstrap_ci(b_arr, p_arr, n_boot=n_boot, level=level, seed=seed)
        p_value = mcnemar_exact(b_arr, p_arr)
    else:
        low = high = p_value = float("nan")
    layer, head = config_position(config)
    return {
        "config": config,
        "layer": layer,
        "head": head,
        "n": len(common),
        "accuracy": p_arr.mean() if len(common) else float("nan"),
        "baseline_accuracy": b_arr.mean() if len(common) else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "discordance": float((p_arr != b_arr).mean()) if len(common) else float("nan"),
    }


def _with_q_and_mde(frame: pd.DataFrame, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Add BH q-values and the minimum detectable gain, the heads and the placebos apart.

    The heads are one BH family and placebos another, so a placebo never changes a head's q.
    The MDE is each row's at its ``n``, for the heads' median discordance.
    """
    placebo = frame["config"].map(is_placebo).to_numpy(bool)
    q = np.full(len(frame), np.nan)
    for members in (~placebo, placebo):
        if members.any():
            q[members] = benjamini_hochberg(frame.loc[members, "p_value"].to_numpy(float))
    heads = frame.loc[~placebo, "discordance"]
    psi = float(heads.median()) if heads.notna().any() else 0.0
    m = max(1, int((~placebo).sum()))
    by_n = {
        n: minimum_detectable_effect(int(n), psi, n_heads=m, alpha=alpha, power=power)
        for n in frame["n"].unique()
    }
    mde = [by_n[n] for n in frame["n"]]
    return frame.assign(q_value=q, mde=np.asarray(mde, dtype=float))


def _correct_by_question(rows: pd.DataFrame) -> pd.Series:
    """The ``correct`` column indexed by ``question_id``."""
    return pd.Series(rows["correct"].to_numpy(), index=pd.Index(rows["question_id"]))


def _one_spelling(text: str) -> str:
    """A configuration label in its one spelling (placebos keep theirs)."""
    return text.strip() if is_placebo(text) else normalise_label(text)


def _normalise_configs(configs: pd.Series) -> pd.Series:
    """Configuration labels in their one spelling (``"l0h1"`` -> ``"L0H1"``)."""
    labels = {text: _one_spelling(text) for text in configs.astype(str).unique()}
    return configs.astype(str).map(labels)


class SweepResult:
    """The rows of a sweep, plus the settings it ran with.

    Attributes:
        table: tidy DataFrame: ``question_id``, ``config`` (``"none"`` or ``"L3H5"``), ``layer``,
            ``head`` (-1 for the baseline), ``completion``, ``extracted``, ``correct``,
            ``n_tokens``, ``finish_reason``, ``extractor``, and ``level``/``subject`` when known.
        meta: the sweep's settings (model, dtype, prompt, max_new_tokens, heads, question ids).
        complete: ``False`` when the sweep was cancelled before every pair was done.

    Example:
        >>> result = sl.sweep(model, problems[:2], ["L0H1"], max_new_tokens=4, progress=False)
        >>> result
        SweepResult(4 rows: 2 questions x 2 configurations)
        >>> list(result.deltas()["config"])
        ['L0H1']
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

    @classmethod
    def coerce(cls, sweep: Any) -> SweepResult:
        """Read a ``SweepResult``, an object with a ``.table`` or a tidy DataFrame as a result.

        A bare table needs only :data:`REQUIRED_COLUMNS`; missing ``layer``/``head`` columns are
        derived from ``config``.

        Raises:
            ValueError: if it is none of these, or lacks one of :data:`REQUIRED_COLUMNS`.

        Example:
            >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
            ...                   "correct": [True, False]})
            >>> SweepResult.coerce(t).table[["layer", "head"]].values.tolist()
            [[-1, -1], [0, 1]]
        """
        if isinstance(sweep, SweepResult):
            return sweep
        table = getattr(sweep, "table", sweep)
        if not isinstance(table, pd.DataFrame):
            raise ValueError(
                f"expected a sweep result (with .table) or a DataFrame, got {type(sweep).__name__}"
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(
                f"sweep table is missing columns {missing}; it has {list(table.columns)}"
            )
        if not {"layer", "head"} <= set(table.columns):
            positions = [config_position(str(c)) for c in table["config"]]
            table = table.assign(
                layer=[layer for layer, _ in positions], head=[head for _, head in positions]
            )
        meta = getattr(sweep, "meta", None)
        return cls(table, meta, complete=getattr(sweep, "complete", True))

    @staticmethod
    def deltas_of(deltas: Any, by: str | None = None) -> pd.DataFrame:
        """A deltas table given either as one (a DataFrame) or as a result (``.deltas(by=)``).

        Raises:
            TypeError: for anything else.

        Example:
            >>> d = pd.DataFrame({"layer": [0], "head": [1], "delta": [0.5]})
            >>> SweepResult.deltas_of(d) is d
            True
        """
        if isinstance(deltas, pd.DataFrame):
            return deltas
        if not callable(getattr(deltas, "deltas", None)):
            raise TypeError(
                "expected a deltas DataFrame or an object with a .deltas(by=...) method "
                f"(e.g. a SweepResult), got {type(deltas).__name__}"
            )
        frame = deltas.deltas(by=by)
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f".deltas() returned {type(frame).__name__}, expected a DataFrame")
        return frame

    def __repr__(self) -> str:
        n_q = self.table["question_id"].nunique() if len(self.table) else 0
        n_c = self.table["config"].nunique() if len(self.table) else 0
        return f"SweepResult({len(self.table)} rows: {n_q} questions x {n_c} configurations)"

    def __len__(self) -> int:
        return len(self.table)

    @property
    def heads(self) -> list[Candidate]:
        """The pruning candidates present in the table, in table order (placebos left out): a
        ``Head`` for each single zeroed head, a :class:`~sprint_lab.core.configs.Config` for
        head sets, whole layers and other ablation kinds."""
        return [candidate_from_label(c, self._n_heads()) for c in self.configs]

    @property
    def configs(self) -> list[str]:
        """The labels of the pruned configurations present, in table order (no placebos)."""
        present = self.table["config"] if "config" in self.table.columns else []
        return [str(c) for c in dict.fromkeys(present) if not is_baseline(c) and not is_placebo(c)]

    def _n_heads(self) -> int | None:
        value = self.meta.get("n_heads")
        return int(value) if value is not None else None

    @property
    def placebos(self) -> list[str]:
        """The placebo configurations present (``"none~1"``, ...), in table order."""
        present = self.table["config"] if "config" in self.table.columns else []
        return [str(c) for c in dict.fromkeys(present) if is_placebo(c)]

    @property
    def layers(self) -> list[int]:
        """The swept layers, ascending."""
        layers: set[int] = set()
        for candidate in self.heads:
            layers.update([candidate.layer] if isinstance(candidate, Head) else candidate.layers)
        return sorted(layers)

    def correctness(
        self, configs: Sequence[str | Head] | None = None, *, complete: bool = True
    ) -> pd.DataFrame:
        """The [question x configuration] 0/1 correctness pivot.

        Args:
            configs: the columns, in this order (labels or heads); default: the baseline (when
                present), then every head in table order.
            complete: keep only questions answered under every column (a bool frame); with
                ``False`` missing answers are NaN (a float frame of 0/1/NaN).

        Returns:
            A DataFrame indexed by ``question_id`` (as str, sorted) with one column per label.

        Raises:
            ValueError: for unreadable labels, missing ``correct`` values, configurations with
                no rows, or repeated (question, configuration) rows.

        Example:
            >>> t = pd.DataFrame({"question_id": ["a", "a", "b"], "correct": [True, False, True],
            ...                   "config": ["none", "L0H1", "none"]})
            >>> SweepResult.coerce(t).correctness().to_dict("index")
            {'a': {'none': True, 'L0H1': False}}
            >>> SweepResult.coerce(t).correctness(complete=False)["L0H1"].tolist()
            [0.0, nan]
        """
        rows = self.table.loc[:, list(REQUIRED_COLUMNS)].copy()
        rows["config"] = _normalise_configs(rows["config"])
        present = list(dict.fromkeys(rows["config"]))
        if configs is None:  # the baseline, then the heads (placebos only when asked for)
            wanted = [c for c in present if is_baseline(c)] + [
                c for c in present if not is_baseline(c) and not is_placebo(c)
            ]
        else:
            wanted = [config_label([c]) if isinstance(c, Head) else str(c) for c in configs]
            wanted = [_one_spelling(c) for c in wanted]
        absent = [label for label in wanted if label not in present]
        if absent:
            raise ValueError(f"the sweep has no rows for heads {absent}")
        rows = rows[rows["config"].isin(wanted)]
        if rows["correct"].isna().any():
            raise ValueError("sweep column 'correct' has missing values")
        rows["question_id"] = rows["question_id"].astype(str)
        repeated = rows.duplicated(["question_id", "config"])
        if repeated.any():
            example = rows.loc[repeated, ["question_id", "config"]].iloc[0].tolist()
            raise ValueError(f"sweep has repeated (question, configuration) rows, e.g. {example}")
        matrix = rows.pivot(index="question_id", columns="config", values="correct")
        matrix = matrix.reindex(columns=wanted)
        matrix.columns.name = None
        if not complete:
            return matrix.astype(float)
        return matrix[matrix.notna().all(axis=1)].astype(bool)

    def outcomes(
        self, config: str | Head, problems: Sequence[Problem] | None = None
    ) -> pd.DataFrame:
        """One row per question: did the baseline and ``config`` get it right, and what did each
        answer?

        Args:
            config: the pruned configuration (``Head`` or ``"L3H5"``).
            problems: optional problems (``.id``, ``.question``, ``.answer``) for the question
                text and gold answer.

        Returns:
            Columns :data:`OUTCOME_COLUMNS`; ``changed`` is True where correctness differs.
            Questions follow the sweep's order; a question missing the baseline has NaN there.

        Raises:
            ValueError: when the sweep has no rows for ``config``.

        Example:
            >>> t = pd.DataFrame({"question_id": ["a", "a"], "config": ["none", "L0H1"],
            ...                   "correct": [True, False], "extracted": ["4", "5"]})
            >>> out = SweepResult.coerce(t).outcomes("L0H1")
            >>> out[["baseline_correct", "pruned_correct", "changed"]].values.tolist()
            [[True, False, True]]
        """
        table = self.table
        label = config.label if isinstance(config, Head) else _one_spelling(config)
        pruned = table[table["config"] == label]
        if pruned.empty:
            raise ValueError(f"the sweep has no rows for {label}")
        base = table[table["config"] == BASELINE].set_index("question_id")
        by_id = {str(p.id): p for p in problems or ()}
        rows = []
        for _, row in pruned.iterrows():
            qid = row["question_id"]
            has_base = qid in base.index
            problem = by_id.get(str(qid))
            base_ok = bool(base.at[qid, "correct"]) if has_base else np.nan
            rows.append(
                {
                    "question_id": qid,
                    "question": getattr(problem, "question", None),
                    "gold": getattr(problem, "answer", None),
                    "baseline_correct": base_ok,
                    "pruned_correct": bool(row["correct"]),
                    "baseline_extracted": base.at[qid, "extracted"] if has_base else None,
                    "pruned_extracted": row.get("extracted"),
                    "changed": has_base and base_ok != bool(row["correct"]),
                }
            )
        return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)

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
            ``baseline_accuracy``, ``delta``, ``ci_low``, ``ci_high``, ``p_value``, ``q_value``,
            ``discordance`` (share of questions whose verdict flips) and ``mde``: the smallest
            gain this many questions detect with 80% power after BH across the heads, at the
            sweep's median discordance (:func:`~sprint_lab.sweeps.stats.minimum_detectable_effect`;
            NaN when no gain is detectable).

        Raises:
            ValueError: when the table has no baseline rows, or ``by`` is not a column.
        """
        table = self.table
        columns = DELTA_COLUMNS + ([by] if by else [])
        if table.empty:
            return pd.DataFrame(columns=columns)
        if by is not None and by not in table.columns:
            raise ValueError(f"cannot break down by {by!r}: the sweep has no such column")
        base = _correct_by_question(_rows(table, table["config"] == BASELINE))
        if base.empty:
            raise ValueError(f"the sweep has no baseline ({BASELINE!r}) rows to compare against")
        groups = [(None, table)] if by is None else list(table.groupby(by, sort=True))
        frames = []
        for group, part in groups:
            pruned = part[part["config"] != BASELINE].groupby("config", sort=False)
            frame = pd.DataFrame(
                [
                    _paired_delta(
                        str(config),
                        _correct_by_question(cast(pd.DataFrame, rows)),
                        base,
                        n_boot,
                        level,
                        seed,
                    )
                    for config, rows in pruned
                ]
            )
            if frame.empty:
                continue
            frame["delta"] = frame["accuracy"] - frame["baseline_accuracy"]
            frame = _with_q_and_mde(frame)
            if by is not None:
                frame[by] = group[0] if isinstance(group, tuple) else group
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=columns)
        out = cast(pd.DataFrame, pd.concat(frames, ignore_index=True)[columns])
        sort = ([by] if by else []) + ["layer", "head"]
        return out.sort_values(sort, kind="stable").reset_index(drop=True)

    def top_heads(self, n: int = 10, *, alpha: float | None = None) -> pd.DataFrame:
        """Heads whose pruning helps most (largest delta, then smallest q); no placebos."""
        deltas = self.deltas()
        deltas = _rows(deltas, ~deltas["config"].map(is_placebo).astype(bool))
        if alpha is not None:
            deltas = _rows(deltas, deltas["q_value"] <= alpha)
        return deltas.sort_values(["delta", "q_value"], ascending=[False, True]).head(n)

    def placebo_check(self) -> pd.DataFrame:
        """Each placebo against the baseline: how many answers differ, and the accuracy delta.

        A placebo prunes nothing, so every answer that differs from the baseline's was changed by
        the arithmetic of batching alone (which rows shared its batch, padding, rows leaving);
        with batch-invariant generation ``mismatched`` is 0 and so is ``delta``.

        Returns:
            One row per placebo: ``config``, ``n`` (questions both answered), ``mismatched``
            (completions that differ from the baseline's), ``delta``.

        Example:
            >>> t = pd.DataFrame({"question_id": ["a", "b"] * 2, "correct": [True, False] * 2,
            ...                   "config": ["none", "none", "none~1", "none~1"],
            ...                   "completion": ["4", "7", "4", "8"]})
            >>> SweepResult.coerce(t).placebo_check().to_dict("records")
            [{'config': 'none~1', 'n': 2, 'mismatched': 1, 'delta': 0.0}]
        """
        columns = ["config", "n", "mismatched", "delta"]
        table = self.table
        base = _rows(table, table["config"] == BASELINE).set_index("question_id")
        records = []
        for label in self.placebos:
            rows = _rows(table, table["config"] == label).set_index("question_id")
            common = rows.index.intersection(base.index)
            mismatched = -1  # unknown without completions
            if "completion" in table.columns:
                differ = rows.loc[common, "completion"] != base.loc[common, "completion"]
                mismatched = int(differ.sum())
            records.append(
                {
                    "config": label,
                    "n": len(common),
                    "mismatched": mismatched,
                    "delta": float(
                        rows.loc[common, "correct"].astype(float).mean()
                        - base.loc[common, "correct"].astype(float).mean()
                    )
                    if len(common)
                    else float("nan"),
                }
            )
        return pd.DataFrame(records, columns=columns)

    def power(self, delta: float = 0.05, *, alpha: float = 0.05, power: float = 0.8) -> pd.Series:
        """What this sweep can detect: power for a gain of ``delta``, its MDE, questions needed.

        Uses the sweep's questions, baseline accuracy, number of heads (the BH family) and
        median measured discordance (at least ``|delta|``), with the exact McNemar power of
        :mod:`~sprint_lab.sweeps.stats`.

        Returns:
            A Series: ``n_questions``, ``n_heads``, ``baseline_accuracy``, ``discordance``,
            ``delta``, ``power``, ``mde`` and ``required_questions`` (for ``delta``).

        Example:
            >>> ids = [f"q{i}" for i in range(40)]
            >>> t = pd.DataFrame({"question_id": ids * 2, "config": ["none"] * 40 + ["L0H1"] * 40,
            ...                   "correct": [i % 3 == 0 for i in range(80)]})
            >>> report = SweepResult.coerce(t).power(0.05)
            >>> report[["n_questions", "n_heads", "delta"]].tolist()
            [40.0, 1.0, 0.05]
            >>> bool(report["power"] < 0.2 and report["required_questions"] > 40)
            True
        """
        deltas = self.deltas(n_boot=1)
        deltas = _rows(deltas, ~deltas["config"].map(is_placebo).astype(bool))
        base = _rows(self.table, self.table["config"] == BASELINE)
        n = len(pd.unique(base["question_id"].to_numpy()))
        accuracy = float(np.mean(base["correct"].to_numpy(float))) if n else float("nan")
        flips = deltas["discordance"].to_numpy(float)
        measured = float(np.median(flips)) if len(flips) else float("nan")
        psi = max(measured if measured == measured else 0.0, abs(delta))
        m = max(1, len(deltas))
        try:
            needed = float(
                required_questions(delta, accuracy, n_heads=m, alpha=alpha, power=power,
                                   discordance=psi)
            )  # fmt: skip
        except ValueError:
            needed = float("nan")
        return pd.Series(
            {
                "n_questions": n,
                "n_heads": m,
                "baseline_accuracy": accuracy,
                "discordance": psi,
                "delta": delta,
                "power": mcnemar_power(n, delta, psi, alpha / m),
                "mde": minimum_detectable_effect(n, psi, n_heads=m, alpha=alpha, power=power),
                "required_questions": needed,
            }
        )

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the table to a Parquet file (``.parquet``) or a store folder; return the path.

        The settings travel in the Parquet schema metadata (or the store's ``meta.json``), so
        :meth:`load` restores both. Saving never destroys: the new file or folder is written
        under a temporary name and swapped in only once complete, so a failed write keeps what
        was there; and a file or folder holding *another* sweep (other settings, or unreadable)
        is replaced only with ``overwrite=True``.

        Raises:
            SweepExistsError: ``path`` holds a different sweep and ``overwrite`` is off.

        Example:
            >>> import tempfile
            >>> t = pd.DataFrame({"question_id": ["a"], "config": ["none"], "correct": [True]})
            >>> path = SweepResult.coerce(t).save(Path(tempfile.mkdtemp()) / "sweep.parquet")
            >>> SweepResult.load(path).table["correct"].tolist()
            [True]
        """
        path = Path(path)
        meta = dict(self.meta)
        if FINGERPRINT not in self.table.columns:
            meta.pop("fingerprints", None)  # rows without fingerprints cannot be matched to them
        if path.suffix != ".parquet":
            store = SweepStore(path)
            if path.is_dir() and (store.has_rows() or store.meta_path.exists()):
                self._refuse_other_sweep(path, lambda: store.read_meta(), overwrite)
            store.replace_with(self.table, meta)
            return path
        if path.exists():
            self._refuse_other_sweep(path, lambda: _parquet_info(path)["meta"], overwrite)
        _write_parquet(path, self.table, {"meta": meta, "complete": self.complete})
        return path

    def _refuse_other_sweep(self, path: Path, stored_meta: Any, overwrite: bool) -> None:
        """Raise unless ``path`` holds this sweep (same settings fingerprint) or overwriting."""
        if overwrite:
            return
        try:
            old = stored_meta()
        except Exception as error:  # unreadable: it is not known to be this sweep
            old, reason = None, f"it cannot be read ({error})"
        else:
            reason = "it holds a sweep with other settings"
        ours = self.meta.get("settings_fingerprint")
        if old is not None and ours is not None and old.get("settings_fingerprint") == ours:
            return
        raise SweepExistsError(
            f"{path} already exists and {reason}; pass overwrite=True to replace it, or save "
            "to another path"
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepResult:
        """Read a result saved with :meth:`save`, or a sweep's ``out=`` folder.

        Raises:
            FileNotFoundError: nothing is stored at ``path``.
            CorruptStoreError: a part, the file or ``meta.json`` is damaged (named).
        """
        path = Path(path)
        if path.is_dir():
            return cls._load_store(SweepStore(path))
        if not path.is_file():
            raise FileNotFoundError(f"no sweep result at {path}")
        info = _parquet_info(path)
        try:
            table = pd.read_parquet(path)
        except Exception as error:
            raise CorruptStoreError(path, f"not readable as Parquet ({error})") from None
        return cls(table, info.get("meta", {}), complete=info.get("complete", True))

    @classmethod
    def _load_store(cls, store: SweepStore) -> SweepResult:
        """The rows of the store's plan (``meta.json``); ``complete`` when every pair is there."""
        if not store.has_rows():
            raise FileNotFoundError(f"{store.path} holds no sweep rows (part-*.parquet)")
        meta = store.read_meta()
        n_heads = meta.get("n_heads")
        heads = [candidate_from_label(h, n_heads) for h in meta.get("heads", [])]
        question_ids = list(meta.get("question_ids", []))
        if not question_ids:  # no plan recorded: every stored row
            return cls(order_table(store.read()), meta, complete=True)
        configs = config_labels(heads, int(meta.get("placebos", 0)))
        expected = meta.get("fingerprints")
        table = store.read(expected, configs)
        table = _rows(table, table["question_id"].isin(question_ids)) if len(table) else table
        table = order_table(table, [_Id(q) for q in question_ids], heads)
        return cls(table, meta, complete=len(table) == len(question_ids) * len(configs))

    def equals(self, other: SweepResult) -> bool:
        """Same rows, same values (the settings are not compared)."""
        a = self.table.reset_index(drop=True)
        b = other.table.reset_index(drop=True)
        return a.shape == b.shape and bool(a.equals(b[a.columns]))


def _parquet_info(path: Path) -> dict[str, Any]:
    """The ``sprint_lab`` schema metadata of a saved result file (``{}`` when absent)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises OSError, ArrowInvalid, thrift errors
        raise CorruptStoreError(path, f"not readable as Parquet ({error})") from None
    extra = (schema.metadata or {}).get(b"sprint_lab")
    try:
        return json.loads(extra) if extra else {}
    except ValueError as error:
        raise CorruptStoreError(path, f"its sprint_lab metadata is not JSON ({error})") from None


def _write_parquet(path: Path, table: pd.DataFrame, info: dict[str, Any]) -> None:
    """Write ``table`` with ``info`` in the schema metadata: temporary file, then rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_meta = dict(arrow.schema.metadata or {})
    schema_meta[b"sprint_lab"] = json.dumps(info, default=str).encode()
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        pq.write_table(arrow.replace_schema_metadata(schema_meta), tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Id:
    def __init__(self, id: str) -> None:
        self.id = id


def planned_deltas(
    result: SweepResult | None, heads: Sequence[Candidate | str], **deltas_kwargs: Any
) -> pd.DataFrame:
    """Per-head deltas with one row per planned head, NaN where the sweep has no rows yet.

    A partial sweep (a run in progress, or one cancelled) covers some heads on some questions;
    its deltas are computed on the questions done so far (``n`` says how many). Heads that have
    no rows, or a sweep whose baseline has not started, keep their row with NaN values so a
    heat map drawn from this table always has the full layers x heads grid.

    Args:
        result: a :class:`~sprint_lab.sweeps.result.SweepResult` (possibly partial) or ``None``.
        heads: every head the sweep will cover.
        **deltas_kwargs: passed to :meth:`SweepResult.deltas` (e.g. ``n_boot``).

    Returns:
        A DataFrame with the columns of ``SweepResult.deltas()``, in ``heads`` order.

    Example:
        >>> planned_deltas(None, ["L0H1", "L2H0"])[["config", "layer", "head", "n"]].to_dict("list")
        {'config': ['L0H1', 'L2H0'], 'layer': [0, 2], 'head': [1, 0], 'n': [0, 0]}
    """
    labels = [h.label if isinstance(h, Head | Config) else normalise_label(h) for h in heads]
    positions = [config_position(label) for label in labels]
    plan = pd.DataFrame(
        {
            "config": labels,
            "layer": [layer for layer, _ in positions],
            "head": [head for _, head in positions],
        }
    )
    table = getattr(result, "table", None)
    deltas = pd.DataFrame(columns=DELTA_COLUMNS)
    if result is not None and table is not None and (table["config"] == BASELINE).any():
        deltas = result.deltas(**deltas_kwargs)
    values = deltas.drop(columns=["layer", "head"]).set_index("config")
    merged = plan.join(values, on="config")
    merged["n"] = merged["n"].fillna(0).astype(int)
    for column in DELTA_COLUMNS:
        if column not in ("config", "layer", "head", "n"):
            merged[column] = merged[column].astype(float)
    return cast(pd.DataFrame, merged[DELTA_COLUMNS]).reset_index(drop=True)
