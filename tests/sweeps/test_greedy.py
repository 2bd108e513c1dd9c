"""Greedy forward pruning: the path follows the best set at every step, its statistics are the
sweeps', ties break the documented way, and a path with a store resumes without recomputing."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from sprint_lab import InputError, greedy_prune, load_problems, sweep
from sprint_lab.core.heads import parse_config, split_kind
from sprint_lab.sweeps.rows import make_row
from sprint_lab.sweeps.store import SweepStore
from sprint_lab.viz import prune_path

CANDIDATES = ["L0H0", "L0H1", "L1H0", "L2H1"]


class ScriptedExecutor:
    """Answers every (configuration, question) pair from a script of head effects, no model.

    A question is answered correctly when the sum of its pruned heads' effects (``EFFECTS``:
    head -> +1 / -1 per question) plus the baseline's verdict (``BASE``) is positive, so the best
    set at each step is known in advance.
    """

    BASE = np.array([1, 1, 0, 0, 1, 0])
    EFFECTS = {
        "L0H0": np.array([0, 0, 1, 1, 0, 0]),  # +2 alone
        "L0H1": np.array([0, 0, 1, 1, 0, 0]),  # +2 too, but the same questions as L0H0
        "L1H0": np.array([0, 0, 0, 0, 0, 1]),  # +1, on another question: best second step
        "L2H1": np.array([-1, 0, 0, 0, 0, 0]),  # -1
    }

    def __init__(self) -> None:
        self.calls = 0
        self.pairs = 0

    def correct(self, config: str, question: int) -> bool:
        heads = parse_config(split_kind(config)[0], n_heads=2)
        effect = sum(self.EFFECTS[h.label][question] for h in heads)
        return bool(min(1, self.BASE[question] + effect) > 0)

    def run(self, job, items, sink) -> bool:
        self.calls += 1
        self.pairs += len(items)
        rows = []
        for item in items:
            ok = self.correct(item.config, item.question_index)
            completion = NS(text=str(int(ok)), n_tokens=1, finish_reason="stop")
            verdict = NS(correct=ok, extracted=str(int(ok)), extractor="scripted")
            rows.append(
                make_row(job.problems[item.question_index], item.config, completion, verdict)
            )
        sink.emit(pd.DataFrame(rows))
        return True


@pytest.fixture(scope="module")
def problems():
    return load_problems("arith", limit=6, seed=1)


def test_scripted_path_picks_the_known_best_sets(tiny, problems):
    executor = ScriptedExecutor()
    path = greedy_prune(tiny, problems, CANDIDATES, k=3, executor=executor)
    # only new options are generated after step 1: baseline + 4, then 3, then 2 sets
    assert executor.pairs == 6 * (5 + 3 + 2)
    # Step 1: L0H0 and L0H1 tie on accuracy and flips -> the earlier candidate.
    # Step 2: L1H0 adds a question (L0H1 adds nothing); step 3: L0H1 (0) beats L2H1 (-1).
    assert path.table["added"].tolist() == ["L0H0", "L1H0", "L0H1"]
    assert path.table["config"].tolist() == [
        "L0H0",
        "L0H0+L1H0",
        "L0H0+L1H0+L0H1",
    ]  # in pruning order
    np.testing.assert_allclose(path.table["accuracy"], [5 / 6, 1.0, 1.0])
    np.testing.assert_allclose(path.table["step_delta"], [2 / 6, 1 / 6, 0.0])
    np.testing.assert_allclose(path.table["delta"], [2 / 6, 3 / 6, 3 / 6])
    assert path.table["runner_up"].tolist() == ["L0H1", "L0H1", "L2H1"]
    assert path.table["n_candidates"].tolist() == [4, 3, 2]
    assert path.heads[0].label == "L0H0" and "L0H0 -> L1H0 -> L0H1" in repr(path)
    # every alternative is recorded: 4 + 3 + 2 rows, each scored against the current set
    step2 = path.candidates[path.candidates.step == 2].set_index("candidate")
    assert step2.loc["L0H1", "step_delta"] == 0
    assert step2.loc["L2H1", "step_delta"] == pytest.approx(-1 / 6)
    assert len(path.candidates) == 9
    # the step p-values are McNemar's exact test on the same verdicts
    assert path.table["step_p_value"].iloc[2] == 1.0
    assert (path.table["q_value"] >= path.table["p_value"] - 1e-12).all()
    rows = path.rows()
    assert rows.columns[0] == "step" and len(rows) == 6 * (
        5 + 5 + 4
    )  # baseline (+ current set) + options


def test_ties_break_by_fewest_flips(tiny, problems):
    class Flippy(ScriptedExecutor):
        # L0H0 and L0H1 both keep accuracy 3/6, but L0H0 trades two verdicts, L0H1 none.
        EFFECTS = {
            **ScriptedExecutor.EFFECTS,
            "L0H0": np.array([-1, 0, 1, 0, 0, 0]),
            "L0H1": np.array([0, 0, 0, 0, 0, 0]),
            "L1H0": np.array([-1, 0, 0, 0, 0, 0]),
        }

    path = greedy_prune(tiny, problems, ["L0H0", "L0H1", "L1H0"], k=1, executor=Flippy())
    assert path.table["added"].tolist() == ["L0H1"]
    flips = path.candidates.set_index("candidate")["flips"].to_dict()
    assert flips == {"L0H0": 2, "L0H1": 0, "L1H0": 1}


def test_path_agrees_with_independent_sweeps_and_resumes(tiny, problems, tmp_path):
    """On the real (tiny) model: each step's chosen set scores what a separate sweep of it
    scores, and a second call with the same store recomputes nothing."""
    settings = dict(max_new_tokens=3, batch_size=5, progress=False)
    candidates = ["L0H0", "L1H1", "L2H3"]
    path = greedy_prune(tiny, problems[:3], candidates, k=2, out=tmp_path / "path", **settings)
    assert SweepStore(tmp_path / "path").has_rows()  # every step in one store
    check = sweep(tiny, problems[:3], configs=path.table["config"].tolist(), **settings)
    for step in path.sweeps:
        for config in step.configs:
            if config in check.configs:
                ours = step.table.set_index(["question_id", "config"]).xs(config, level=1)
                theirs = check.table.set_index(["question_id", "config"]).xs(config, level=1)
                assert ours["completion"].tolist() == theirs["completion"].tolist()

    class Refuse(ScriptedExecutor):
        def run(self, job, items, sink):
            if items:
                raise AssertionError(f"recomputed {len(items)} pairs")
            return True

    again = greedy_prune(
        tiny, problems[:3], candidates, k=2, out=tmp_path / "path", executor=Refuse(), **settings
    )
    pd.testing.assert_frame_equal(again.table, path.table)


def test_bad_settings_are_named(tiny, problems):
    with pytest.raises(InputError, match="k=5 is more than the 4"):
        greedy_prune(tiny, problems, CANDIDATES, k=5)
    with pytest.raises(InputError, match="k must be"):
        greedy_prune(tiny, problems, CANDIDATES, k=0)
    with pytest.raises(InputError, match="unknown ablation kind 'median'"):
        greedy_prune(tiny, problems, CANDIDATES, k=1, kind="median")
    with pytest.raises(InputError, match="listed twice"):
        greedy_prune(tiny, problems, ["L0H0", "L0H0"], k=1)
    with pytest.raises(InputError, match="'configs'"):
        greedy_prune(tiny, problems, CANDIDATES, k=1, configs=["L0H0"])


def test_mean_kind_labels_every_set(tiny, problems):
    path = greedy_prune(tiny, problems[:2], ["L0H0", "L1H0"], k=2, kind="mean",
                        executor=ScriptedExecutor())  # fmt: skip
    assert all(label.endswith("@mean") for label in path.table["config"])
    assert path.sweeps[0].meta["ablation_reference"].startswith("sweep prompts:")


def test_prune_path_figure(tiny, problems):
    path = greedy_prune(tiny, problems, CANDIDATES, k=3, executor=ScriptedExecutor())
    fig = prune_path(path)
    chosen, runner, stars = fig.data
    assert list(chosen.x) == [1, 2, 3] and list(chosen.text) == ["L0H0", "+L1H0", "+L0H1"]
    np.testing.assert_allclose(chosen.y, path.table["accuracy"])
    upper = path.table["baseline_accuracy"] + path.table["ci_high"] - path.table["accuracy"]
    np.testing.assert_allclose(chosen.error_y.array, np.clip(upper, 0, None))
    np.testing.assert_allclose(runner.y, path.table["runner_up_accuracy"])
    assert len(stars.x) == int((path.table["q_value"] <= 0.05).sum())
    with pytest.raises(TypeError, match="PrunePath"):
        prune_path([1, 2])
