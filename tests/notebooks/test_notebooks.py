"""The tutorial notebooks: stored clean, and executed end to end in smoke mode with papermill.

Each notebook runs with ``SPRINT_LAB_SMOKE=1`` (a few questions, one layer, <= 24 new tokens on
the embedded SmolLM2-135M) and ``out_dir`` pointed at a temporary folder, in a fresh kernel;
a cell that raises fails the test. The files each notebook should write are checked too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_quickstart",
    "02_head_sweep_heatmap",
    "03_train_selector",
    "04_inspect_questions",
    "05_export_figures",
    "06_gpu_reproduction",
    "07_beyond_single_heads",
]
NOTEBOOK_TIMEOUT_S = 600  # per notebook (smoke runs take 0.5-1.5 min on 2 shared cores)
CELL_TIMEOUT_S = 400


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_all_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_parameters_cell(path: Path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "no code cells"
    for cell in code:
        assert cell["outputs"] == [], "outputs must not be committed"
        assert cell["execution_count"] is None
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", [])
    source = "".join(first["source"])
    for needle in (
        'os.environ.get("SPRINT_LAB_SMOKE") == "1"',
        'executor = "local"',
        'out_dir = "sprint-lab-out"',
        "model_name = ",
        "max_new_tokens = ",
        "dtype = ",
    ):
        assert needle in source, f"parameters cell lacks {needle!r}"
    assert cells[0]["cell_type"] == "markdown", "start with an explanation"
    meta = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert meta["kernelspec"]["name"] == "python3"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            for key in ("text/plain", "text/html"):
                parts.append(str(out.get("data", {}).get(key, "")))
    return "\n".join(parts)


def _check_outputs(name: str, out_dir: Path, nb) -> None:
    """What each notebook must have produced."""
    text = _outputs_text(nb)
    if name == "01_quickstart":
        assert "heads of layer 0 change this answer" in text
    elif name == "02_head_sweep_heatmap":
        assert list(out_dir.glob("02-sweep-*/part-*.parquet"))
        assert "SweepResult(20 rows: 4 questions x 5 configurations)" in text
    elif name == "03_train_selector":
        run = next(out_dir.glob("03-*"))
        assert (run / "selector" / "config.json").is_file()
        assert (run / "comparison.csv").is_file()
    elif name == "04_inspect_questions":
        assert "SprintSelector(9 heads" in text and "QuestionInspector(" in text
        last = nb.cells[-2]["outputs"][-1]["data"]["text/plain"]  # the custom question's answers
        assert last.split("\n")[1].split()[1] == "none" and "L0H" in last
    elif name == "05_export_figures":
        figures = next(out_dir.glob("05-*")) / "figures"
        pngs = sorted(p.name for p in figures.glob("*.png"))
        assert len(pngs) >= 6 and "heatmap_delta.png" in pngs
        assert (figures / "heatmap_delta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(list(figures.glob("*.html"))) == len(pngs)
    elif name == "06_gpu_reproduction":
        run = next(out_dir.glob("06-*"))
        assert (run / "comparison.csv").is_file()
        assert (run / "selector" / "config.json").is_file()
        assert "math500: train on arith, test on arith" in text
    elif name == "07_beyond_single_heads":
        run = next(out_dir.glob("07-*"))
        for store in ("sets", "kinds", "confirm", "greedy"):
            assert list((run / store).glob("part-*.parquet")), store
        assert "sweep prompts:" in text  # the mean ablation's reference
        assert "PrunePath(2 steps:" in text


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import nbformat

    monkeypatch.setenv("SPRINT_LAB_SMOKE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    out_dir = tmp_path / "out"
    executed = tmp_path / path.name
    started = time.perf_counter()
    papermill.execute_notebook(
        str(path),
        str(executed),
        parameters={"out_dir": str(out_dir)},
        kernel_name="python3",
        cwd=str(tmp_path),
        execution_timeout=CELL_TIMEOUT_S,
        progress_bar=False,
        log_output=False,
    )
    seconds = time.perf_counter() - started
    print(f"{path.stem}: {seconds:.1f} s in smoke mode")
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    _check_outputs(path.stem, out_dir, nb)
