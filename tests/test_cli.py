"""The command line: sweep -> report -> train-selector -> compare, on tiny sizes."""

from __future__ import annotations

import pytest

from sprint_lab import SweepResult
from sprint_lab.cli import build_parser, main


def test_parser_rejects_bad_layers():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--layers", "a,b", "--out", "x"])


def test_bad_head_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--heads",
            "L99H0",
            "--limit",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--dtype",
            "float32",
        ]
    )
    assert code == 2
    assert "valid layers are 0..29" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_report_train_compare(tmp_path, capsys):
    results = tmp_path / "results"
    common = ["--dtype", "float32", "--max-new-tokens", "40"]
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "arith",
                "--split",
                "train",
                "--layers",
                "0",
                "--limit",
                "16",
                "--out",
                str(results),
                *common,
            ]
        )
        == 0
    )
    result = SweepResult.load(results)
    assert len(result.table) == 16 * 10 and result.meta["dataset"] == "arith"
    html = tmp_path / "report.html"
    assert main(["report", str(results), "--html", str(html)]) == 0
    assert html.is_file() and "L0H1" in capsys.readouterr().out
    selector = tmp_path / "selector"
    assert (
        main(
            ["train-selector", str(results), "--out", str(selector), "--dim", "4", "--epochs", "5"]
        )
        == 0
    )
    assert (selector / "config.json").is_file()
    compare = tmp_path / "compare"
    assert (
        main(
            [
                "compare",
                "--selector",
                str(selector),
                "--limit",
                "2",
                "--ns",
                "1,2",
                "--seeds",
                "0",
                "--out",
                str(compare),
                *common,
            ]
        )
        == 0
    )
    assert (compare / "comparison.parquet").is_file()
    assert "best_of_n" in capsys.readouterr().out
