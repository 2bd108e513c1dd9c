"""An append-only Parquet dataset of sweep rows, safe to interrupt and resume.

Each finished batch is written as its own part file (written to a temporary name, then renamed,
so a crash never leaves half a file), next to a ``meta.json`` that records the generation
settings. Resuming reads the parts back and skips (question, configuration) pairs already done;
duplicate pairs (a retried shard) are dropped on load, keeping the first.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

META_FILE = "meta.json"
PART_GLOB = "part-*.parquet"
KEY = ["question_id", "config"]

# Settings that must match for rows to belong to one sweep.
IDENTITY_KEYS = ("model", "prompt", "max_new_tokens", "dtype", "grade_mode", "seed")


class SweepStore:
    """A folder holding ``meta.json`` and ``part-*.parquet`` files.

    Example:
        >>> import tempfile
        >>> store = SweepStore(tempfile.mkdtemp())
        >>> rows = pd.DataFrame({"question_id": ["a", "b"], "config": ["none", "none"]})
        >>> _ = store.append(rows)
        >>> _ = store.append(rows.iloc[:1])  # a retried shard: the duplicate is dropped on read
        >>> store.read().shape, sorted(store.done_keys())
        ((2, 2), [('a', 'none'), ('b', 'none')])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} exists and is not a folder; a sweep store is a folder")

    @property
    def meta_path(self) -> Path:
        """The store's ``meta.json``."""
        return self.path / META_FILE

    def parts(self) -> list[Path]:
        """The part files, sorted by name."""
        return sorted(self.path.glob(PART_GLOB)) if self.path.is_dir() else []

    def has_rows(self) -> bool:
        """Whether any part file is stored."""
        return bool(self.parts())

    def read_meta(self) -> dict[str, Any]:
        """The stored settings (``{}`` before the first write)."""
        if not self.meta_path.is_file():
            return {}
        return json.loads(self.meta_path.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace ``meta.json`` atomically (JSON, keys sorted)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        tmp.replace(self.meta_path)

    def check_compatible(self, meta: dict[str, Any]) -> None:
        """Refuse to mix rows generated under different settings in one folder.

        Raises:
            ValueError: naming each :data:`IDENTITY_KEYS` setting that differs.
        """
        old = self.read_meta()
        clashes = {
            key: (old.get(key), meta.get(key))
            for key in IDENTITY_KEYS
            if key in old and key in meta and old.get(key) != meta.get(key)
        }
        if clashes:
            detail = ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in clashes.items())
            raise ValueError(
                f"{self.path} holds a sweep run with other settings ({detail}); "
                "use another folder, or the same settings to resume"
            )

    def append(self, frame: pd.DataFrame, tag: str = "") -> Path:
        """Write ``frame`` as a new part file (atomic rename) and return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"part-{tag}{uuid.uuid4().hex[:12]}.parquet"
        final = self.path / name
        tmp = self.path / f".{name}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(final)
        return final

    def read(self) -> pd.DataFrame:
        """All rows, duplicates of a (question, configuration) pair dropped."""
        parts = self.parts()
        if not parts:
            return pd.DataFrame()
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        return frame.drop_duplicates(subset=KEY, keep="first").reset_index(drop=True)

    def done_keys(self) -> set[tuple[str, str]]:
        """The (question_id, config) pairs already stored."""
        keys: set[tuple[str, str]] = set()
        for part in self.parts():
            frame = pd.read_parquet(part, columns=KEY)
            keys.update(zip(frame["question_id"], frame["config"], strict=True))
        return keys
