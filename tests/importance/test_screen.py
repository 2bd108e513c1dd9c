"""Group-knockout screening: lasso recovery, the screen on the tiny model, and its errors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import sprint_lab as sl
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.heads import Head, all_heads
from sprint_lab.core.model import load_model
from sprint_lab.importance.proxies import answer_logprobs
from sprint_lab.importance.screen import ScreenResult, recover_effects, screen
from sprint_lab.tasks.prompts import PromptTemplate

SHOT = "Q: Tom has 2 apples and gets 3 more. How many apples does he have?\nA: 2 + 3 = 5. " + (
    "The answer is 5."
)

# One short exemplar as a shared prefix: fast, and still on the shared-prefix path.
SHORT = PromptTemplate(
    name="short_screen_test",
    stop=("Q:",),
    needs_chat_template=False,
    builder=lambda question, tokenizer: (SHOT, f"\n\nQ: {question}\nA:"),
)


@pytest.fixture(scope="module")
def problems():
    return sl.load_problems("arith", limit=4)


@pytest.fixture(scope="module")
def screened(tiny, problems):
    """One logprob screen of all 12 tiny heads (24 masks of 2), reused by several tests."""
    return screen(
        tiny, problems, all_heads(tiny), n_masks=24, group_size=2, prompt=SHORT, n_bootstrap=10
    )


def _single_head_logprob(model, problems, heads):
    """The single-head log-prob proxy: mean change in gold-answer log-prob per pruned head."""
    lp = answer_logprobs(model, problems, [None] + [[h] for h in heads], prompt=SHORT)
    return (lp[:, 1:] - lp[:, :1]).mean(dim=0).numpy()


def _random_design(rng, n_masks, n_heads, group_size):
    design = np.zeros((n_masks, n_heads))
    for row in design:
        row[rng.choice(n_heads, size=group_size, replace=False)] = 1
    return design


# --------------------------------------------------------------------------------------------
# recover_effects on synthetic data
# --------------------------------------------------------------------------------------------


def test_recover_effects_finds_a_planted_sparse_vector():
    rng = np.random.default_rng(3)
    n_heads, truth = 60, np.zeros(60)
    planted = [4, 17, 41]
    truth[planted] = [-0.8, 0.6, -0.5]
    design = _random_design(rng, 40, n_heads, 6)  # 40 measurements for 60 unknowns
    y = design @ truth + rng.normal(0, 0.02, size=40)
    rec = recover_effects(design, y, seed=0, n_bootstrap=40)
    top = np.argsort(-np.abs(rec.effect))[:3]
    assert sorted(top.tolist()) == planted
    np.testing.assert_allclose(rec.effect[planted], truth[planted], atol=0.1)
    others = np.setdiff1d(np.arange(n_heads), planted)
    assert np.abs(rec.effect[others]).max() < 0.1
    assert (rec.stability[planted] >= 0.9).all()
    assert rec.stability[others].mean() < 0.5
    assert (rec.ci_low[planted] <= rec.effect[planted]).all()
    assert (rec.effect[planted] <= rec.ci_high[planted]).all()
    assert rec.alpha > 0 and rec.cv_folds == 5


def test_recover_effects_is_seeded_and_handles_edge_cases():
    rng = np.random.default_rng(0)
    design = _random_design(rng, 12, 8, 2)
    y = design @ np.r_[1.0, np.zeros(7)] + rng.normal(0, 0.05, size=12)
    a, b = (recover_effects(design, y, seed=5, n_bootstrap=8) for _ in range(2))
    np.testing.assert_array_equal(a.effect, b.effect)
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    flat = recover_effects(design, np.zeros(12), n_bootstrap=3)  # nothing moved: all zero
    assert not flat.effect.any() and not flat.stability.any() and flat.alpha == 0.0
    none = recover_effects(design, y, n_bootstrap=0)
    assert np.isnan(none.stability).all() and np.isnan(none.ci_high).all()
    assert recover_effects(design[:2], y[:2], n_bootstrap=2).cv_folds == 2


@pytest.mark.parametrize(
    ("design", "y", "message"),
    [
        (np.ones((1, 3)), np.ones(1), "expected [n_masks, n_heads] with n_masks >= 2"),
        (np.ones(3), np.ones(3), "design has shape (3,)"),
        (np.ones((4, 3)), np.ones(3), "y has shape (3,); expected (4,)"),
        (np.ones((2, 3)), np.array([1.0, np.nan]), "design and y must be finite"),
    ],
)
def test_recover_effects_rejects_bad_inputs(design, y, message):
    with pytest.raises(InputError) as error:
        recover_effects(design, y)
    assert message in str(error.value)


# --------------------------------------------------------------------------------------------
# screen on the tiny model
# --------------------------------------------------------------------------------------------


def test_screen_logprob_is_deterministic_and_counts_evaluations(tiny, problems, screened):
    heads = all_heads(tiny)
    again = screen(tiny, problems, heads, n_masks=24, group_size=2, prompt=SHORT, n_bootstrap=10)
    pd.testing.assert_frame_equal(screened.effects, again.effects)
    pd.testing.assert_frame_equal(screened.masks, again.masks)
    other = screen(tiny, problems, heads, n_masks=24, group_size=2, prompt=SHORT, seed=1)
    assert not other.masks.equals(screened.masks)

    meta = screened.meta
    assert meta["evaluations"] == (24 + 1) * len(problems) == 100
    assert (meta["metric"], meta["n_masks"], meta["group_size"], meta["seed"]) == (
        "logprob",
        24,
        2,
        0,
    )
    assert meta["model"] == tiny.name and meta["alpha"] >= 0
    effects = screened.effects
    assert effects.columns.tolist() == [
        "config", "layer", "head", "effect", "ci_low", "ci_high", "stability", "rank"
    ]  # fmt: skip
    assert sorted(effects["config"]) == sorted(h.label for h in heads)
    assert effects["rank"].tolist() == list(range(1, 13))
    assert effects["effect"].abs().is_monotonic_decreasing
    assert screened.masks.shape == (24, 12) and (screened.masks.sum(axis=1) == 2).all()
    scores = screened.scores
    assert scores["config"].iloc[0] == "none" and scores["delta"].iloc[0] == 0.0
    first = scores.iloc[1]
    knocked = screened.masks.columns[screened.masks.iloc[0].to_numpy() == 1].tolist()
    assert first["config"] == "+".join(knocked)
    # a mask's score is the mean over questions of answer_logprobs under that mask
    lp = answer_logprobs(tiny, problems, [None, knocked], prompt=SHORT).mean(dim=0)
    assert first["score"] == pytest.approx(float(lp[1]), abs=1e-5)
    assert first["delta"] == pytest.approx(float(lp[1] - lp[0]), abs=1e-5)


def test_shortlist_feeds_a_sweep_and_as_deltas_draws(tiny, problems, screened):
    top = screened.shortlist(3)
    assert len(top) == 3 and all(isinstance(h, Head) for h in top)
    assert [h.label for h in top] == screened.effects["config"].head(3).tolist()
    assert len(screened.shortlist(100)) == 12
    result = sl.sweep(tiny, problems[:1], heads=top, max_new_tokens=2, progress=False)
    assert set(result.deltas()["config"]) == {h.label for h in top}
    assert len(result.table) == 4  # 1 question x (baseline + 3 shortlisted heads)

    deltas = screened.as_deltas()
    assert deltas.columns[:4].tolist() == ["config", "layer", "head", "delta"]
    np.testing.assert_array_equal(deltas["delta"], screened.effects["effect"])
    from sprint_lab.viz.heatmap import heatmap

    fig = heatmap(deltas)
    assert list(fig.data[0].y) == ["L0", "L1", "L2"] and len(fig.data[0].x) == 4
    assert np.nanmax(np.abs(np.asarray(fig.data[0].z, dtype=float))) == pytest.approx(
        float(deltas["delta"].abs().max())
    )


def test_screen_agrees_with_the_single_head_logprob_proxy(tiny, problems, screened):
    """On the tiny model the heads' effects are close to additive, so 24 masks of 2 heads (25
    evaluations per question, against 13 single-head ones) rank the 12 heads like the
    single-head proxy: Spearman 0.86-0.99 over seeds 0-3 and group sizes 2-3 when written."""
    heads = all_heads(tiny)
    single = _single_head_logprob(tiny, problems, heads)
    effect = screened.effects.set_index("config").loc[[h.label for h in heads], "effect"]
    rho = stats.spearmanr(effect.to_numpy(), single).statistic
    assert rho > 0.7
    strongest = int(np.argmax(np.abs(single)))
    assert np.sign(effect.to_numpy()[strongest]) == np.sign(single[strongest])


def test_screen_finds_a_planted_head(tiny_models, problems):
    """Scaling one head's ``o_proj`` input columns makes knocking it out matter most; a screen
    with fewer masks than candidates must rank it first, with full stability."""
    model = load_model(tiny_models["llama"], dtype="float32")  # own copy: weights are edited
    d_head = model.hf_model.config.hidden_size // model.n_heads
    o_proj = model.hf_model.model.layers[1].self_attn.o_proj
    with torch.no_grad():
        o_proj.weight[:, 2 * d_head : 3 * d_head] *= 12.0
    heads = all_heads(model)
    single = _single_head_logprob(model, problems, heads)
    assert heads[int(np.argmax(np.abs(single)))] == Head(1, 2)  # the plant worked
    result = screen(model, problems, heads, n_masks=10, group_size=3, prompt=SHORT, n_bootstrap=20)
    best = result.effects.iloc[0]
    assert best["config"] == "L1H2"
    assert best["stability"] == 1.0
    assert np.sign(best["effect"]) == np.sign(single[heads.index(Head(1, 2))])
    assert result.shortlist(1) == [Head(1, 2)]


def test_screen_accuracy_runs(tiny, problems):
    result = screen(
        tiny,
        problems[:2],
        all_heads(tiny, layers=[0]),
        n_masks=3,
        group_size=2,
        metric="accuracy",
        max_new_tokens=4,
        prompt=SHORT,
        n_bootstrap=2,
    )
    assert result.meta["metric"] == "accuracy" and result.meta["evaluations"] == 8
    assert result.meta["max_new_tokens"] == 4
    assert result.scores["score"].between(0, 1).all()
    assert set(result.scores["score"] * 2) <= {0.0, 1.0, 2.0}  # accuracies over 2 questions
    assert len(result.effects) == 4 and result.effects["effect"].notna().all()


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "loss"}, "metric='loss' is unknown; choose one of logprob, accuracy"),
        ({"n_masks": 1}, "n_masks must be an int >= 2, got 1"),
        ({"n_masks": 2.5}, "n_masks must be an int >= 2, got 2.5"),
        ({"group_size": 0}, "group_size must be an int between 1 and the number of candidate"),
        ({"group_size": 5}, "heads (4), got 5"),
        ({"group_size": True}, "got True"),
        ({"n_bootstrap": -1}, "n_bootstrap must be an int >= 0, got -1"),
        ({"heads": []}, "heads is empty: give at least one candidate head"),
        ({"heads": ["L0H1", (0, 1), "L0H2"]}, "heads repeat: L0H1 (2 times)"),
        ({"heads": ["L7H0"]}, "heads: unknown layer 7 in L7H0: valid layers are 0..2"),
        ({"heads": ["bogus"]}, "heads: not a head label: 'bogus'"),
        ({"problems": []}, "problems is empty"),
    ],
)
def test_screen_errors(tiny, problems, kwargs, message):
    args = {"problems": problems[:1], "heads": all_heads(tiny, layers=[0])}
    args.update(kwargs)
    with pytest.raises(InputError) as error:
        screen(tiny, args.pop("problems"), args.pop("heads"), prompt=SHORT, **args)
    assert message in str(error.value)


def test_shortlist_rejects_bad_k():
    result = ScreenResult(
        pd.DataFrame(columns=["rank", "layer", "head"]), pd.DataFrame(), pd.DataFrame()
    )
    with pytest.raises(InputError, match=r"k must be an int >= 1, got 0"):
        result.shortlist(0)


def test_missing_scikit_learn_is_a_setup_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)  # import now fails
    with pytest.raises(SetupError, match=r"install it with `pip install scikit-learn`"):
        recover_effects(np.eye(3), np.ones(3))


def test_mask_blocks_give_each_block_its_own_masks_at_the_same_cost(tiny, problems):
    heads = all_heads(tiny)
    blocked = screen(tiny, problems, heads, n_masks=6, group_size=2, prompt=SHORT,
                     n_bootstrap=0, mask_blocks=2)  # fmt: skip
    whole = screen(tiny, problems, heads, n_masks=6, group_size=2, prompt=SHORT, n_bootstrap=0)
    assert blocked.meta["evaluations"] == whole.meta["evaluations"] == 7 * len(problems)
    assert blocked.masks.shape == (12, 12) and blocked.meta["mask_blocks"] == 2
    pd.testing.assert_frame_equal(blocked.masks.iloc[:6], whole.masks)  # the same first draws
    scores = blocked.scores
    assert scores["block"].tolist() == [0] * 7 + [1] * 7
    assert scores.loc[scores["mask"] == -1, "delta"].tolist() == [0.0, 0.0]
    half = len(problems) - len(problems) // 2  # np.array_split puts the extra one first
    second = scores[scores["block"] == 1].iloc[1]
    knocked = blocked.masks.columns[blocked.masks.iloc[6].to_numpy() == 1].tolist()
    assert second["mask"] == 6 and second["config"] == "+".join(knocked)
    lp = answer_logprobs(tiny, problems[half:], [None, knocked], prompt=SHORT).mean(dim=0)
    assert second["delta"] == pytest.approx(float(lp[1] - lp[0]), abs=1e-5)
    with pytest.raises(InputError, match="mask_blocks must be an int between 1 and"):
        screen(tiny, problems, heads, n_masks=2, prompt=SHORT, mask_blocks=len(problems) + 1)
