"""An append-only Parquet dataset of sweep rows that is never lost, mixed or silently changed.

A store is a folder: a ``meta.json`` with the sweep's settings and plan, and one
``part-*.parquet`` file per finished batch. Four rules keep it trustworthy:

* **Atomic writes.** A part is written under a temporary name (``.tmp-*``) and renamed into
  place, so a crash or a full disk never leaves half a file; the temporary file is removed when
  the write fails, and leftovers of a killed writer are cleaned when the store is next opened
  for writing (:meth:`SweepStore.clean_temp`).
* **Checksummed parts.** Each part's name ends in the first 16 hex digits of its bytes' SHA-256
  (``part-<tag><id>.sha256-<digest>.parquet``). Reading verifies it, so a part whose bytes were
  altered is never loaded as silently changed rows: it raises :class:`CorruptStoreError`
  naming the file, and :meth:`SweepStore.repair` moves such parts into ``quarantine/`` (never
  deleting them) and reports which pairs a resume will recompute.
* **Identity.** Rows carry a ``fingerprint`` (:mod:`sprint_lab.sweeps.identity`); a read given
  the expected fingerprints keeps only rows that match them, so rows made from an edited dataset
  or another question set never enter a result (:meth:`SweepStore.status` counts them).
* **One writer.** Writers hold the folder's lock (:mod:`sprint_lab.sweeps.lock`).

Duplicate pairs (a retried shard) are dropped on read, keeping the first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.sweeps.lock import LOCK_FILE, StoreLock

__all__ = [
    "FINGERPRINT",
    "IDENTITY_KEYS",
    "KEY",
    "CorruptStoreError",
    "RepairReport",
    "StaleRowsError",
    "StoreStatus",
    "SweepExistsError",
    "SweepStore",
]

META_FILE = "meta.json"
PART_GLOB = "part-*.parquet"
QUARANTINE = "quarantine"
TEMP_PREFIX = ".tmp-"
KEY = ["question_id", "config"]
FINGERPRINT = "fingerprint"
_DIGEST = re.compile(r"\.sha256-([0-9a-f]{16})\.parquet$")
_LEGACY_TEMP = (".part-*.tmp", "meta.tmp*")

IDENTITY_KEYS = (
    "model",
    "model_fingerprint",
    "prompt",
    "max_new_tokens",
    "dtype",
    "grade_mode",
    "seed",
    "deterministic",
    "ablation_reference",
    "resample_seed",
)
"""Settings that must match for rows to belong to one sweep (``ablation_reference``: the
reference prompts of mean/resample ablation, recorded only when a sweep has such candidates)."""


class CorruptStoreError(SetupError):
    """A part file or ``meta.json`` cannot be read or fails its checksum.

    Attributes:
        path: the damaged file.
    """

    def __init__(self, path: Path, cause: str) -> None:
        self.path = Path(path)
        store = self.path.parent
        super().__init__(
            f"{self.path}: {cause}; run `sprint-lab repair {store}` (or "
            f"SweepStore({str(store)!r}).repair()) to move it into {QUARANTINE}/, then resume "
            "to recompute its rows"
        )


class StaleRowsError(InputError):
    """Stored rows were made from other question records or prompts than the current ones."""


class SweepExistsError(InputError, FileExistsError):
    """The folder or file already holds (another) sweep, and overwriting was not asked for."""


@dataclass
class StoreStatus:
    """How the stored rows relate to a sweep's plan.

    Attributes:
        done: planned pairs stored with the expected fingerprint.
        stale: planned pairs stored only with another fingerprint (edited question or prompt).
        missing: planned pairs not stored at all.
        foreign: stored pairs outside the plan (another question set or head list).
    """

    done: set[tuple[str, str]] = field(default_factory=set)
    stale: set[tuple[str, str]] = field(default_factory=set)
    missing: set[tuple[str, str]] = field(default_factory=set)
    foreign: set[tuple[str, str]] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        """Every planned pair is stored with a matching fingerprint."""
        return not self.stale and not self.missing

    def stale_questions(self) -> list[str]:
        """Question ids with at least one stale pair, sorted."""
        return sorted({question for question, _ in self.stale})


@dataclass
class RepairReport:
    """What :meth:`SweepStore.repair` did.

    Attributes:
        store: the store folder.
        quarantined: damaged files moved into ``quarantine/`` (with the reason for each).
        removed_temp: leftover temporary files deleted.
        recompute: planned (question_id, config) pairs a resume will compute again.
    """

    store: Path
    quarantined: list[tuple[Path, str]] = field(default_factory=list)
    removed_temp: list[Path] = field(default_factory=list)
    recompute: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.store}:"]
        for path, reason in self.quarantined:
            lines.append(f"  quarantined {path.name} -> {QUARANTINE}/ ({reason})")
        if self.removed_temp:
            lines.append(f"  removed {len(self.removed_temp)} leftover temporary file(s)")
        if not self.quarantined and not self.removed_temp:
            lines.append("  every part file and meta.json verified; nothing to repair")
        if self.recompute:
            questions = len({q for q, _ in self.recompute})
            lines.append(
                f"  a resume will recompute {len(self.recompute)} pair(s) of {questions} "
                "question(s)"
            )
        return "\n".join(lines)


def part_digest(path: Path) -> str | None:
    """The checksum a part's name records (``None`` for parts written before checksums)."""
    match = _DIGEST.search(path.name)
    return match.group(1) if match else None


