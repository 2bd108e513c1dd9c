"""Locate a Chrome/Chromium executable for static figure export (kaleido 1.x).

Kaleido 1.x no longer bundles a browser: it drives an installed Chrome or Chromium
through choreographer. This helper finds one in a predictable order so that
:func:`sprint_lab.viz.export.save_figure` can point kaleido at it explicitly.

Example:
    >>> from sprint_lab.viz.browser import find_browser
    >>> path = find_browser()  # e.g. '/usr/bin/chromium', or None if none is installed
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "BROWSER_ENV_VAR",
    "BROWSER_NAMES",
    "INSTALL_HINT",
    "downloaded_chrome",
    "find_browser",
    "require_browser",
]

BROWSER_ENV_VAR = "BROWSER_PATH"
"""Environment variable (also honoured by kaleido/choreographer) that overrides the search."""

BROWSER_NAMES: tuple[str, ...] = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)
"""Executable names searched on ``PATH``, in order."""

INSTALL_HINT = (
    "Static figure export (PNG/SVG/PDF) uses kaleido 1.x, which needs a Chrome or Chromium "
    "browser, and none was found. On Debian/Ubuntu install one with:\n"
    "    apt-get update && apt-get install -y chromium\n"
    f"or point the {BROWSER_ENV_VAR} environment variable at an existing Chrome/Chromium "
    "executable. HTML export (.html) works without a browser."
)


def _is_executable(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def downloaded_chrome() -> str | None:
    """A Chrome downloaded by ``kaleido_get_chrome`` / ``plotly_get_chrome``, if any.

    Returns:
        The executable's path, or ``None`` when none was downloaded (or choreographer's
        download location cannot be read).
    """
    try:
        from choreographer.cli._cli_utils import get_chrome_download_path  # private API
    except Exception:  # noqa: BLE001 - optional, best effort
        return None
    try:
        path = get_chrome_download_path(mkdir=False)
    except Exception:  # noqa: BLE001 - best effort
        return None
    return str(path) if path and _is_executable(path) else None


def find_browser() -> str | None:
    """Find a Chrome/Chromium executable usable by kaleido.

    Search order: the ``BROWSER_PATH`` environment variable (if it names an executable
    file), then ``chromium``, ``chromium-browser``, ``google-chrome``,
    ``google-chrome-stable`` and ``chrome`` on ``PATH``, then a Chrome downloaded with
    ``kaleido_get_chrome``.

    Returns:
        The absolute path of the browser, or ``None`` when none is installed.

    Example:
        >>> path = find_browser()
        >>> path is None or path.startswith("/")
        True
    """
    env = os.environ.get(BROWSER_ENV_VAR)
    if env and _is_executable(env):
        return str(Path(env).absolute())
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found and _is_executable(found):
            return str(Path(found).absolute())
    return downloaded_chrome()


def require_browser() -> str:
    """Return :func:`find_browser`'s result or raise a RuntimeError saying how to install one.

    Raises:
        RuntimeError: No Chrome/Chromium was found (message contains
            ``apt-get install -y chromium``).

    Example:
        >>> try:
        ...     path = require_browser()
        ... except RuntimeError as err:
        ...     assert "apt-get install -y chromium" in str(err)
    """
    path = find_browser()
    if path is not None:
        return path
    msg = INSTALL_HINT
    env = os.environ.get(BROWSER_ENV_VAR)
    if env:
        msg = f"{BROWSER_ENV_VAR}={env!r} is not an executable file. {msg}"
    raise RuntimeError(msg)
