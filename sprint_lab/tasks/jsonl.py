"""JSON Lines parsing: benchmark rows to :class:`~sprint_lab.tasks.records.Problem` records.

Local benchmark files and hub rows share one set of converters: GSM8K rows (``question``,
``answer`` with a final ``#### N``), MATH rows in PRM800K's ``math_splits`` format (``problem``,
``answer``, ``unique_id``, optional ``solution``, ``subject``, ``level``) and free-form rows of a
custom file (``question`` or ``problem``, ``answer``, optional ``id``, ``solution``, ``level``,
``subject``, ``source``). Every error is a :class:`~sprint_lab.tasks.records.ProblemFormatError`
naming the file, the 1-based line and the field.

Example:
    >>> row = {"question": "Tom has 1,000 pens and buys 1 more.", "answer": "1000 + 1\\n#### 1,001"}
    >>> p = gsm8k_problem(row, "test", 7, "gsm8k/test.jsonl", 8)
    >>> p.id, p.answer
    ('gsm8k-test-00007', '1001')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sprint_lab.tasks.records import Problem, ProblemFormatError

__all__ = [
    "gsm8k_problem",
    "level_field",
    "load_jsonl_file",
    "math_problem",
    "read_jsonl",
    "text_field",
    "where",
]


def _utf8_error(path: Path) -> str:
    """Message naming the first line of ``path`` that is not valid UTF-8."""
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"{path}: line {lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
    return f"{path}: not valid UTF-8"


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(1-based line number, object)`` for each non-blank line of a UTF-8 file.

    Args:
        path: The ``.jsonl`` file.

    Returns:
        The parsed rows with their line numbers.

    Raises:
        ProblemFormatError: The file is not UTF-8, a line is not JSON, or not a JSON object.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "two.jsonl"
        >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n', encoding="utf-8")
        >>> read_jsonl(path)
        [(1, {'a': 1}), (3, {'a': 2})]
    """
    try:
        with path.open(encoding="utf-8") as fh:
            lines = list(fh)
    except UnicodeDecodeError as exc:
        raise ProblemFormatError(_utf8_error(path)) from exc
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, raw in enumerate(lines, start=1):
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


def where(path: Path | str, line: int | None) -> str:
    """``"file: line N"`` (or just the file) for error messages.

    Example:
        >>> where("data.jsonl", 3)
        'data.jsonl: line 3'
    """
    return f"{path}: line {line}" if line is not None else f"{path}"


def text_field(
    rec: Mapping[str, Any],
    names: str | tuple[str, ...],
    path: Path | str,
    line: int | None,
    *,
    required: bool = True,
) -> str | None:
    """Fetch a text field (numbers are converted to text); the first present name wins.

    Args:
        rec: The row.
        names: The field name, or alternatives tried in order.
        path: File (or hub split) for error messages.
        line: 1-based line for error messages.
        required: Raise when no name is present; otherwise return ``None``.

    Returns:
        The field as text, or ``None`` for a missing optional field.

    Raises:
        ProblemFormatError: A required field is missing, or a field is not text or a number.

    Example:
        >>> text_field({"problem": "2 + 2?", "answer": 4}, ("question", "problem"), "f", 1)
        '2 + 2?'
        >>> text_field({"answer": 4}, "answer", "f", 1)
        '4'
    """
    names = (names,) if isinstance(names, str) else names
    for key in names:
        if key in rec and rec[key] is not None:
            value = rec[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ProblemFormatError(
                    f"{where(path, line)}: field {key!r} must be a string,"
                    f" got {type(value).__name__}"
                )
            return str(value)
    if required:
        shown = " or ".join(repr(n) for n in names)
        raise ProblemFormatError(f"{where(path, line)}: missing field {shown}")
    return None


def level_field(rec: Mapping[str, Any], path: Path | str, line: int | None) -> int | None:
    """The row's ``level`` as an int (``3`` or ``"Level 3"``); ``None`` if absent or ``"?"``.

    Raises:
        ProblemFormatError: The level is neither an int nor ``"Level N"``.

    Example:
        >>> level_field({"level": "Level 4"}, "f", 1), level_field({}, "f", 1)
        (4, None)
    """
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
        f"{where(path, line)}: field 'level' must be an int or 'Level N', got {value!r}"
    )


def gsm8k_problem(
    rec: Mapping[str, Any], split: str, index: int, path: Path | str, line: int | None
) -> Problem:
    """A GSM8K row: gold = text after ``####`` without commas, id ``gsm8k-{split}-{index:05d}``.

    Raises:
        ProblemFormatError: A missing field, or an ``answer`` without a ``####`` final answer.
    """
    question = text_field(rec, "question", path, line)
    solution = text_field(rec, "answer", path, line)
    assert question is not None and solution is not None
    if "####" not in solution:
        raise ProblemFormatError(f"{where(path, line)}: field 'answer' has no '####' final answer")
    gold = solution.split("####")[-1].replace(",", "").strip()
    if not gold:
        raise ProblemFormatError(f"{where(path, line)}: field 'answer' is empty after '####'")
    return Problem(
        id=f"gsm8k-{split}-{index:05d}",
        question=question,
        answer=gold,
        solution=solution,
        source="gsm8k",
    )


def math_problem(
    rec: Mapping[str, Any], source: str, path: Path | str, line: int | None
) -> Problem:
    """A MATH row in PRM800K ``math_splits`` format; id = ``unique_id``.

    Example:
        >>> row = {"problem": "1/2 + 1/2?", "answer": "1", "unique_id": "t/1.json", "level": 1}
        >>> math_problem(row, "math500", "f", 1).id
        't/1.json'
    """
    question = text_field(rec, "problem", path, line)
    answer = text_field(rec, "answer", path, line)
    uid = text_field(rec, "unique_id", path, line)
    assert question is not None and answer is not None and uid is not None
    return Problem(
        id=uid,
        question=question,
        answer=answer,
        solution=text_field(rec, "solution", path, line, required=False),
        level=level_field(rec, path, line),
        subject=text_field(rec, "subject", path, line, required=False),
        source=source,
    )


def load_jsonl_file(path: Path) -> list[Problem]:
    """Problems of a custom JSONL file; ids default to ``{file stem}-{index:05d}``.

    Rows have ``question`` (or ``problem``) and ``answer``, optionally ``id``, ``solution``,
    ``level``, ``subject``, ``source`` (default ``"custom"``).

    Raises:
        ProblemFormatError: Bad encoding, JSON, or field.
    """
    problems: list[Problem] = []
    for index, (line, rec) in enumerate(read_jsonl(path)):
        question = text_field(rec, ("question", "problem"), path, line)
        answer = text_field(rec, "answer", path, line)
        assert question is not None and answer is not None
        pid = text_field(rec, "id", path, line, required=False) or f"{path.stem}-{index:05d}"
        problems.append(
            Problem(
                id=pid,
                question=question,
                answer=answer.strip(),
                solution=text_field(rec, "solution", path, line, required=False),
                level=level_field(rec, path, line),
                subject=text_field(rec, "subject", path, line, required=False),
                source=text_field(rec, "source", path, line, required=False) or "custom",
            )
        )
    return problems
