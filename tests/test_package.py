"""The top-level package: every public name loads lazily, and ``import sprint_lab`` stays light."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import sprint_lab
from tests.helpers import REPO_ROOT

HAS_LIMITS = importlib.util.find_spec("sprint_lab.generation.limits") is not None
NAMES = [name for name in sprint_lab.__all__ if name != "PromptTooLongError" or HAS_LIMITS]


def run_python(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_public_name_imports_and_is_listed():
    listed = dir(sprint_lab)
    for name in NAMES:
        assert getattr(sprint_lab, name) is not None, name
        assert name in listed, name
    assert len(set(sprint_lab.__all__)) == len(sprint_lab.__all__)
    if HAS_LIMITS:
        names: dict = {}
        exec("from sprint_lab import *", names)
        assert set(sprint_lab.__all__) <= set(names)


def test_public_names_are_the_subpackages_objects():
    from sprint_lab.core.errors import InputError
    from sprint_lab.sweeps.run import sweep
    from sprint_lab.tasks.records import DatasetUnavailableError

    assert sprint_lab.sweep is sweep and sprint_lab.InputError is InputError
    assert sprint_lab.DatasetUnavailableError is DatasetUnavailableError
    assert sprint_lab.viz.__name__ == "sprint_lab.viz"
    for name in NAMES:
        module = sprint_lab.LAZY_NAMES.get(name)
        known = name in sprint_lab.SUBPACKAGES or name in sprint_lab.MODULE_ALIASES
        assert module is not None or known, name
    assert sprint_lab.stats.__name__ == "sprint_lab.sweeps.stats"


@pytest.mark.skipif(not HAS_LIMITS, reason="sprint_lab.generation.limits not written yet")
def test_prompt_too_long_error_is_exported():
    from sprint_lab.generation.limits import PromptTooLongError

    assert sprint_lab.PromptTooLongError is PromptTooLongError


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = sprint_lab.no_such_name


def test_import_is_light_and_star_import_works():
    script = (
        "import sys\n"
        "import sprint_lab, sprint_lab.core, sprint_lab.core.errors, sprint_lab.cli\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'plotly') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "names = {}\n"
        "exec('from sprint_lab.core import *', names)\n"
        "assert 'torch' in sys.modules and 'load_model' in names\n"
        "print('LIGHT-OK')\n"
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert "LIGHT-OK" in done.stdout
