"""Figure export: PNG/SVG/PDF through kaleido 1.x and a located Chromium, or self-contained HTML.

Kaleido 1.x renders static images by driving a headless Chrome/Chromium (it no longer bundles
one); :func:`~sprint_lab.viz.browser.find_browser` locates it explicitly so a missing browser is
a clear ``RuntimeError`` with the install command, not a hang. Sizes are in layout pixels
(:data:`DEFAULT_WIDTH` x :data:`DEFAULT_HEIGHT` unless the call or the figure sets them); a PNG
is ``scale`` times larger in physical pixels. HTML needs no browser: plotly.js is inlined (works
offline) or loaded from the CDN. The house style (:data:`~sprint_lab.viz.style.TEMPLATE`) is
applied to a copy, so the figure passed in is never modified.

Example:
    >>> import os, tempfile
    >>> import plotly.graph_objects as go
    >>> out = save_figure(go.Figure(go.Bar(y=[1, 2])), os.path.join(tempfile.mkdtemp(),
    ...                   "bars.html"), include_plotlyjs="cdn")
    >>> out.name
    'bars.html'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from sprint_lab.viz.browser import INSTALL_HINT, require_browser
from sprint_lab.viz.style import apply_style

__all__ = ["DEFAULT_HEIGHT", "DEFAULT_SCALE", "DEFAULT_WIDTH", "SUPPORTED_SUFFIXES", "save_figure"]

DEFAULT_WIDTH = 900
"""Default export width in layout pixels (used when neither the call nor the figure sets one)."""
DEFAULT_HEIGHT = 560
"""Default export height in layout pixels (used when neither the call nor the figure sets one)."""
DEFAULT_SCALE = 2.0
"""Default raster scale: a PNG is ``width * scale`` x ``height * scale`` physical pixels."""
SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf", ".html")
"""File suffixes understood by :func:`save_figure`."""


def _export_size(fig: go.Figure, width: int | None, height: int | None) -> tuple[int, int]:
    w = width or fig.layout.width or DEFAULT_WIDTH
    h = height or fig.layout.height or DEFAULT_HEIGHT
    return int(w), int(h)


def _static_bytes(
    fig: go.Figure, fmt: str, width: int, height: int, scale: float, mathjax: bool
) -> bytes:
    """Render ``fig`` with kaleido 1.x using an explicitly located Chromium."""
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    executable = require_browser()
    kopts: dict[str, Any] = {"path": executable}
    if not mathjax:
        kopts["mathjax"] = False  # no CDN fetch: works offline
    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    server = getattr(kaleido, "_global_server", None)
    if server is not None and server.is_running():  # kaleido.start_sync_server() was called
        data = kaleido.calc_fig_sync(fig.to_dict(), opts=opts)
        return data.encode() if isinstance(data, str) else bytes(data)
    try:
        data = kaleido.calc_fig_sync(fig.to_dict(), opts=opts, kopts=kopts)
    except ChromeNotFoundError as err:
        raise RuntimeError(f"kaleido could not start {executable!r}. {INSTALL_HINT}") from err
    return data.encode() if isinstance(data, str) else bytes(data)


def save_figure(
    fig: go.Figure,
    path: str | Path,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = DEFAULT_SCALE,
    include_plotlyjs: bool | str = True,
    style: bool = True,
    mathjax: bool = False,
) -> Path:
    """Write a figure as PNG, SVG, PDF or HTML, chosen by the file suffix.

    Size: ``width``/``height`` in layout pixels, else the figure's own layout size, else
    :data:`DEFAULT_WIDTH` x :data:`DEFAULT_HEIGHT` (900 x 560). PNG output is
    ``width * scale`` x ``height * scale`` pixels (``scale`` defaults to 2.0); SVG and PDF
    are vector. Static formats use kaleido 1.x driving a Chrome/Chromium found by
    :func:`sprint_lab.viz.browser.find_browser` (``BROWSER_PATH`` env var, then ``chromium``,
    ``chromium-browser``, ``google-chrome`` on ``PATH``); kaleido runs it headless with
    ``--no-sandbox``, so it works as root in containers. HTML is self-contained (plotly.js
    inline, ~4 MB) unless ``include_plotlyjs="cdn"``, and needs no browser.

    Args:
        fig: The figure; it is not modified (styling is applied to a copy).
        path: Output file; parent folders are created. Suffix: .png, .svg, .pdf or .html.
        width: Width in layout pixels.
        height: Height in layout pixels.
        scale: Raster scale factor for PNG.
        include_plotlyjs: HTML only: ``True`` (inline, offline) or ``"cdn"``.
        style: Apply :data:`~sprint_lab.viz.style.TEMPLATE` to the copy before writing.
        mathjax: Load MathJax from its CDN for LaTeX labels (needs network; off by default).

    Returns:
        The written path.

    Raises:
        ValueError: Unsupported suffix or ``include_plotlyjs`` value.
        RuntimeError: Static export without an installed Chrome/Chromium; the message says
            ``apt-get install -y chromium``.

    Example:
        >>> import plotly.graph_objects as go, tempfile, os
        >>> out = save_figure(go.Figure(go.Bar(y=[1, 2])), os.path.join(tempfile.mkdtemp(),
        ...                   "bars.html"), include_plotlyjs="cdn")
        >>> out.suffix
        '.html'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"unsupported file suffix {path.suffix!r} for {str(path)!r}; "
            f"supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if include_plotlyjs not in (True, "cdn"):
        raise ValueError(f"include_plotlyjs must be True or 'cdn', got {include_plotlyjs!r}")
    out = go.Figure(fig)
    if style:
        apply_style(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        if width or height:
            out.update_layout(width=width, height=height)
        config = {"displaylogo": False, "toImageButtonOptions": {"scale": scale}}
        out.write_html(path, include_plotlyjs=include_plotlyjs, full_html=True, config=config)
        return path
    w, h = _export_size(out, width, height)
    path.write_bytes(_static_bytes(out, suffix.lstrip("."), w, h, scale, mathjax))
    return path
