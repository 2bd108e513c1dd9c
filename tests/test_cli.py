"""The command line: sweep -> report -> train-selector -> compare, on tiny sizes; every
anticipated failure as one line on stderr with its exit code (2 input, 3 setup, 130 interrupt)."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sprint_lab import SweepResult
from sprint_lab.cli import build_parser, describe_error, exit_code_for, main
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.sweeps.store import SweepStore
from tests.helpers import REPO_ROOT


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


# -- failures: one line on stderr, an exit code that says what to change --------------------------

SUBPROCESS_TIMEOUT = 120


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: the exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, command: str, fragment: str) -> None:
    """The error is one ``sprint-lab <command>: error: ...`` line holding ``fragment``, last on
    stderr (a sweep's progress bar may come before it), and no traceback is shown."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], f"expected one error line:\n{err}"
    assert lines[-1].startswith(f"sprint-lab {command}: error: "), lines[-1]
    assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in err


@pytest.fixture
def tiny_sweep_args(tiny_models, tmp_path) -> list[str]:
    """Arguments of the smallest sweep: the tiny Llama, one question, one head, 2 new tokens."""
    common = ["--model", str(tiny_models["llama"]), "--dtype", "float32", "--device", "cpu"]
    return ["sweep", *common, "--limit", "1", "--heads", "L0H0", "--max-new-tokens", "2"]


def test_help_answers_before_torch_is_imported():
    script = (
        "import sys\n"
        "from sprint_lab.cli import main\n"
        "for argv in (['--help'], ['sweep', '--help'], ['repair', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, stop.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('HELP-OK')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "--recompute-stale" in done.stdout and "HELP-OK" in done.stdout


def test_usage_errors_are_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--layers", "a,b", "--out", "x"])
    assert stop.value.code == 2
    assert_one_line(capsys.readouterr().err, "sweep", "expected comma-separated integers")


def test_debug_is_accepted_before_and_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--debug", "sweep", "--out", "x"]).debug is True
    assert parser.parse_args(["sweep", "--out", "x", "--debug"]).debug is True
    assert parser.parse_args(["sweep", "--out", "x"]).debug is False


def test_missing_dataset_files_exit_3(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    for dataset in ("math500", "gsm8k"):
        argv = ["sweep", "--dataset", dataset, "--data-dir", str(empty), "--out", str(tmp_path)]
        code, _, err = run_main(capsys, *argv)
        assert code == 3
        assert_one_line(err, "sweep", f"{dataset}/test.jsonl")
        assert str(empty) in err


def test_debug_prints_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    argv = ["sweep", "--dataset", "math500", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    code, _, err = run_main(capsys, "--debug", *argv)
    assert code == 3
    assert "Traceback (most recent call last)" in err and "DatasetUnavailableError" in err
    assert err.strip().splitlines()[-1].startswith("sprint-lab sweep: error: ")


def test_cuda_on_a_cpu_box_exit_3_before_loading_weights(tiny_sweep_args, tmp_path, capsys):
    import torch
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the device was checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
        argv = [*tiny_sweep_args, "--out", str(tmp_path / "r"), "--device", "cuda"]
        code, _, err = run_main(capsys, *argv)
    assert code == 3
    assert_one_line(err, "sweep", "device 'cuda' requested but torch.cuda.is_available() is False")


def test_unknown_device_exit_2(tiny_sweep_args, tmp_path, capsys):
    code, _, err = run_main(capsys, *tiny_sweep_args, "--out", str(tmp_path), "--device", "gpu")
    assert code == 2
    assert_one_line(err, "sweep", "unknown device 'gpu'")


def test_model_path_that_does_not_exist_is_not_a_hub_id(tmp_path, capsys):
    argv = ["sweep", "--model", "./nope", "--limit", "1", "--out", str(tmp_path / "r")]
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert_one_line(err, "sweep", "no model at ./nope (not a file or folder)")
    assert "Hugging Face hub" not in err


def test_broken_config_json_names_the_file_and_position(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n}\n')
    argv = ["sweep", "--model", str(folder), "--limit", "1", "--out", str(tmp_path / "r")]
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert_one_line(err, "sweep", f"{folder / 'config.json'} is not valid JSON: line 3 column 1")


def test_out_that_is_a_file_exit_2(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    code, _, err = run_main(capsys, "sweep", "--limit", "1", "--out", str(out))
    assert code == 2
    assert_one_line(err, "sweep", f"{out} exists and is not a folder")


def test_disk_full_during_a_sweep_exit_3_naming_the_file(tiny_sweep_args, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "r"
    target = out / "part-0001.parquet"

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_parquet", full)
        code, _, err = run_main(capsys, *tiny_sweep_args, "--out", str(out))
    assert code == 3
    assert_one_line(err, "sweep", f"disk full writing {target}")


def test_disk_full_without_a_file_name_names_the_results_folder(tiny_sweep_args, tmp_path, capsys):
    out = tmp_path / "r"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no name

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", full)
        code, _, err = run_main(capsys, *tiny_sweep_args, "--out", str(out))
    assert code == 3
    assert_one_line(err, "sweep", f"disk full writing {out}")


def test_interrupt_exit_130_keeps_finished_batches(tiny_sweep_args, tmp_path, capsys):
    import sprint_lab.sweeps.run as run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "sweep", interrupted)
        code, _, err = run_main(capsys, *tiny_sweep_args, "--out", str(tmp_path / "r"))
    assert code == 130
    assert_one_line(err, "sweep", f"finished batches are kept in {tmp_path / 'r'}")


def sweep_kwargs(capsys, *argv: str) -> dict:
    """The keyword arguments ``sprint-lab sweep argv`` passes to ``sweep`` (not run)."""
    import sprint_lab.sweeps.run as run

    seen: list[dict] = []

    def record(*args, **kwargs):
        seen.append(kwargs)
        raise InputError("stop here")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "sweep", record)
        code, _, err = run_main(capsys, *argv)
    assert code == 2 and "stop here" in err
    return seen[0]


def test_recompute_stale_and_placebos_are_passed_on(tiny_sweep_args, tmp_path, capsys):
    seen = [
        sweep_kwargs(capsys, *tiny_sweep_args, "--out", str(tmp_path), *extra)
        for extra in ([], ["--recompute-stale", "--placebos", "2"])
    ]
    assert seen[0]["recompute_stale"] is False and seen[0]["placebos"] == 0
    assert seen[1]["recompute_stale"] is True and seen[1]["placebos"] == 2


def test_an_unanticipated_error_keeps_its_traceback(monkeypatch, tmp_path):
    from sprint_lab import cli

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "report", bug)
    with pytest.raises(ZeroDivisionError, match="a bug") as info:
        main(["report", str(tmp_path)])
    assert any("please report it" in note for note in info.value.__notes__)


@pytest.mark.parametrize(
    "error, code, fragment",
    [
        (InputError("bad head L9H9"), 2, "bad head L9H9"),
        (SetupError("no GPU"), 3, "no GPU"),
        (KeyboardInterrupt(), 130, "finished batches are kept"),
        (OSError(errno.ENOSPC, "No space left on device", "o/p.parquet"), 3, "disk full writing"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "o/p.parquet"), 3, "disk quota exceeded"),
        (PermissionError(errno.EACCES, "Permission denied", "o/p"), 3, "cannot write o/p"),
        (OSError(errno.EROFS, "Read-only file system", "o/p"), 3, "Read-only file system"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "o/r.html"), 2, "o/r.html is a folder"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "f/x"), 2, "bad path f/x"),
        (FileExistsError("o exists"), 2, "o exists"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.jsonl"), 2, "x.jsonl"),
        (ValueError("temperature must be >= 0"), 2, "temperature must be >= 0"),
        (ModuleNotFoundError("No module named 'ray'", name="ray"), 3, "sprint_lab[ray]"),
        (ModuleNotFoundError("No module named 'plotly'", name="plotly"), 3, "sprint_lab[viz]"),
    ],
)
def test_exit_code_table(error, code, fragment):
    assert exit_code_for(error) == code
    message = describe_error(error, argparse.Namespace(out="o"))
    assert fragment in message and "\n" not in message


def test_errors_outside_the_table_are_bugs():
    assert exit_code_for(ZeroDivisionError()) is None
    assert exit_code_for(KeyError("x")) is None


def test_dataset_errors_have_exit_codes():
    from sprint_lab.tasks.records import DatasetUnavailableError, ProblemFormatError

    assert issubclass(DatasetUnavailableError, RuntimeError)
    assert issubclass(DatasetUnavailableError, SetupError)
    assert issubclass(ProblemFormatError, ValueError)
    assert issubclass(ProblemFormatError, InputError)
    assert exit_code_for(DatasetUnavailableError("x")) == 3
    assert exit_code_for(ProblemFormatError("x")) == 2


@pytest.fixture
def tiny_results(tiny_sweep_args, tmp_path, capsys) -> Path:
    """A finished sweep's results folder (tiny model, one question, one head)."""
    out = tmp_path / "results"
    assert main([*tiny_sweep_args, "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def test_report_html_to_a_folder_exit_2(tiny_results, tmp_path, capsys):
    folder = tmp_path / "html"
    folder.mkdir()
    code, _, err = run_main(capsys, "report", str(tiny_results), "--html", str(folder))
    assert code == 2
    assert_one_line(err, "report", f"{folder} is a folder")


def test_repair_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    code, _, err = run_main(capsys, "repair", str(tmp_path))
    assert code == 2
    assert_one_line(err, "repair", f"{tmp_path} is not a sweep results folder")
    afile = tmp_path / "x.txt"
    afile.write_text("")
    code, _, err = run_main(capsys, "repair", str(afile))
    assert code == 2
    assert_one_line(err, "repair", f"{afile} exists and is not a folder")


def test_repair_reports_what_it_did(tiny_results, tmp_path, capsys):
    import shutil

    store = SweepStore(shutil.copytree(tiny_results, tmp_path / "copy"))
    clean = str(store.repair())  # a clean store: nothing to do, and the same summary again
    code, out, err = run_main(capsys, "repair", str(store.path))
    assert code == 0 and err == "" and out.strip() == clean.strip() and "nothing to repair" in out
    victim = store.parts()[0]
    victim.write_bytes(victim.read_bytes()[:-40] + b"x" * 40)  # a changed tail
    code, out, err = run_main(capsys, "repair", str(store.path))
    assert code == 0 and f"quarantined {victim.name}" in out and "will recompute" in out
    assert (store.path / "quarantine" / victim.name).is_file()


def test_configs_sweep_head_sets_layers_and_kinds(tiny_models, tmp_path, capsys):
    """--configs runs head sets, whole layers and @mean configurations into the store."""
    from sprint_lab.sweeps.result import SweepResult

    common = ["--model", str(tiny_models["llama"]), "--dtype", "float32", "--device", "cpu"]
    out = tmp_path / "configs"
    code, printed, err = run_main(
        capsys, "sweep", *common, "--limit", "2", "--max-new-tokens", "2", "--out", str(out),
        "--configs", "L0H1+L2H0,L1,L0H1@mean",
    )  # fmt: skip
    assert code == 0, err
    result = SweepResult.load(out)
    assert result.configs == ["L0H1+L2H0", "L1", "L0H1@mean"]  # the pruned ones
    assert len(result.table) == 2 * 4 and result.complete
    assert result.meta["ablation_reference"].startswith("sweep prompts:")
    assert "L0H1+L2H0" in printed
    html = tmp_path / "report.html"
    code, _, err = run_main(capsys, "report", str(out), "--html", str(html))
    assert code == 0, err
    assert "L0H1+L2H0" in html.read_text(encoding="utf-8")  # the configuration axis

    code, _, err = run_main(
        capsys, "sweep", *common, "--out", str(tmp_path / "bad"), "--configs", "L0H1+L9H0",
    )  # fmt: skip
    assert code == 2 and "--configs" in err and "L9H0" in err
    code, _, err = run_main(
        capsys, "sweep", *common, "--out", str(tmp_path / "both"), "--configs", "L1",
        "--heads", "L0H0",
    )  # fmt: skip
    assert code == 2 and "--configs replaces --heads" in err


def test_kind_applies_to_heads(tiny_sweep_args, tmp_path, capsys):
    extra = ["--kind", "resample", "--resample-seed", "3"]
    seen = sweep_kwargs(capsys, *tiny_sweep_args, "--out", str(tmp_path), *extra)
    assert [c.label for c in seen["configs"]] == ["L0H0@resample"]
    assert "heads" not in seen and seen["resample_seed"] == 3


def test_vllm_executor_flags():
    from sprint_lab.cli import build_parser, executor_for
    from sprint_lab.sweeps.vllm import VLLMExecutor

    args = build_parser().parse_args(
        ["sweep", "--out", "x", "--executor", "vllm", "--vllm-url", "http://127.0.0.1:8000",
         "--max-loras", "8"]
    )  # fmt: skip
    executor = executor_for(args)
    assert isinstance(executor, VLLMExecutor)
    assert (executor.base_url, executor.max_loras) == ("http://127.0.0.1:8000", 8)
