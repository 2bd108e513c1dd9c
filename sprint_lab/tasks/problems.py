"""Math word problems: one record type and loaders for GSM8K, MATH500, MATH and our arith set.

Every benchmark is turned into a list of :class:`Problem` records with a stable ``id`` and the gold
final answer as a string, so that prompting, generation and grading code never needs to know
where a question came from. Data is read from local JSON Lines files (``data_dir`` or the
``SPRINT_LAB_DATA`` environment variable) or, failing that, from the Hugging Face hub.

Example:
    >>> from sprint_lab.tasks.problems import load_problems
    >>> probs = load_problems("arith", limit=5, seed=0)
    >>> len(probs), probs[0].source, probs[0].task
    (5, 'arith', 'gsm8k')
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "DATASET_NAMES",
    "DatasetUnavailableError",
    "Problem",
    "ProblemFormatError",
    "load_problems",
    "problems_to_frame",
    "stratified_subset",
]

#: Dataset names accepted by :func:`load_problems` (besides a path to a ``.jsonl`` file).
DATASET_NAMES: tuple[str, ...] = ("gsm8k", "math500", "math", "arith")

_SPLITS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("train", "test"),
    "math500": ("test",),
    "math": ("train", "test"),
    "arith": ("train", "test"),
}

#: Sources whose answers are LaTeX and are graded with math-verify.
_MATH_SOURCES = frozenset({"math500", "math"})

#: Hub dataset ids used when no local data directory is configured.
HUB_GSM8K = ("openai/gsm8k", "main")
HUB_MATH500 = "HuggingFaceH4/MATH-500"
HUB_MATH = "EleutherAI/hendrycks_math"
HUB_MATH_CONFIGS: tuple[str, ...] = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

_ENV_DATA = "SPRINT_LAB_DATA"
_TRUE = frozenset({"1", "true", "yes", "on"})


class ProblemFormatError(ValueError):
    """A problem file or dataset name cannot be turned into :class:`Problem` records.

    The message names the file, the 1-based line number and the offending field when they apply.
    """


class DatasetUnavailableError(RuntimeError):
    """The requested data is neither in the local data directory nor reachable on the hub."""


@dataclass(frozen=True)
class Problem:
    """One math question with its gold final answer.

    Attributes:
        id: Stable identifier, unique within its dataset (e.g. ``"gsm8k-test-00007"``).
        question: The question text shown to the model.
        answer: Gold final answer as a string (a number for GSM8K, bare LaTeX for MATH).
        solution: Worked reference solution, if the dataset has one.
        level: Difficulty level (MATH: 1-5, arith: 1-5), if known.
        subject: Subject or template name, if known.
        source: Where the problem came from: ``"gsm8k"``, ``"math500"``, ``"math"``, ``"arith"``
            or ``"custom"``.

    Example:
        >>> Problem(id="p1", question="What is 2+3?", answer="5").task
        'gsm8k'
        >>> Problem(id="p2", question="Simplify $\\\\frac{2}{4}$.", answer="\\\\frac12",
        ...         source="math500").task
        'math'
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    level: int | None = None
    subject: str | None = None
    source: str = "custom"

    @property
    def task(self) -> str:
        """Grading task: ``"math"`` (LaTeX, math-verify) or ``"gsm8k"`` (numeric comparison)."""
        return "math" if self.source in _MATH_SOURCES else "gsm8k"

    def to_dict(self) -> dict[str, Any]:
        """Return the fields plus ``task`` as a plain dict.

        Example:
            >>> Problem(id="p1", question="1+1?", answer="2").to_dict()["task"]
            'gsm8k'
        """
        return {**asdict(self), "task": self.task}


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load_problems(
    name: str | os.PathLike[str],
    split: str = "test",
    *,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[Problem]:
    """Load a benchmark (or a JSONL file) as a list of :class:`Problem`.

    Sources by ``name``:

    - ``"gsm8k"`` (splits ``train``/``test``): gold = text after ``####`` with commas removed,
      ``solution`` = the worked answer, ids ``gsm8k-{split}-{index:05d}`` (file order).
    - ``"math500"`` (split ``test`` only): the 500 PRM800K/HuggingFaceH4 problems; id =
      ``unique_id``.
    - ``"math"`` (splits ``train``/``test``): the full MATH dataset. Locally it is read from
      ``math/{split}.jsonl`` in the data directory (PRM800K ``math_splits`` format: ``problem``,
      ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``). From the hub it is
      ``EleutherAI/hendrycks_math``: its seven subject configs concatenated in alphabetical
      order (7,500 train / 5,000 test); the gold answer is the last ``\\boxed{}`` of the
      solution and ids are ``math-{split}-{config}-{index:05d}``. The hub train split is the
      original Hendrycks train split, so it is disjoint from MATH500 (which was drawn from the
      test split); it is smaller than PRM800K's 12,000-problem train split used by SPRINT.
    - ``"arith"``: our offline generated word problems (see :mod:`sprint_lab.tasks.arith`).
    - a path to a ``.jsonl`` file whose rows have ``question`` (or ``problem``) and ``answer``,
      optionally ``id``, ``solution``, ``level``, ``subject``, ``source``; ids default to
      ``{file stem}-{index:05d}``.

    Local data (``data_dir``, else the ``SPRINT_LAB_DATA`` environment variable) is used when
    set: ``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl``, ``math/{train,test}.jsonl``.
    Otherwise the hub is used through ``datasets.load_dataset`` (respecting ``HF_HUB_OFFLINE``).

    Args:
        name: Dataset name (see :data:`DATASET_NAMES`) or path to a ``.jsonl`` file.
        split: ``"train"`` or ``"test"`` (ignored for JSONL files).
        limit: If given, return a seeded random subset of this size, stratified by level when
            levels exist (see :func:`stratified_subset`), in original order. Ids are those of
            the full set.
        seed: Seed of the subset draw.
        data_dir: Folder holding the local JSONL files; overrides ``SPRINT_LAB_DATA``.

    Returns:
        The problems, in file order.

    Raises:
        ProblemFormatError: Unknown name or split, malformed JSON line, missing or invalid field.
        DatasetUnavailableError: Neither local files nor the hub can provide the data.
        FileNotFoundError: ``name`` looks like a JSONL path that does not exist.

    Example:
        >>> probs = load_problems("arith", "test", limit=10, seed=1)
        >>> sorted({p.level for p in probs})
        [1, 2, 3, 4, 5]
    """
    problems = _load_all(name, split, data_dir)
    if limit is None:
        return problems
    return stratified_subset(problems, limit, seed=seed)


def stratified_subset(problems: Sequence[Problem], limit: int, *, seed: int = 0) -> list[Problem]:
    """Draw a seeded random subset, stratified by ``level``, kept in original order.

    Each level (``None`` counts as a level of its own) gets a share of ``limit`` proportional to
    its size; leftover slots go to the levels with the largest fractional remainders (ties: the
    lower level first). Within a level, members are drawn with ``random.Random(seed)``.
    Without any levels this is a plain seeded sample.

    Args:
        problems: The full set.
        limit: Number of problems wanted; at least the full size returns everything.
        seed: Seed of the draw.

    Returns:
        The chosen problems, in the order they have in ``problems``.

    Raises:
        ValueError: ``limit`` is negative.

    Example:
        >>> ps = [Problem(id=str(i), question="q", answer="1", level=1 + i % 2) for i in range(10)]
        >>> [p.level for p in stratified_subset(ps, 4, seed=0)].count(1)
        2
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"limit must be an int or None, got {limit!r}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    n = len(problems)
    if limit >= n:
        return list(problems)
    rng = random.Random(seed)
    strata: dict[int | None, list[int]] = {}
    for i, p in enumerate(problems):
        strata.setdefault(p.level, []).append(i)
    if len(strata) == 1:
        chosen = rng.sample(range(n), limit)
    else:
        keys = sorted(strata, key=lambda k: (k is None, k if k is not None else 0))
        exact = {k: limit * len(strata[k]) / n for k in keys}
        quota = {k: int(exact[k]) for k in keys}
        leftover = limit - sum(quota.values())
        by_remainder = sorted(keys, key=lambda k: -(exact[k] - quota[k]))  # stable: level order
        for k in by_remainder[:leftover]:
            quota[k] += 1
        chosen = []
        for k in keys:
            chosen.extend(rng.sample(strata[k], quota[k]))
    return [problems[i] for i in sorted(chosen)]


def problems_to_frame(problems: Sequence[Problem]) -> pd.DataFrame:
    """One row per problem with columns ``id, question, answer, solution, level, subject,
    source, task``.

    Example:
        >>> problems_to_frame([Problem(id="a", question="1+1?", answer="2")]).loc[0, "answer"]
        '2'
    """
    columns = ["id", "question", "answer", "solution", "level", "subject", "source", "task"]
    frame = pd.DataFrame([p.to_dict() for p in problems], columns=columns)
    frame["level"] = frame["level"].astype("Int64")
    return frame


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def _load_all(
    name: str | os.PathLike[str], split: str, data_dir: str | os.PathLike[str] | None
) -> list[Problem]:
    if isinstance(name, os.PathLike) or (isinstance(name, str) and _looks_like_path(name)):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"Problem file {str(path)!r} does not exist")
        return _load_jsonl_generic(path)
    if not isinstance(name, str) or name not in _SPLITS:
        valid = ", ".join(repr(n) for n in DATASET_NAMES)
        raise ProblemFormatError(
            f"Unknown dataset name {name!r}: expected one of {valid}, or a path to a .jsonl file"
        )
    if split not in _SPLITS[name]:
        raise ProblemFormatError(
            f"Dataset {name!r} has no split {split!r}; valid splits: {', '.join(_SPLITS[name])}"
        )
    if name == "arith":
        from sprint_lab.tasks.arith import arith_split

        return arith_split(split)
    root = _data_root(data_dir)
    if root is not None:
        return _load_local(name, split, root)
    return _load_hub(name, split)


def _looks_like_path(name: str) -> bool:
    return name.endswith((".jsonl", ".json")) or "/" in name or os.sep in name


def _data_root(data_dir: str | os.PathLike[str] | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(_ENV_DATA)
    return Path(env) if env else None


def _load_local(name: str, split: str, root: Path) -> list[Problem]:
    folder = {"gsm8k": "gsm8k", "math500": "math500", "math": "math"}[name]
    path = root / folder / f"{split}.jsonl"
    if not path.is_file():
        hint = ""
        if name == "math":
            hint = (
                " The MATH splits are not shipped with the shared data: put PRM800K's"
                " math_splits/{train,test}.jsonl there, or unset SPRINT_LAB_DATA / data_dir to"
                f" load {HUB_MATH} from the Hugging Face hub."
            )
        raise DatasetUnavailableError(
            f"{name!r} split {split!r}: expected local file {str(path)!r} (data directory from"
            f" data_dir or ${_ENV_DATA}), but it does not exist.{hint}"
        )
    rows = _read_jsonl(path)
    if name == "gsm8k":
        return [_gsm8k_problem(rec, split, i, path, line) for i, (line, rec) in enumerate(rows)]
    source = "math500" if name == "math500" else "math"
    return [_math_problem(rec, source, path, line) for line, rec in rows]


# --------------------------------------------------------------------------------------------
# Record conversion
# --------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(1-based line number, object)`` for each non-blank line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ProblemFormatError(
                    f"{path}: line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
                ) from exc
            if not isinstance(rec, dict):
                raise ProblemFormatError(
                    f"{path}: line {lineno}: expected a JSON object, got {type(rec).__name__}"
                )
            rows.append((lineno, rec))
    return rows


def _where(path: Path | str, line: int | None) -> str:
    return f"{path}: line {line}" if line is not None else f"{path}"


def _field(
    rec: Mapping[str, Any],
    names: str | tuple[str, ...],
    path: Path | str,
    line: int | None,
    *,
    required: bool = True,
) -> str | None:
    """Fetch a text field (numbers are converted to text); the first present name wins."""
    names = (names,) if isinstance(names, str) else names
    for key in names:
        if key in rec and rec[key] is not None:
            value = rec[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ProblemFormatError(
                    f"{_where(path, line)}: field {key!r} must be a string,"
                    f" got {type(value).__name__}"
                )
            return str(value)
    if required:
        shown = " or ".join(repr(n) for n in names)
        raise ProblemFormatError(f"{_where(path, line)}: missing field {shown}")
    return None


def _level(rec: Mapping[str, Any], path: Path | str, line: int | None) -> int | None:
    value = rec.get("level")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().removeprefix("Level").strip()
        if text.isdigit():
            return int(text)
        if text == "?":  # a handful of Hendrycks MATH rows have "Level ?"
            return None
    raise ProblemFormatError(
        f"{_where(path, line)}: field 'level' must be an int or 'Level N', got {value!r}"
    )


def _gsm8k_problem(
    rec: Mapping[str, Any], split: str, index: int, path: Path | str, line: int | None
) -> Problem:
    question = _field(rec, "question", path, line)
    solution = _field(rec, "answer", path, line)
    assert question is not None and solution is not None
    if "####" not in solution:
        raise ProblemFormatError(f"{_where(path, line)}: field 'answer' has no '####' final answer")
    gold = solution.split("####")[-1].replace(",", "").strip()
    if not gold:
        raise ProblemFormatError(f"{_where(path, line)}: field 'answer' is empty after '####'")
    return Problem(
        id=f"gsm8k-{split}-{index:05d}",
        question=question,
        answer=gold,
        solution=solution,
        source="gsm8k",
    )


def _math_problem(
    rec: Mapping[str, Any], source: str, path: Path | str, line: int | None
) -> Problem:
    question = _field(rec, "problem", path, line)
    answer = _field(rec, "answer", path, line)
    uid = _field(rec, "unique_id", path, line)
    assert question is not None and answer is not None and uid is not None
    return Problem(
        id=uid,
        question=question,
        answer=answer,
        solution=_field(rec, "solution", path, line, required=False),
        level=_level(rec, path, line),
        subject=_field(rec, "subject", path, line, required=False),
        source=source,
    )


def _load_jsonl_generic(path: Path) -> list[Problem]:
    problems: list[Problem] = []
    for index, (line, rec) in enumerate(_read_jsonl(path)):
        question = _field(rec, ("question", "problem"), path, line)
        answer = _field(rec, "answer", path, line)
        assert question is not None and answer is not None
        pid = _field(rec, "id", path, line, required=False) or f"{path.stem}-{index:05d}"
        problems.append(
            Problem(
                id=pid,
                question=question,
                answer=answer.strip(),
                solution=_field(rec, "solution", path, line, required=False),
                level=_level(rec, path, line),
                subject=_field(rec, "subject", path, line, required=False),
                source=_field(rec, "source", path, line, required=False) or "custom",
            )
        )
    return problems


# --------------------------------------------------------------------------------------------
# Hugging Face hub
# --------------------------------------------------------------------------------------------


def _env_offline() -> bool:
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


@contextlib.contextmanager
def _offline_if_requested() -> Iterator[None]:
    """Honour ``HF_HUB_OFFLINE`` even when it was set after ``datasets`` was imported.

    ``datasets`` and ``huggingface_hub`` read the variable once at import time; if it is set
    now, their module flags are switched on for the duration of the call (cache-only loading).
    """
    if not _env_offline():
        yield
        return
    import datasets.config as ds_config
    import huggingface_hub.constants as hub_constants

    saved = (ds_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    ds_config.HF_HUB_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        ds_config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _hub_rows(
    dataset_id: str, config: str | None, split: str, local_files: str
) -> list[dict[str, Any]]:
    """Load one hub split as a list of dicts, wrapping every failure in a clear error."""
    label = f"{dataset_id}" + (f" (config {config!r})" if config else "") + f" split {split!r}"
    try:
        import datasets

        with _offline_if_requested():
            ds = datasets.load_dataset(dataset_id, config, split=split)
        return [dict(row) for row in ds]
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure gets the same advice
        mode = (
            " (HF_HUB_OFFLINE is set, so only the local cache was tried)" if _env_offline() else ""
        )
        raise DatasetUnavailableError(
            f"Could not load {label} from the Hugging Face hub{mode}: {type(exc).__name__}: {exc}."
            f" Point sprint_lab at local JSONL files instead: set the {_ENV_DATA} environment"
            f" variable or pass data_dir= to a folder holding {local_files}"
            " (the project's shared/data folder has GSM8K and MATH500)."
        ) from exc


def _load_hub(name: str, split: str) -> list[Problem]:
    if name == "gsm8k":
        dataset_id, config = HUB_GSM8K
        rows = _hub_rows(dataset_id, config, split, "gsm8k/{train,test}.jsonl")
        where = f"hub:{dataset_id}/{split}"
        return [_gsm8k_problem(rec, split, i, where, i + 1) for i, rec in enumerate(rows)]
    if name == "math500":
        rows = _hub_rows(HUB_MATH500, None, split, "math500/test.jsonl")
        where = f"hub:{HUB_MATH500}/{split}"
        return [_math_problem(rec, "math500", where, i + 1) for i, rec in enumerate(rows)]
    return _load_hub_math(split)


def _load_hub_math(split: str) -> list[Problem]:
    from sprint_lab.tasks.grading import last_boxed_content

    problems: list[Problem] = []
    for config in HUB_MATH_CONFIGS:
        where = f"hub:{HUB_MATH}/{config}/{split}"
        rows = _hub_rows(
            HUB_MATH, config, split, f"math/{split}.jsonl (PRM800K math_splits format)"
        )
        for i, rec in enumerate(rows):
            question = _field(rec, "problem", where, i + 1)
            solution = _field(rec, "solution", where, i + 1)
            assert question is not None and solution is not None
            answer = last_boxed_content(solution)
            if answer is None:
                raise ProblemFormatError(
                    f"{where}: line {i + 1}: field 'solution' has no \\boxed{{}}"
                )
            problems.append(
                Problem(
                    id=f"math-{split}-{config}-{i:05d}",
                    question=question,
                    answer=answer,
                    solution=solution,
                    level=_level(rec, where, i + 1),
                    subject=_field(rec, "type", where, i + 1, required=False),
                    source="math",
                )
            )
    return problems
