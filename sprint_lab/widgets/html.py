"""HTML for the notebook panels: word-level diffs of two completions, tables, status lines.

``ipywidgets.HTML`` shows a string of HTML, and JupyterLab's sanitizer strips ``<style>`` from
rich outputs but keeps inline styles, so everything here is plain HTML with inline styles and
every piece of user data (questions, completions, table cells) is escaped. Nothing here
imports ipywidgets: the functions are testable without a kernel.

A word diff splits both texts into words *and* whitespace runs (so joining the parts gives each
text back exactly), aligns them with :class:`difflib.SequenceMatcher` and wraps removed words in
``<del>`` (left side) and added words in ``<ins>`` (right side):

* :func:`word_diff` -- the ``(op, old_part, new_part)`` alignment.
* :func:`diff_sides` / :func:`word_diff_html` -- both sides as HTML, or side by side.
* :func:`columns_html` -- texts in boxes side by side (a CSS grid).
* :func:`frame_html` -- an escaped compact table of a DataFrame (booleans as ✓/✗).
* :func:`message_html` -- a coloured status line.

Example:
    >>> [op for op, _, _ in word_diff("the answer is 4", "the answer is 5")]
    ['equal', 'replace']
    >>> diff_sides("is 4", "is <5>")[1].endswith("&lt;5&gt;</ins>")
    True
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Sequence

import pandas as pd

__all__ = [
    "DEL_STYLE",
    "INS_STYLE",
    "MESSAGE_COLORS",
    "PRE_STYLE",
    "columns_html",
    "diff_sides",
    "frame_html",
    "message_html",
    "word_diff",
    "word_diff_html",
]

DEL_STYLE = "background:#ffd7d5;color:#82071e;text-decoration:line-through"
"""Inline style of removed words (inline styles survive JupyterLab's HTML sanitizer)."""
INS_STYLE = "background:#ccffd8;color:#055d20;text-decoration:none"
"""Inline style of added words."""
PRE_STYLE = (
    "white-space:pre-wrap;word-break:break-word;margin:0;padding:6px;border:1px solid #ddd;"
    "border-radius:4px;background:#fafafa;font-family:monospace;font-size:13px"
)
"""Inline style of one completion's box."""

_TOKEN = re.compile(r"\s+|[^\s]+")

MESSAGE_COLORS: dict[str, str] = {
    "info": "#333",
    "ok": "#055d20",
    "warn": "#8a5300",
    "error": "#82071e",
}
"""Text colour of each :func:`message_html` kind."""


def message_html(kind: str, text: str) -> str:
    """One escaped status line coloured by ``kind`` (a key of :data:`MESSAGE_COLORS`).

    Example:
        >>> message_html("ok", "done <3>")
        '<span style="color:#055d20">done &lt;3&gt;</span>'
    """
    return f'<span style="color:{MESSAGE_COLORS[kind]}">{html.escape(text)}</span>'


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def word_diff(old: str, new: str) -> list[tuple[str, str, str]]:
    """Word-level diff of two texts (whitespace kept as its own tokens).

    Returns:
        ``(op, old_part, new_part)`` triples with ``op`` in ``"equal"``, ``"delete"``,
        ``"insert"``, ``"replace"``; joining the old parts gives ``old`` back, and the new
        parts give ``new``.

    Example:
        >>> word_diff("2 + 2 = 4", "2 + 2 = 5")[-1]
        ('replace', '4', '5')
    """
    a, b = _tokens(old), _tokens(new)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [
        (op, "".join(a[i1:i2]), "".join(b[j1:j2])) for op, i1, i2, j1, j2 in matcher.get_opcodes()
    ]


def diff_sides(old: str, new: str) -> tuple[str, str]:
    """HTML for both sides of a word diff: removed words in ``<del>``, added ones in ``<ins>``.

    Example:
        >>> left, right = diff_sides("is 4", "is 5")
        >>> left.endswith(">4</del>"), right.startswith("is <ins ")
        (True, True)
    """
    left, right = [], []
    for op, a, b in word_diff(old, new):
        if op == "equal":
            left.append(html.escape(a))
            right.append(html.escape(b))
            continue
        if a:
            left.append(f'<del style="{DEL_STYLE}">{html.escape(a)}</del>')
        if b:
            right.append(f'<ins style="{INS_STYLE}">{html.escape(b)}</ins>')
    return "".join(left), "".join(right)


def columns_html(columns: Sequence[tuple[str, str]], *, per_row: int = 4) -> str:
    """Texts side by side: each column is ``(header_html, body_html)``, the body in a box.

    Args:
        columns: the columns, left to right; bodies are shown as preformatted text (escape
            them first, or pass the output of :func:`diff_sides`).
        per_row: at most this many columns per row (more wrap to the next row).

    Example:
        >>> "grid-template-columns:repeat(2, 1fr)" in columns_html([("a", "x"), ("b", "y")])
        True
    """
    n = max(1, min(len(columns), per_row))
    cells = "".join(
        f'<div style="min-width:0">{header}<pre style="{PRE_STYLE}">{body}</pre></div>'
        for header, body in columns
    )
    return (
        f'<div class="sl-diff" style="display:grid;grid-template-columns:repeat({n}, 1fr);'
        f'gap:8px;font-size:13px">{cells}</div>'
    )


def word_diff_html(old: str, new: str, *, labels: tuple[str, str] = ("unpruned", "pruned")) -> str:
    """Two completions side by side with their word-level differences highlighted.

    Args:
        old: the reference text (left column, removed words struck through in red).
        new: the compared text (right column, added words in green).
        labels: the two column headings.

    Example:
        >>> ">5</ins>" in word_diff_html("is 4", "is 5")
        True
    """
    left, right = diff_sides(old, new)
    head = '<div style="font-weight:bold;margin:2px 0 4px 0">{}</div>'
    return columns_html(
        [(head.format(html.escape(labels[0])), left), (head.format(html.escape(labels[1])), right)]
    )


def frame_html(frame: pd.DataFrame, *, max_rows: int = 50, float_format: str = "{:.3f}") -> str:
    """An escaped, compact HTML table of ``frame`` (booleans as ✓/✗) for an ``HTML`` widget.

    Example:
        >>> "✓" in frame_html(pd.DataFrame({"ok": [True]}))
        True
    """
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if shown[column].dtype == bool or shown[column].map(type).eq(bool).all():
            shown[column] = shown[column].map({True: "✓", False: "✗"}).fillna("")
    table = shown.to_html(
        index=False,
        escape=True,
        na_rep="",
        border=0,
        float_format=float_format.format,
        classes="sl-table",
    )
    style = (
        "<style>.sl-table{border-collapse:collapse;font-size:13px}"
        ".sl-table th,.sl-table td{padding:2px 8px;border-bottom:1px solid #e5e5e5;"
        "text-align:left;vertical-align:top;max-width:480px}</style>"
    )
    more = f"<div><i>{len(frame) - max_rows} more rows</i></div>" if len(frame) > max_rows else ""
    return style + table + more
