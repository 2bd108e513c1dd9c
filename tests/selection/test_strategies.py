"""SPRINT vs random heads vs best-of-N: scoring rules and an end-to-end embedded-model run."""

from __future__ import annotations

import pytest

from sprint_lab import SprintSelector, all_heads, load_problems, sweep
from sprint_lab.selection.strategies import compare_strategies, majority_at_n, pass_at_n


def test_pass_and_majority_rules():
    assert pass_at_n([False, True]) and not pass_at_n([False, False])
    assert majority_at_n(["3", "4", "4"], [True, False, False]) is False
    assert majority_at_n(["3", None, "4"], [True, False, False]) is True  # tie -> best rank
    assert majority_at_n(["1,000", "1000.0", "7"], [True, True, False]) is True
    assert majority_at_n([None, None], [False, False]) is False


@pytest.mark.slow
def test_end_to_end_sweep_fit_compare(embedded_model, tmp_path):
    model = embedded_model
    train = load_problems("arith", "train", limit=10, seed=0)
    test = load_problems("arith", "test", limit=4, seed=0)
    heads = all_heads(model, layers=[0])[:6]
    settings = dict(max_new_tokens=16, batch_size=16, progress=False)
    train_sweep = sweep(model, train, heads, **settings)
    selector = SprintSelector(heads, encoder="minilm", dim=8, seed=0)
    selector.fit(train_sweep, train, epochs=30)
    assert selector.history["train_loss"].notna().any()

    with pytest.raises(ValueError, match="used to fit the selector"):
        compare_strategies(model, train[:2], selector, ns=(1, 2), **settings)

    table = compare_strategies(
        model, test, selector, ns=(1, 2, 4), seeds=(0, 1), out=tmp_path, **settings
    )
    assert set(table["strategy"]) == {"no_prune", "sprint", "random_heads", "best_of_n", "oracle"}
    passes = table[table.metric == "pass_at_n"].pivot(index="n", columns="strategy", values="value")
    assert (passes["oracle"] >= passes["sprint"]).all()
    assert (passes["oracle"] >= passes["random_heads"]).all()
    assert passes["sprint"].is_monotonic_increasing and passes["best_of_n"].is_monotonic_increasing
    accuracy = table[table.metric == "accuracy"]
    assert set(accuracy["strategy"]) == {"no_prune", "sprint", "random_heads"}
    assert (accuracy["n"] == 1).all()
    assert (tmp_path / "best_of_n.parquet").is_file()
    assert table["value"].between(0, 1).all()