def _bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class SweepStore:
    """A folder holding ``meta.json`` and checksummed ``part-*.parquet`` files.

    Example:
        >>> import tempfile
        >>> store = SweepStore(tempfile.mkdtemp())
        >>> rows = pd.DataFrame({"question_id": ["a", "b"], "config": ["none", "none"]})
        >>> _ = store.append(rows)
        >>> _ = store.append(rows.iloc[:1])  # a retried shard: the duplicate is dropped on read
        >>> store.read().shape, sorted(store.done_keys())
        ((2, 2), [('a', 'none'), ('b', 'none')])
        >>> print(store.repair())  # doctest: +ELLIPSIS
        /...:
          every part file and meta.json verified; nothing to repair
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path} exists and is not a folder; a sweep store is a folder")
        self._cache: dict[str, pd.DataFrame] = {}

    @property
    def meta_path(self) -> Path:
        """The store's ``meta.json``."""
        return self.path / META_FILE

    def lock(self, purpose: str = "sweep") -> StoreLock:
        """The folder's writer lock (use as ``with store.lock(): ...``)."""
        return StoreLock(self.path, purpose)

    def parts(self) -> list[Path]:
        """The part files, sorted by name."""
        return sorted(self.path.glob(PART_GLOB)) if self.path.is_dir() else []

    def has_rows(self) -> bool:
        """Whether any part file is stored."""
        return bool(self.parts())

    def read_meta(self) -> dict[str, Any]:
        """The stored settings (``{}`` before the first write).

        Raises:
            CorruptStoreError: ``meta.json`` is not a JSON object (the message names the file).
        """
        if not self.meta_path.is_file():
            return {}
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:
            raise CorruptStoreError(self.meta_path, f"unreadable settings file ({error})") from None
        if not isinstance(meta, dict):
            raise CorruptStoreError(self.meta_path, "not a JSON object")
        return meta

    def _write_atomic(self, final: Path, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace ``meta.json`` atomically (JSON, keys sorted)."""
        text = json.dumps(meta, indent=2, sort_keys=True, default=str)
        self._write_atomic(self.meta_path, text.encode("utf-8"))

    def check_compatible(self, meta: dict[str, Any]) -> None:
        """Refuse to mix rows generated under different settings in one folder.

        Raises:
            InputError: naming each :data:`IDENTITY_KEYS` setting that differs.
        """
        old = self.read_meta()
        clashes = {
            key: (old.get(key), meta.get(key))
            for key in IDENTITY_KEYS
            if key in old and key in meta and old.get(key) != meta.get(key)
        }
        if clashes:
            detail = ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in clashes.items())
            raise InputError(
                f"{self.path} holds a sweep run with other settings ({detail}); "
                "use another folder, or the same settings to resume"
            )

    def append(self, frame: pd.DataFrame, tag: str = "") -> Path:
        """Write ``frame`` as a new checksummed part file (atomic rename); return its path."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        name = f"part-{tag}{uuid.uuid4().hex[:12]}.sha256-{_bytes_digest(data)}.parquet"
        final = self.path / name
        self._write_atomic(final, data)
        self._cache[final.name] = frame.reset_index(drop=True)
        return final

    def read_part(self, part: Path) -> pd.DataFrame:
        """One part's rows, after verifying its checksum.

        Raises:
            CorruptStoreError: the bytes do not match the checksum in the name, or the file is
                not readable Parquet (the message names the file and the cause).
        """
        cached = self._cache.get(part.name)
        if cached is not None:
            return cached
        try:
            data = part.read_bytes()
        except OSError as error:
            raise CorruptStoreError(part, f"unreadable ({error})") from None
        expected = part_digest(part)
        if expected is not None and _bytes_digest(data) != expected:
            raise CorruptStoreError(
                part, f"checksum mismatch (the name says {expected}, the bytes hash differently)"
            )
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as error:  # pyarrow raises OSError, ArrowInvalid, thrift errors
            raise CorruptStoreError(part, f"not readable as Parquet ({error})") from None
        if not {"question_id", "config"} <= set(frame.columns):
            raise CorruptStoreError(part, "lacks the question_id/config columns of sweep rows")
        self._cache[part.name] = frame
        return frame

    def _frames(self) -> list[pd.DataFrame]:
        return [self.read_part(part) for part in self.parts()]

    def read(
        self, expected: Mapping[str, str] | None = None, configs: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """All rows, or only those of a plan; duplicates of a pair dropped (the first kept).

        Args:
            expected: question id -> fingerprint; when given, only rows of these questions whose
                ``fingerprint`` matches are returned (stale and foreign rows stay on disk).
            configs: when given, only rows of these configurations.
        """
        frames = self._frames()
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        keep = np.ones(len(frame), dtype=bool)
        if expected is not None:
            prints = frame[FINGERPRINT] if FINGERPRINT in frame else [None] * len(frame)
            wanted = [expected.get(question) for question in frame["question_id"]]
            keep &= [a is not None and a == b for a, b in zip(wanted, prints, strict=True)]
        if configs is not None:
            keep &= np.isin(frame["config"].to_numpy(), list(configs))
        kept = cast(pd.DataFrame, frame.loc[keep])
        return kept.drop_duplicates(subset=KEY, keep="first").reset_index(drop=True)

    def done_keys(self) -> set[tuple[str, str]]:
        """The (question_id, config) pairs stored (any fingerprint)."""
        keys: set[tuple[str, str]] = set()
        for frame in self._frames():
            keys.update(zip(frame["question_id"], frame["config"], strict=True))
        return keys

    def status(self, expected: Mapping[str, str], configs: Sequence[str]) -> StoreStatus:
        """Sort the plan's pairs into done, stale and missing, and count foreign rows."""
        stored: dict[tuple[str, str], set[Any]] = {}
        for frame in self._frames():
            prints = frame[FINGERPRINT] if FINGERPRINT in frame else [None] * len(frame)
            for key in zip(frame["question_id"], frame["config"], prints, strict=True):
                stored.setdefault((key[0], key[1]), set()).add(key[2])
        status = StoreStatus()
        for question, fingerprint in expected.items():
            for config in configs:
                found = stored.get((question, config))
                if found is None:
                    status.missing.add((question, config))
                elif fingerprint in found:
                    status.done.add((question, config))
                else:
                    status.stale.add((question, config))
        wanted = set(configs)
        status.foreign = {k for k in stored if k[0] not in expected or k[1] not in wanted}
        return status

    def clean_temp(self) -> list[Path]:
        """Delete leftover temporary files; call only while holding the lock."""
        removed = []
        for pattern in (f"{TEMP_PREFIX}*", *_LEGACY_TEMP):
            for path in self.path.glob(pattern):
                if path.is_file() and path.name != LOCK_FILE:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def quarantine(self, path: Path) -> Path:
        """Move a damaged file into ``quarantine/`` (never deleted); return its new path."""
        folder = self.path / QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / path.name
        while target.exists():
            target = folder / f"{uuid.uuid4().hex[:6]}-{path.name}"
        path.replace(target)
        self._cache.pop(path.name, None)
        return target

    def repair(self) -> RepairReport:
        """Quarantine damaged parts and a broken ``meta.json``; report what a resume redoes.

        Holds the writer lock while it works (a running sweep makes it raise
        :class:`~sprint_lab.sweeps.lock.StoreLockedError`).

        Raises:
            InputError: the folder does not exist.
        """
        if not self.path.is_dir():
            raise InputError(f"{self.path} is not a folder; nothing to repair")
        report = RepairReport(self.path)
        with self.lock("repair"):
            report.removed_temp = self.clean_temp()
            for part in self.parts():
                try:
                    self.read_part(part)
                except CorruptStoreError as error:
                    reason = str(error).split(": ", 1)[1].split("; run", 1)[0]
                    report.quarantined.append((self.quarantine(part), reason))
            try:
                meta = self.read_meta()
            except CorruptStoreError as error:
                reason = str(error).split(": ", 1)[1].split("; run", 1)[0]
                report.quarantined.append((self.quarantine(self.meta_path), reason))
                meta = {}
            expected = meta.get("fingerprints")
            if expected:
                configs = ["none", *meta.get("heads", [])]
                status = self.status(expected, configs)
                report.recompute = sorted(status.missing | status.stale)
        return report

    def only_store_files(self) -> list[Path]:
        """Files in the folder that a store does not own (a save refuses to replace them)."""
        own = {META_FILE, LOCK_FILE, QUARANTINE}
        return [
            path
            for path in sorted(self.path.iterdir())
            if path.name not in own
            and not path.name.startswith(TEMP_PREFIX)
            and not path.match(PART_GLOB)
        ]

    def replace_with(self, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Atomically replace the whole folder by one holding ``table`` and ``meta``.

        The new store is written into a sibling temporary folder first; only when that worked
        is the old folder renamed aside, the new one renamed into place and the old one removed.
        A failed write leaves the old store untouched.

        Raises:
            SweepExistsError: the folder holds files a store does not own (named).
        """
        if self.path.is_dir():
            strangers = self.only_store_files()
            if strangers:
                names = ", ".join(p.name for p in strangers[:5])
                raise SweepExistsError(
                    f"{self.path} holds files that are not part of a sweep store ({names}); "
                    "save into an empty or store-only folder"
                )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        staging = self.path.parent / f"{TEMP_PREFIX}{self.path.name}-{token}"
        retired = self.path.parent / f"{TEMP_PREFIX}{self.path.name}-old-{token}"
        lock = self.lock("save") if self.path.is_dir() else None
        if lock is not None:
            lock.acquire()  # refuses while a sweep writes here
        try:
            try:
                fresh = SweepStore(staging)
                fresh.write_meta(meta)
                fresh.append(table, tag="saved-")
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if lock is not None:
                self.path.replace(retired)
            staging.replace(self.path)
        finally:
            if lock is not None:
                lock.release()
        shutil.rmtree(retired, ignore_errors=True)
        self._cache.clear()
