"""Loading the built-in benchmarks from a local data folder of JSON Lines files.

The folder (``data_dir=``, else the ``SPRINT_LAB_DATA`` environment variable) holds one file per
split: ``gsm8k/{train,test}.jsonl``, ``math500/test.jsonl`` and ``math/{train,test}.jsonl``
(PRM800K's ``math_splits`` format). The project's ``shared/data`` folder has GSM8K and MATH500.
:func:`local_or_hub` turns a local loader and a hub loader into one task loader: the local
folder is used whenever one is configured, the hub only when none is.

Example:
    >>> data_root("/data/benchmarks")
    PosixPath('/data/benchmarks')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sprint_lab.tasks.jsonl import gsm8k_problem, math_problem, read_jsonl
from sprint_lab.tasks.records import DATA_ENV_VAR, DatasetUnavailableError, Problem

__all__ = [
    "data_root",
    "load_local_gsm8k",
    "load_local_math",
    "load_local_math500",
    "local_or_hub",
    "local_rows",
]

#: Extra advice when the MATH splits are missing locally.
_MATH_HINT = (
    " The MATH splits are not shipped with the shared data: put PRM800K's"
    " math_splits/{train,test}.jsonl there, or unset SPRINT_LAB_DATA / data_dir to"
    " load EleutherAI/hendrycks_math from the Hugging Face hub."
)


def data_root(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The local data folder: ``data_dir``, else ``$SPRINT_LAB_DATA``, else ``None`` (hub).

    Example:
        >>> data_root(Path("/data")).name
        'data'
    """
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env) if env else None


def local_rows(
    name: str, split: str, root: Path, hint: str = ""
) -> tuple[Path, list[tuple[int, dict[str, Any]]]]:
    """Read ``{root}/{name}/{split}.jsonl``.

    Args:
        name: Dataset folder name.
        split: Split name.
        root: The data folder.
        hint: Extra advice appended to the error when the file is missing.

    Returns:
        The file path and its ``(line, row)`` pairs.

    Raises:
        DatasetUnavailableError: The file does not exist.
        ProblemFormatError: The file is malformed.
    """
    path = root / name / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetUnavailableError(
            f"{name!r} split {split!r}: expected local file {str(path)!r} (data directory from"
            f" data_dir or ${DATA_ENV_VAR}), but it does not exist. Put {name}/{split}.jsonl"
            f" under {str(root)!r}, or point data_dir= (sprint-lab --data-dir) or"
            f" ${DATA_ENV_VAR} at a folder that holds it.{hint}"
        )
    return path, read_jsonl(path)


def load_local_gsm8k(split: str, root: Path) -> list[Problem]:
    """GSM8K ``split`` from ``{root}/gsm8k/{split}.jsonl`` (ids in file order)."""
    path, rows = local_rows("gsm8k", split, root)
    return [gsm8k_problem(rec, split, i, path, line) for i, (line, rec) in enumerate(rows)]


def load_local_math500(split: str, root: Path) -> list[Problem]:
    """MATH500 from ``{root}/math500/test.jsonl``."""
    path, rows = local_rows("math500", split, root)
    return [math_problem(rec, "math500", path, line) for line, rec in rows]


def load_local_math(split: str, root: Path) -> list[Problem]:
    """Full MATH ``split`` from ``{root}/math/{split}.jsonl`` (PRM800K ``math_splits``)."""
    path, rows = local_rows("math", split, root, _MATH_HINT)
    return [math_problem(rec, "math", path, line) for line, rec in rows]


def local_or_hub(
    local: Callable[[str, Path], list[Problem]], hub: Callable[[str], list[Problem]]
) -> Callable[[str, Path | None], list[Problem]]:
    """A task loader reading local files when a data folder is set, else the hub.

    Example:
        >>> def local(split, root):
        ...     return [Problem(f"local-{split}", "1 + 1?", "2")]
        >>> load = local_or_hub(local, lambda split: [])
        >>> [p.id for p in load("test", Path("/data"))], load("test", None)
        (['local-test'], [])
    """

    def load(split: str, root: Path | None) -> list[Problem]:
        return local(split, root) if root is not None else hub(split)

    return load
