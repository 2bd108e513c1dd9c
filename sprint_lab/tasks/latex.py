"""LaTeX helpers shared by the MATH loaders and the MATH grader: brace matching and ``\\boxed{}``.

MATH solutions mark their final answer with ``\\boxed{...}`` (sometimes ``\\fbox{...}`` or the
brace-less ``\\boxed 5``). The box content may itself contain braces (``\\boxed{\\frac{1}{2}}``),
so it is found by counting braces, skipping escaped ``\\{`` / ``\\}``, rather than with a regex.

Example:
    >>> last_boxed_content(r"so $x = \\boxed{\\frac{1}{2}}$")
    '\\\\frac{1}{2}'
"""

from __future__ import annotations

import re

__all__ = ["boxed_contents", "last_boxed_content", "matching_brace"]

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def matching_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``start`` (escaped ``\\{``/``\\}`` are skipped).

    Args:
        text: The LaTeX text.
        start: Index of an opening ``{`` in ``text``.

    Returns:
        The index of the matching ``}``, or ``None`` when the brace is never closed.

    Example:
        >>> matching_brace("{a{b}\\\\}c}", 0)
        8
        >>> matching_brace("{open", 0) is None
        True
    """
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched) and ``\\boxed 5``.

    Unclosed and empty boxes are skipped.

    Args:
        text: A solution or completion.

    Returns:
        The stripped box contents, in order of appearance.

    Example:
        >>> boxed_contents(r"so \\boxed{\\frac{1}{2}} or \\fbox{3} or $\\boxed 4$")
        ['\\\\frac{1}{2}', '3', '4']
    """
    found: list[str] = []
    for match in _BOX_RE.finditer(text):
        i = match.end()
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            end = matching_brace(text, j)
            content = text[j + 1 : end] if end is not None else ""
        elif j > i:  # "\boxed 5": up to the closing "$" or the end of the line
            content = re.split(r"[$\n]", text[j:], maxsplit=1)[0].rstrip(" .")
        else:
            content = ""
        if content.strip():
            found.append(content.strip())
    return found


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` in ``text``, or ``None``.

    Example:
        >>> last_boxed_content(r"\\boxed{1} then \\boxed{x^{2}}")
        'x^{2}'
    """
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None
