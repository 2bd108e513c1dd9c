"""Head-importance proxies: Michel et al. gradients and teacher-forced answer log-probs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sprint_lab import ablate, head_mask, load_model, load_problems
from sprint_lab.importance.correlate import correlate, rank_correlation
from sprint_lab.importance.proxies import (
    ImportanceResult,
    answer_logprobs,
    gate_gradients,
    head_importance,
)
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.tasks.answers import gold_target
from sprint_lab.tasks.problems import Problem
from sprint_lab.tasks.prompts import PromptTemplate

SHOT = "Q: Tom has 2 apples and gets 3 more. How many apples does he have?\nA: 2 + 3 = 5. " + (
    "The answer is 5."
)

# A short few-shot template: a shared one-exemplar prefix keeps model tests fast while still
# exercising the shared-prefix path (fewshot_cot's 8 exemplars are ~750 tokens).
SHORT = PromptTemplate(
    name="short_test",
    stop=("Q:",),
    needs_chat_template=False,
    builder=lambda question, tokenizer: (SHOT, f"\n\nQ: {question}\nA:"),
)
LAYERS = [0, 29]


@pytest.fixture(scope="module")
def problems():
    probs = load_problems("arith", limit=3)
    assert len({len(gold_target(p, SHORT).text) for p in probs}) > 1  # rows differ in length
    return probs


@pytest.fixture(scope="module")
def imp(embedded_model, problems):
    return head_importance(embedded_model, problems, prompt=SHORT, layers=LAYERS, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return load_model(tiny_models["llama"], dtype="float32")


def _sequence(model, problem, template=SHORT):
    """Prompt ids, target ids and the answer-token indices of the target, computed directly."""
    tokenizer = model.tokenizer
    prompt_ids = tokenizer(template.render(problem.question, tokenizer), add_special_tokens=False)
    target = gold_target(problem, template)
    enc = tokenizer(target.text, add_special_tokens=False, return_offsets_mapping=True)
    answer = [
        i
        for i, (s, e) in enumerate(enc["offset_mapping"])
        if tokenizer.decode(enc["input_ids"][i]).strip()
        and s < target.answer_end
        and e > target.answer_start
    ]
    assert tokenizer.decode([enc["input_ids"][i] for i in answer]).strip() == problem.answer
    return prompt_ids["input_ids"], enc["input_ids"], answer


def _loss(model, problem, mask, template=SHORT):
    """Mean NLL of the gold target under ``mask``, one full forward pass, no batching."""
    prompt_ids, target_ids, _ = _sequence(model, problem, template)
    ids = torch.tensor([prompt_ids + target_ids])
    with head_mask(model, mask):
        logits = model.hf_model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    return -logits[n - 1 : -1].log_softmax(-1).gather(-1, ids[0, n:, None]).mean()


# --------------------------------------------------------------------------------------------
# Gold targets
# --------------------------------------------------------------------------------------------


def test_gold_target_formats():
    p = Problem(
        "p1",
        "Natalia sold clips...",
        "72",
        "She sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "In all 48+24 = <<48+24=72>>72 clips.\n#### 72",
    )
    t = gold_target(p, "fewshot_cot")
    assert t.text == " She sold 48/2 = 24 clips in May. In all 48+24 = 72 clips. The answer is 72."
    assert t.answer == "72" and t.text.endswith("The answer is 72.")
    chat = gold_target(p, "chat_gsm8k")
    assert chat.text == "She sold 48/2 = 24 clips in May.\nIn all 48+24 = 72 clips.\n#### 72"
    assert chat.answer == "72"
    boxed = gold_target(p, "chat_boxed")
    assert boxed.text.endswith("\nThe final answer is $\\boxed{72}$.") and boxed.answer == "72"
    bare = gold_target(Problem("p2", "2+5?", "7"), "fewshot_cot")
    assert (bare.text, bare.answer) == (" The answer is 7.", "7")
    with pytest.raises(ValueError, match="empty gold answer"):
        gold_target(Problem("p3", "?", " "))


# --------------------------------------------------------------------------------------------
# Embedded model
# --------------------------------------------------------------------------------------------


def test_frames_shapes_and_labels(embedded_model, problems, imp):
    model = embedded_model
    assert isinstance(imp, ImportanceResult) and imp.proxies == ["gradient", "logprob"]
    for frame in (imp.gradient, imp.logprob, imp.gradient_raw):
        assert frame.shape == (len(LAYERS), model.n_heads)
        assert frame.index.name == "layer" and list(frame.index) == LAYERS
        assert list(frame.columns) == list(range(model.n_heads))
        assert np.isfinite(frame.to_numpy()).all()
    assert imp.per_example_gradient.shape == (len(problems), model.n_layers, model.n_heads)
    assert list(imp.answer_logprobs.index) == [p.id for p in problems]
    assert list(imp.answer_logprobs.columns)[:2] == ["none", "L0H0"]
    assert (imp.answer_logprobs.to_numpy() < 0).all()
    long = imp.to_long()
    assert list(long.columns) == ["layer", "head", "config", "proxy", "score"]
    assert len(long) == 2 * len(LAYERS) * model.n_heads
    row = long[(long.proxy == "logprob") & (long.config == "L29H4")]
    assert row.score.item() == pytest.approx(imp.logprob.loc[29, 4])
    assert long.attrs["meta"]["normalize_by_layer"] is True
    assert imp.meta["normalize_global"] is False and imp.meta["prompt"] == "short_test"


def test_per_example_gradient_matches_brute_force(embedded_model, problems, imp):
    model = embedded_model
    batched = imp.per_example_gradient  # batch of 3, shared prefix
    for i, problem in enumerate(problems):
        mask = torch.ones(model.n_layers, model.n_heads, requires_grad=True)
        _loss(model, problem, mask).backward()
        scale = mask.grad.abs().max()
        assert (batched[i] - mask.grad).abs().max() <= 1e-4 * scale
    # abs is taken per example before averaging (the batch caveat), so it is not |mean grad|
    raw = batched.abs().mean(0)[LAYERS]
    assert torch.allclose(torch.tensor(imp.gradient_raw.to_numpy()), raw)
    assert (raw > batched.mean(0)[LAYERS].abs() + 1e-6).any()


def test_layer_normalisation_gives_unit_rows(imp):
    norms = np.linalg.norm(imp.gradient.to_numpy(), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    raw = imp.gradient_raw.to_numpy()
    np.testing.assert_allclose(
        imp.gradient.to_numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6
    )


def test_gradient_agrees_with_finite_differences(embedded_model, problems):
    model, problem = embedded_model, problems[0]
    grad = gate_gradients(model, [problem], prompt=SHORT)[0]
    order = grad.abs().flatten().argsort(descending=True)
    picks = [order[0].item(), order[len(order) // 10].item(), order[len(order) // 2].item()]
    eps, estimates = 1e-2, []
    for index in picks:
        layer, head = divmod(index, model.n_heads)
        up, down = torch.ones(model.mask_shape), torch.ones(model.mask_shape)
        up[layer, head], down[layer, head] = 1 + eps, 1 - eps
        with torch.inference_mode():
            fd = (_loss(model, problem, up) - _loss(model, problem, down)).item() / (2 * eps)
        assert fd == pytest.approx(grad[layer, head].item(), rel=0.05, abs=2e-3)
        estimates.append(abs(fd))
    assert estimates == sorted(estimates, reverse=True)  # same ranking as |gradient|


def test_logprob_matches_ablate_by_hand(embedded_model, problems, imp):
    model = embedded_model
    layer, head = 29, int(imp.logprob.loc[29].abs().idxmax())
    diffs = []
    for problem in problems:
        prompt_ids, target_ids, answer = _sequence(model, problem)
        ids = torch.tensor([prompt_ids + target_ids])
        n = len(prompt_ids)
        values = []
        for heads in ([], [(layer, head)]):
            with torch.inference_mode(), ablate(model, heads):
                logp = model.hf_model(input_ids=ids).logits[0].float().log_softmax(-1)
            values.append(sum(logp[n + t - 1, target_ids[t]].item() for t in answer))
        diffs.append(values[1] - values[0])
    assert imp.logprob.loc[layer, head] == pytest.approx(np.mean(diffs), abs=1e-4)
    assert abs(np.mean(diffs)) > 1e-3  # the check is not vacuous


# --------------------------------------------------------------------------------------------
# Tiny random GQA Llama
# --------------------------------------------------------------------------------------------


def test_padding_and_prefix_reuse_do_not_change_rows(tiny, problems):
    configs = [None, ["L0H1"], ["L2H3"]]
    alone = torch.cat([gate_gradients(tiny, [p], reuse_prefix=False) for p in problems])
    lp_alone = torch.cat(
        [answer_logprobs(tiny, [p], configs, reuse_prefix=False) for p in problems]
    )
    for reuse in (False, True):
        batched = gate_gradients(tiny, problems, batch_size=3, reuse_prefix=reuse)
        torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4 * alone.abs().max())
        lp = answer_logprobs(tiny, problems, configs, batch_size=4, reuse_prefix=reuse)
        torch.testing.assert_close(lp, lp_alone, rtol=0, atol=1e-4)
    assert (lp_alone[:, 1:] - lp_alone[:, :1]).abs().max() > 1e-4
    with torch.inference_mode():  # gradients are still taken inside an inference block
        torch.testing.assert_close(gate_gradients(tiny, problems[:1]), alone[:1])


def test_gqa_query_heads_and_global_normalisation(tiny, problems):
    res = head_importance(
        tiny,
        problems,
        proxies="gradient",
        normalize_by_layer=False,
        normalize_global=True,
        progress=False,
    )
    assert tiny.n_kv_heads < tiny.n_heads and res.gradient.shape == (tiny.n_layers, tiny.n_heads)
    assert res.logprob is None and res.proxies == ["gradient"]
    scores, raw = res.gradient.to_numpy(), res.gradient_raw.to_numpy()
    assert scores.min() == 0.0 and scores.max() == pytest.approx(1.0)
    np.testing.assert_allclose(scores, (raw - raw.min()) / (raw.max() - raw.min()), rtol=1e-6)
    assert res.meta["normalize_global"] is True and res.meta["normalize_by_layer"] is False


def test_bfloat16_close_to_float32(tiny_models, tiny, problems):
    bf16 = load_model(tiny_models["llama"], dtype="bfloat16")
    a = head_importance(tiny, problems, batch_size=3, progress=False)
    b = head_importance(bf16, problems, batch_size=3, progress=False)
    assert b.meta["dtype"] == "bfloat16" and a.meta["dtype"] == "float32"
    np.testing.assert_allclose(b.gradient_raw, a.gradient_raw, rtol=0.1, atol=1e-3)
    np.testing.assert_allclose(b.logprob, a.logprob, atol=5e-3)


def test_bad_inputs_raise_clear_errors(tiny, problems):
    with pytest.raises(ValueError, match="unknown layer 7"):
        head_importance(tiny, problems, layers=[7], progress=False)
    with pytest.raises(ValueError, match="problems is empty"):
        head_importance(tiny, [], progress=False)
    with pytest.raises(ValueError, match="unknown proxies"):
        head_importance(tiny, problems, proxies=["taylor"], progress=False)
    with pytest.raises(ValueError, match="layers is empty"):
        head_importance(tiny, problems, layers=[], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        head_importance(tiny, problems, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="unknown head"):
        answer_logprobs(tiny, problems, [["L0H9"]])
    with pytest.raises(ValueError, match="Unknown prompt template"):
        gate_gradients(tiny, problems, prompt="nope")
    with pytest.raises(ValueError, match="max_target_tokens"):
        answer_logprobs(tiny, problems, [None], max_target_tokens=2)


# --------------------------------------------------------------------------------------------
# Correlation with a sweep
# --------------------------------------------------------------------------------------------


def _synthetic(layers=(0, 1), n_heads=3):
    rng = np.random.default_rng(0)
    grad = rng.random((len(layers), n_heads))
    lp = rng.normal(size=(len(layers), n_heads))
    idx = pd.Index(list(layers), name="layer")
    cols = pd.Index(range(n_heads), name="head")
    return ImportanceResult(
        gradient=pd.DataFrame(grad, index=idx, columns=cols),
        logprob=pd.DataFrame(lp, index=idx, columns=cols),
    )


def test_correlate_sign_conventions():
    imp = _synthetic()
    long = imp.to_long().pivot_table(index=["layer", "head"], columns="proxy", values="score")
    deltas = long.reset_index()
    deltas["delta"] = -deltas["gradient"]  # pruning important heads hurts
    out = correlate(imp, deltas[["layer", "head", "delta"]]).set_index(["proxy", "against"])
    assert out.loc[("gradient", "-delta"), "spearman"] == pytest.approx(1.0)
    assert out.loc[("gradient", "-delta"), "pearson"] == pytest.approx(1.0)
    assert out.loc[("gradient", "|delta|"), "n"] == 6
    deltas["delta"] = 0.5 * deltas["logprob"]
    out = correlate(imp, deltas).set_index(["proxy", "against"])
    assert out.loc[("logprob", "delta"), "spearman"] == pytest.approx(1.0)
    assert out.loc[("|logprob|", "|delta|"), "pearson"] == pytest.approx(1.0)
    deltas["delta"] = 0.0
    assert correlate(imp, deltas)["spearman"].isna().all()  # constant deltas: undefined
    with pytest.raises(ValueError, match="no head in common"):
        correlate(imp, deltas.assign(layer=5))


def test_correlate_accepts_a_sweep_result():
    imp = _synthetic(layers=(0,), n_heads=3)
    correct = {"none": [1, 1, 1, 1], "L0H0": [0, 0, 0, 1], "L0H1": [1, 1, 0, 1]}
    correct["L0H2"] = [1, 1, 1, 1]
    rows = [
        {"question_id": f"q{q}", "config": c, "layer": -1 if c == "none" else 0,
         "head": -1 if c == "none" else int(c[-1]), "correct": bool(v)}
        for c, values in correct.items() for q, v in enumerate(values)
    ]  # fmt: skip
    result = SweepResult(pd.DataFrame(rows))
    via_result = correlate(imp, result)
    assert via_result.equals(correlate(imp, result.deltas()))
    grad = imp.gradient.loc[0].to_numpy()
    expected = np.corrcoef(grad, [0.75, 0.25, 0.0])[0, 1]
    row = via_result.set_index(["proxy", "against"]).loc[("gradient", "-delta")]
    assert row["pearson"] == pytest.approx(expected) and row["n"] == 3


def test_correlate_leaves_placebos_out():
    imp = _synthetic(layers=(0,), n_heads=3)
    correct = {"none": [1, 1, 1, 1], "none~1": [1, 1, 1, 1], "none~2": [0, 1, 1, 1]}
    correct |= {"L0H0": [0, 0, 0, 1], "L0H1": [1, 1, 0, 1], "L0H2": [1, 1, 1, 1]}
    rows = [
        {"question_id": f"q{q}", "config": c, "correct": bool(v)}
        for c, values in correct.items() for q, v in enumerate(values)
    ]  # fmt: skip
    result = SweepResult.coerce(pd.DataFrame(rows))
    assert result.deltas()["config"].tolist()[:2] == ["none~1", "none~2"]
    heads_only = result.deltas().iloc[2:]
    out = correlate(imp, result)
    assert out.equals(correlate(imp, heads_only)) and (out["n"] == 3).all()
    # Even a proxy that scores position (-1, -1) never meets the placebos (which sit there).
    grad = pd.DataFrame(np.nan, index=[-1, 0], columns=[-1, 0, 1, 2])
    grad.loc[-1, -1] = 5.0
    grad.loc[0, [0, 1, 2]] = imp.gradient.loc[0].to_numpy()
    out = correlate(ImportanceResult(gradient=grad), result)
    assert out["n"].tolist() == [3, 3]
    assert out.equals(correlate(ImportanceResult(gradient=imp.gradient), heads_only))


def test_rank_correlation_drops_non_finite_pairs():
    from scipy import stats

    x = np.array([0.3, 1.0, np.nan, 2.0, 5.0, np.inf, 4.0])
    y = np.array([1.0, 0.5, 3.0, 2.5, 4.0, 1.0, np.nan])
    out = rank_correlation(x, y)
    kept = np.isfinite(x) & np.isfinite(y)
    assert out["n"] == 4
    assert out["spearman"] == pytest.approx(stats.spearmanr(x[kept], y[kept]).statistic)
    assert out["pearson_p"] == pytest.approx(stats.pearsonr(x[kept], y[kept]).pvalue)
    assert np.isnan(rank_correlation(x[:2], y[:2])["spearman"])  # fewer than 3 pairs
    assert np.isnan(rank_correlation(np.ones(5), np.arange(5.0))["pearson"])  # constant input
