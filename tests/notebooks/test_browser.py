"""End to end in a real browser: JupyterLab + Chromium (Playwright) run notebooks 01 and 02.

JupyterLab starts headless on a free localhost port with a token, its root a temporary copy of
``notebooks/``, in smoke mode (``SPRINT_LAB_SMOKE=1``). Debian's Chromium, driven by Playwright,
opens each notebook, runs all cells from the *Run* menu, then, in 02, presses the SweepPanel's
*Run sweep* button, waits for the panel's plotly heat map to fill (read back from the rendered
``.js-plotly-plot`` element), clicks a cell of the HeatmapExplorer's map and checks the Python
side answered. Screenshots go to the test's tmp_path and ``sprint-lab-out/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "sprint-lab-out" / "screenshots"
SERVER_START_S = 120
RUN_ALL_S = 420
SWEEP_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - localhost only
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on localhost serving a copy of notebooks/ (yields base URL, token)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    root = tmp_path_factory.mktemp("lab")
    notebooks = root / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    port, token = _free_port(), os.urandom(16).hex()
    env = dict(
        os.environ,
        SPRINT_LAB_SMOKE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
    )
    user_settings = root / "user-settings"
    # No "news" prompt, and every notebook cell kept in the DOM (no windowing).
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = user_settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 - closed in the finally below
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
        f"--LabApp.user_settings_dir={user_settings}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
        "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while _get(f"{base}/api/status?token={token}") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - stops kernels too
        except OSError:
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


def _open(page, lab, name: str) -> None:
    base, token, _ = lab
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").wait_for(timeout=120_000)
    _wait_idle(page, 120_000)


def _wait_idle(page, timeout_ms: int) -> None:
    """Wait until the notebook's kernel is connected and idle (not merely 'no kernel yet')."""
    page.wait_for_function(
        """() => {
            const bar = document.querySelector('#jp-main-statusbar');
            const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) '
                + '.jp-Notebook-ExecutionIndicator');
            return bar && /\\| Idle/.test(bar.textContent) && !/No Kernel/.test(bar.textContent)
                && ind && ind.getAttribute('data-status') === 'idle';
        }""",
        timeout=timeout_ms,
        polling=250,
    )


def _run_all(page, tmp_path: Path, name: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Done when every code cell of the notebook has an execution count (none at [*] or [ ])
    # and the kernel is idle again; stop early when a cell shows a traceback.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        state = page.wait_for_function(
            """() => {
            const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
            if (!nb) return false;
            const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
            if (nb.querySelector(stderr) && /Traceback/.test(nb.textContent)) return 'error';
            const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) '
                + '.jp-Notebook-ExecutionIndicator');
            const idle = ind && ind.getAttribute('data-status') === 'idle';
            return prompts.length > 0 && idle
                && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)) && 'done';
        }""",
            timeout=RUN_ALL_S * 1000,
            polling=500,
        ).json_value()
    except PlaywrightTimeout:
        state = f"a timeout after {RUN_ALL_S} s"
    if state != "done":
        _shoot(page, tmp_path, f"{name}-failed")
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        pytest.fail(
            f"{name}: running all cells ended with {state!r}; prompts {prompts}; "
            f"errors {_errors(page)}"
        )


def _errors(page) -> list[str]:
    texts = page.locator(
        ".jp-NotebookPanel:not(.lm-mod-hidden) "
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    ).all_inner_texts()
    return [t for t in texts if "Traceback" in t or "Error" in t]


def _shoot(page, tmp_path: Path, name: str, element=None) -> Path:
    path = tmp_path / f"{name}.png"
    (element or page).screenshot(path=str(path), **({} if element else {"full_page": True}))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def _close_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Close All Tabs").first.click()
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.get_by_role("button", name="Discard").click()


_PANEL_Z = """() => {
    const el = document.querySelector('.sprint-lab-sweep-panel .js-plotly-plot');
    if (!el || !el.data || !el.data.length || !el.data[0].z) return null;
    return el.data[0].z;
}"""


def test_quickstart_and_sweep_panel_in_jupyterlab(lab, page, tmp_path):
    # 01: run every cell; the word diff of an answer changed by pruning must render.
    _open(page, lab, "01_quickstart.ipynb")
    _run_all(page, tmp_path, "01_quickstart")
    assert not _errors(page)
    assert page.locator(".sl-diff").count() >= 1
    assert "heads of layer 0 change this answer" in page.content()
    _shoot(page, tmp_path, "01_quickstart")
    _close_all(page)

    # 02: run every cell, then press the panel's Run sweep button.
    _open(page, lab, "02_head_sweep_heatmap.ipynb")
    _run_all(page, tmp_path, "02_head_sweep_heatmap")
    assert not _errors(page)
    panel = page.locator(".sprint-lab-sweep-panel")
    panel.wait_for()
    panel.scroll_into_view_if_needed()
    run = panel.locator(".sprint-lab-run")
    assert run.is_enabled()
    run.click()
    # Smoke: layer 0, heads 0-2 -> a 1 x 3 heat map, every cell filled once the sweep is done.
    page.wait_for_function(
        f"""() => {{
            const z = ({_PANEL_Z})();
            return z && z.length === 1 && z[0].length === 3
                && z[0].every(v => v !== null && Number.isFinite(v));
        }}""",
        timeout=SWEEP_S * 1000,
    )
    panel.locator("text=Done: 16 answers").wait_for(timeout=60_000)
    z = page.evaluate(_PANEL_Z)
    assert len(z) == 1 and len(z[0]) == 3
    progress = panel.locator(".widget-progress .widget-label, .widget-inline-hbox .widget-label")
    assert "16 / 16" in " ".join(progress.all_inner_texts())
    _shoot(page, tmp_path, "02_sweep_panel", panel)

    # The explorer's heat map is live too: clicking a cell selects that head in Python.
    explorer = page.locator(".sprint-lab-heatmap-explorer")
    explorer.scroll_into_view_if_needed()
    header = explorer.locator(".widget-html").first
    before = header.inner_text()
    drag = explorer.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    target = next(h for h in ("H0", "H1", "H2") if f"L0{h}" not in before)
    column = int(target[1])
    page.mouse.click(box["x"] + box["width"] * (column + 0.5) / 3, box["y"] + box["height"] / 2)
    explorer.locator(f"text=L0{target}").first.wait_for(timeout=60_000)
    assert f"L0{target}" in header.inner_text()
    diff = explorer.locator(".sl-diff")
    assert diff.count() == 1
    page.mouse.move(0, 0)  # hide the hover label
    shot = _shoot(page, tmp_path, "02_heatmap_explorer", explorer)
    assert shot.stat().st_size > 10_000
    diff.scroll_into_view_if_needed()
    _shoot(page, tmp_path, "02_explorer_diff", diff)
    _shoot(page, tmp_path, "02_head_sweep_heatmap")
