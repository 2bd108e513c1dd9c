"""SprintSelector on a synthetic sweep with a known cluster -> heads structure.

Questions fall into K clusters with Gaussian-blob embeddings; each cluster is solved by its own
two heads (p = 0.98) and by any other head only by chance (p = 0.03). A selector that learns the
structure picks an owning head for nearly every held-out question, while a random head is right
at the base rate, mean(#correct heads) / #heads, about 0.15 here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from sprint_lab.core.errors import InputError
from sprint_lab.core.heads import Head
from sprint_lab.selection.loss import head_repulsion, multi_positive_loss
from sprint_lab.selection.selector import SprintSelector, correctness_matrix, heads_checksum

HEADS = [f"L{layer}H{head}" for layer in range(4) for head in range(4)]
K, OWNERS, ENC_DIM = 4, 2, 16
N_TRAIN, N_TEST = 300, 100
NO_HEAD_IDS = ("train-none-0", "train-none-1")
ALL_HEAD_IDS = ("train-all-0", "train-all-1", "train-all-2")


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    cluster: int


class BlobEncoder:
    """Looks the question text up in a table of precomputed vectors; counts encoded texts."""

    name = "blob-encoder"
    dim = ENC_DIM

    def __init__(self, table: dict[str, Tensor]) -> None:
        self.table = table
        self.encoded: list[str] = []

    def encode(self, questions: Sequence[str]) -> Tensor:
        self.encoded += list(questions)
        return torch.stack([self.table[q] for q in questions])


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 3.0, size=(K, ENC_DIM))
    owners = {k: HEADS[k * OWNERS : (k + 1) * OWNERS] for k in range(K)}
    problems, rows, texts = [], [], {}

    def add(qid: str, cluster: int, correct: dict[str, bool]) -> None:
        text = f"question {qid}"
        problems.append(Problem(qid, text, cluster))
        vector = centres[cluster] + rng.normal(0.0, 1.0, size=ENC_DIM)
        texts[text] = torch.tensor(vector, dtype=torch.float32)
        rows.append((qid, "none", -1, -1, bool(rng.random() < 0.3)))
        for label in HEADS:
            head = Head.parse(label)
            rows.append((qid, label, head.layer, head.head, correct[label]))

    for i in range(N_TRAIN + N_TEST):
        k = i % K
        split = "train" if i < N_TRAIN else "test"
        add(
            f"{split}-{i:04d}",
            k,
            {h: bool(rng.random() < (0.98 if h in owners[k] else 0.03)) for h in HEADS},
        )
    for qid in NO_HEAD_IDS:
        add(qid, 0, dict.fromkeys(HEADS, False))
    for qid in ALL_HEAD_IDS:
        add(qid, 1, dict.fromkeys(HEADS, True))
    table = pd.DataFrame(rows, columns=["question_id", "config", "layer", "head", "correct"])
    table["completion"], table["extracted"], table["n_tokens"] = "", None, 1
    train = [p for p in problems if not p.id.startswith("test")]
    test = [p for p in problems if p.id.startswith("test")]
    return SimpleNamespace(
        table=table,
        train=train,
        test=test,
        texts=texts,
        embeddings={p.id: texts[p.question] for p in problems},
        owners=owners,
    )


@pytest.fixture(scope="module")
def fitted(data: SimpleNamespace) -> SprintSelector:
    encoder = BlobEncoder(data.texts)
    sweep = SimpleNamespace(table=data.table)  # a SweepResult-like object
    return SprintSelector(HEADS, encoder=encoder, dim=8, seed=0).fit(sweep, data.train)


def _correct(data: SimpleNamespace, problems: Sequence[Problem]) -> np.ndarray:
    matrix = correctness_matrix(data.table, HEADS)
    return matrix.loc[[p.id for p in problems]].to_numpy(dtype=bool)


# --------------------------------------------------------------------------- learning
def test_selector_top1_beats_random_on_held_out_questions(
    fitted: SprintSelector, data: SimpleNamespace
) -> None:
    correct = _correct(data, data.test)
    top1 = fitted.scores(data.test).argmax(dim=1).numpy()
    hit = correct[np.arange(len(top1)), top1].mean()

    expected_random = correct.sum(axis=1).mean() / len(HEADS)
    owner_rate, other_rate = 0.98, 0.03
    assert expected_random == pytest.approx(
        (OWNERS * owner_rate + (len(HEADS) - OWNERS) * other_rate) / len(HEADS), abs=0.03
    )
    draws = np.random.default_rng(1).integers(0, len(HEADS), size=(200, len(data.test)))
    random_hit = correct[np.arange(len(data.test)), draws].mean()
    assert random_hit == pytest.approx(expected_random, abs=0.02)

    assert hit >= 0.9
    assert hit > expected_random + 0.6
    pairs = zip(data.test, top1.tolist(), strict=True)
    chosen_owner = [fitted.labels[j] in data.owners[p.cluster] for p, j in pairs]
    assert np.mean(chosen_owner) >= 0.95


def test_training_loss_falls_and_history_is_complete(fitted: SprintSelector) -> None:
    h = fitted.history
    assert list(h.columns[:5]) == [
        "epoch",
        "train_loss",
        "val_loss",
        "train_top1_hit",
        "val_top1_hit",
    ]
    assert h["epoch"].tolist() == list(range(len(h)))
    assert h["train_loss"].iloc[-1] < 0.3 * h["train_loss"].iloc[0]
    best = fitted.report_["best_epoch"]
    assert 0 < best <= fitted.report_["epochs_run"]
    assert h["val_loss"].iloc[best] == h["val_loss"].min() < h["val_loss"].iloc[0]
    assert h["val_top1_hit"].iloc[best] >= 0.9


def test_best_weights_are_restored(fitted: SprintSelector, data: SimpleNamespace) -> None:
    by_id = {p.id: p for p in data.train}
    val = [by_id[q] for q in fitted.val_question_ids_]
    loss = multi_positive_loss(fitted.scores(val), torch.tensor(_correct(data, val)))
    best = fitted.report_["best_epoch"]
    assert float(loss) == pytest.approx(fitted.history["val_loss"].iloc[best], rel=1e-5)


def test_excluded_questions_are_counted_and_kept_out_of_the_loss(
    fitted: SprintSelector, data: SimpleNamespace
) -> None:
    correct = _correct(data, data.train)
    n_correct = correct.sum(axis=1)
    report = fitted.report_
    assert report["n_no_correct_head"] == int((n_correct == 0).sum()) >= len(NO_HEAD_IDS)
    assert report["n_all_heads_correct"] == int((n_correct == len(HEADS)).sum()) == 3
    assert set(NO_HEAD_IDS) <= set(fitted.excluded_ids_["no_correct_head"])
    assert set(fitted.excluded_ids_["all_heads_correct"]) == set(ALL_HEAD_IDS)
    informative = (
        report["n_questions"] - report["n_no_correct_head"] - report["n_all_heads_correct"]
    )
    assert report["n_informative"] == informative == report["n_train"] + report["n_val"]
    assert report["n_val"] == round(0.2 * informative)
    used = set(fitted.train_question_ids_) | set(fitted.val_question_ids_)
    assert not used & (set(NO_HEAD_IDS) | set(ALL_HEAD_IDS))
    assert not set(fitted.train_question_ids_) & set(fitted.val_question_ids_)
    assert fitted.train_ids_ == {p.id for p in data.train}  # every question fit saw
    assert report["n_sweep_questions_without_problem"] == N_TEST
    assert not fitted.train_ids_ & {p.id for p in data.test}


def test_embeddings_are_cached_by_question_id(data: SimpleNamespace) -> None:
    encoder = BlobEncoder(data.texts)
    sel = SprintSelector(HEADS, encoder=encoder, dim=8).fit(data.table, data.train, epochs=2)
    assert sorted(encoder.encoded) == sorted(p.question for p in data.train)  # once each
    sel.scores(data.train[:10] + data.test[:10])
    assert encoder.encoded[len(data.train) :] == [p.question for p in data.test[:10]]
    before = len(encoder.encoded)
    sel.scores(data.test[:10])
    sel.rank(data.train[:5])
    assert len(encoder.encoded) == before
    sel.top_heads(data.test[0].question, 2)  # raw text: encoded directly, no id
    assert len(encoder.encoded) == before + 1


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_selector(data: SimpleNamespace) -> None:
    def fit(seed: int, **kwargs: object) -> Tensor:
        sel = SprintSelector(HEADS, encoder=BlobEncoder(data.texts), dim=8, seed=seed)
        sel.fit(data.table, data.train, epochs=15, **kwargs)
        return sel.scores(data.test[:20])

    first = fit(0)
    torch.testing.assert_close(fit(0), first, atol=0, rtol=0)
    assert not torch.equal(fit(1), first)
    torch.testing.assert_close(fit(0, batch_size=64), fit(0, batch_size=64), atol=0, rtol=0)
    assert not torch.equal(fit(0, batch_size=64), first)


def test_precomputed_embeddings_equal_the_encoder_path(
    fitted: SprintSelector, data: SimpleNamespace
) -> None:
    sel = SprintSelector(HEADS, dim=8, seed=0).fit(
        data.table, data.train, embeddings=data.embeddings
    )
    test_emb = {p.id: data.embeddings[p.id] for p in data.test}
    torch.testing.assert_close(sel.scores(data.test, embeddings=test_emb), fitted.scores(data.test))
    aligned = torch.stack([data.embeddings[p.id] for p in data.train])
    by_tensor = SprintSelector(HEADS, dim=8, seed=0).fit(data.table, data.train, embeddings=aligned)
    torch.testing.assert_close(by_tensor.head_vectors, sel.head_vectors, atol=0, rtol=0)
    assert sel.report_["used_precomputed_embeddings"]


# --------------------------------------------------------------------------- outputs
def test_rank_and_top_heads_agree_with_scores(
    fitted: SprintSelector, data: SimpleNamespace
) -> None:
    problems = data.test[:5]
    ranked = fitted.rank(problems)
    assert list(ranked.columns) == ["question_id", "head", "layer", "head_index", "score", "rank"]
    assert len(ranked) == len(problems) * len(HEADS)
    assert ranked["question_id"].drop_duplicates().tolist() == [p.id for p in problems]
    scores = fitted.scores(problems).numpy()
    for i, (qid, group) in enumerate(ranked.groupby("question_id", sort=False)):
        assert group["rank"].tolist() == list(range(1, len(HEADS) + 1))
        assert group["score"].is_monotonic_decreasing
        assert group["score"].iloc[0] == pytest.approx(scores[i].max())
        labels = group["head"].tolist()
        assert sorted(labels) == sorted(HEADS)
        assert [h.label for h in fitted.top_heads(problems[i], 3)] == labels[:3]
        heads = [Head(a, b) for a, b in zip(group["layer"], group["head_index"], strict=True)]
        assert [h.label for h in heads] == labels
        assert qid == problems[i].id
    torch.testing.assert_close(fitted.scores(problems[0]), fitted.scores(problems[:1]))
    torch.testing.assert_close(fitted.scores(problems[0].question), fitted.scores(problems[:1]))
    top = fitted.top_heads(problems[0], 1)
    assert isinstance(top[0], Head)
    assert fitted.top_heads(problems[0].question, 1) == top
    with pytest.raises(ValueError, match="n must be"):
        fitted.top_heads(problems[0], len(HEADS) + 1)


def test_vectors_for_plots(fitted: SprintSelector, data: SimpleNamespace) -> None:
    q = fitted.question_vectors(data.test[:7])
    v = fitted.head_vectors
    assert q.shape == (7, 8) and v.shape == (len(HEADS), 8)
    expected = -((q[:, None, :] - v[None]) ** 2).sum(-1) / fitted.temperature
    torch.testing.assert_close(fitted.scores(data.test[:7]), expected)


def test_save_load_round_trip(
    fitted: SprintSelector, data: SimpleNamespace, tmp_path: Path
) -> None:
    folder = fitted.save(tmp_path / "sel")
    assert {p.name for p in folder.iterdir()} == {
        "selector.safetensors",
        "config.json",
        "history.parquet",
    }
    loaded = SprintSelector.load(folder, encoder=BlobEncoder(data.texts))
    torch.testing.assert_close(loaded.scores(data.test), fitted.scores(data.test), atol=0, rtol=0)
    pd.testing.assert_frame_equal(loaded.rank(data.test[:3]), fitted.rank(data.test[:3]))
    pd.testing.assert_frame_equal(loaded.history, fitted.history)
    assert loaded.report_ == fitted.report_
    assert loaded.train_ids_ == fitted.train_ids_
    assert loaded.val_question_ids_ == fitted.val_question_ids_
    assert loaded.heads == fitted.heads
    assert (loaded.dim, loaded.temperature, loaded.seed) == (8, 1.0, 0)

    # without an encoder the saved name is used; a custom one cannot be rebuilt from its name
    bare = SprintSelector.load(folder)
    assert bare.encoder_name == "blob-encoder"
    with pytest.raises(ValueError, match="unknown encoder spec"):
        bare.scores(data.test[:1])
    emb = {p.id: data.embeddings[p.id] for p in data.test}
    torch.testing.assert_close(bare.scores(data.test, embeddings=emb), fitted.scores(data.test))
    with pytest.raises(FileNotFoundError):
        SprintSelector.load(tmp_path / "nowhere")


def _edit_config(folder: Path, edit) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    edit(config)
    config_file.write_text(json.dumps(config))


def test_saved_head_order_is_checked_on_load(
    fitted: SprintSelector, data: SimpleNamespace, tmp_path: Path
) -> None:
    folder = fitted.save(tmp_path / "sel")
    config = json.loads((folder / "config.json").read_text())
    assert config["heads_sha256"] == heads_checksum(HEADS)
    assert config["heads_sha256"] == hashlib.sha256(",".join(HEADS).encode()).hexdigest()
    untouched = SprintSelector.load(folder, encoder=BlobEncoder(data.texts))
    assert untouched.labels == HEADS

    def swap_first_two(config: dict) -> None:
        config["heads"][0], config["heads"][1] = config["heads"][1], config["heads"][0]

    _edit_config(folder, swap_first_two)
    with pytest.raises(InputError, match="does not match the saved head embeddings") as err:
        SprintSelector.load(folder, encoder=BlobEncoder(data.texts))
    assert str(folder / "config.json") in str(err.value)
    assert isinstance(err.value, ValueError)


def test_head_count_must_match_the_saved_head_vectors(
    fitted: SprintSelector, data: SimpleNamespace, tmp_path: Path
) -> None:
    folder = fitted.save(tmp_path / "sel")

    def drop_last_head(config: dict) -> None:
        config["heads"] = config["heads"][:-1]
        config["heads_sha256"] = heads_checksum(config["heads"])  # a consistent, wrong config

    _edit_config(folder, drop_last_head)
    with pytest.raises(InputError, match=r"lists 15 heads but .*selector\.safetensors holds 16"):
        SprintSelector.load(folder, encoder=BlobEncoder(data.texts))


def test_selector_saved_without_checksum_loads_with_a_warning(
    fitted: SprintSelector, data: SimpleNamespace, tmp_path: Path
) -> None:
    folder = fitted.save(tmp_path / "sel")
    _edit_config(folder, lambda config: config.pop("heads_sha256"))
    with pytest.warns(UserWarning, match="has no heads_sha256"):
        loaded = SprintSelector.load(folder, encoder=BlobEncoder(data.texts))
    torch.testing.assert_close(loaded.scores(data.test), fitted.scores(data.test), atol=0, rtol=0)


# --------------------------------------------------------------------------- options
def test_diversity_keeps_head_vectors_apart(data: SimpleNamespace) -> None:
    def fit(diversity: float) -> SprintSelector:
        sel = SprintSelector(HEADS, dim=8, seed=0, diversity=diversity)
        return sel.fit(data.table, data.train, embeddings=data.embeddings, epochs=60)

    plain, spread = fit(0.0), fit(5.0)
    assert "diversity_penalty" in spread.history and "diversity_penalty" not in plain.history
    assert float(head_repulsion(spread.head_vectors)) < 0.5 * float(
        head_repulsion(plain.head_vectors)
    )


def test_no_validation_trains_every_epoch(data: SimpleNamespace) -> None:
    sel = SprintSelector(HEADS, dim=8).fit(
        data.table, data.train, embeddings=data.embeddings, val_fraction=0.0, epochs=7
    )
    assert len(sel.history) == 8 and sel.history["val_loss"].isna().all()
    assert sel.report_["n_val"] == 0 and sel.report_["best_epoch"] == 7
    assert not sel.report_["stopped_early"]


def test_candidate_subset_and_temperature(data: SimpleNamespace) -> None:
    subset = ["L0H0", "L3H3", "L1H2"]
    sel = SprintSelector(subset, dim=4, temperature=0.5).fit(
        data.table, data.train, embeddings=data.embeddings, epochs=5
    )
    assert sel.labels == subset
    assert sel.scores(data.train[:2], embeddings=data.embeddings).shape == (2, 3)


# --------------------------------------------------------------------------- losses
def test_multi_positive_loss_matches_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 3
    positives = torch.rand(6, 5, generator=gen) < 0.4
    positives[:, 0] = True
    e = scores.exp()
    expected = -torch.log((e * positives).sum(1) / e.sum(1)).mean()
    torch.testing.assert_close(multi_positive_loss(scores, positives), expected)
    huge = multi_positive_loss(scores * 1000, positives)  # logsumexp keeps it finite
    assert torch.isfinite(huge)
    assert float(multi_positive_loss(scores, torch.ones(6, 5, dtype=torch.bool))) == 0.0
    with pytest.raises(ValueError, match="positive"):
        multi_positive_loss(scores, torch.zeros(6, 5, dtype=torch.bool))


def test_head_repulsion() -> None:
    v = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    expected = (np.exp(-1.0) + np.exp(-4.0) + np.exp(-5.0)) / 3
    assert float(head_repulsion(v)) == pytest.approx(expected)
    assert float(head_repulsion(v[:1])) == 0.0


# --------------------------------------------------------------------------- bad input
def test_correctness_matrix_reads_a_tidy_table() -> None:
    table = pd.DataFrame(
        {
            "question_id": [1, 1, 1, 2, 2, 2, 3],
            "config": ["none", "L0H1", "L2H0", "none", "L2H0", "L0H1", "L0H1"],
            "correct": [True, False, True, False, True, True, True],
        }
    )
    matrix = correctness_matrix(table)
    assert list(matrix.columns) == ["L0H1", "L2H0"]
    assert list(matrix.index) == ["1", "2"]  # question 3 lacks L2H0: incomplete, left out
    assert matrix.to_numpy().tolist() == [[False, True], [True, True]]
    assert correctness_matrix(table, ["L0H1"]).index.tolist() == ["1", "2", "3"]
    assert correctness_matrix(table, [Head(2, 0)])["L2H0"].tolist() == [True, True]


def test_bad_inputs_raise_clear_errors(data: SimpleNamespace) -> None:
    emb = data.embeddings
    with pytest.raises(ValueError, match="missing columns"):
        SprintSelector(HEADS).fit(data.table.drop(columns="correct"), data.train, embeddings=emb)
    bad = data.table.copy()
    bad.loc[5, "config"] = "head-five"
    with pytest.raises(ValueError, match="not a head label"):
        SprintSelector(HEADS).fit(bad, data.train, embeddings=emb)
    with pytest.raises(ValueError, match="no rows for heads"):
        SprintSelector([*HEADS, "L9H9"]).fit(data.table, data.train, embeddings=emb)
    with pytest.raises(ValueError, match="no overlap"):
        others = [Problem(f"other-{i}", "?", 0) for i in range(3)]
        SprintSelector(HEADS).fit(data.table, others, embeddings=emb)
    with pytest.raises(ValueError, match="repeated"):
        SprintSelector(HEADS).fit(pd.concat([data.table, data.table]), data.train, embeddings=emb)
    with pytest.raises(ValueError, match="repeat"):
        SprintSelector(["L0H0", "L0H0"])
    with pytest.raises(ValueError, match="not a head label"):
        SprintSelector(["L0H0", "layer0"])
    with pytest.raises(ValueError, match="DataFrame"):
        SprintSelector(HEADS).fit([1, 2, 3], data.train, embeddings=emb)
    with pytest.raises(ValueError, match="val_fraction"):
        SprintSelector(HEADS).fit(data.table, data.train, embeddings=emb, val_fraction=1.0)
    with pytest.raises(ValueError, match="temperature"):
        SprintSelector(HEADS, temperature=0)
    with pytest.raises(ValueError, match="do not align"):
        SprintSelector(HEADS).fit(data.table, data.train, embeddings=torch.zeros(3, ENC_DIM))
    with pytest.raises(RuntimeError, match="not fitted"):
        SprintSelector(HEADS).scores(data.test[:1])
    solved_by_all = data.table[data.table["question_id"].isin(ALL_HEAD_IDS)]
    with pytest.raises(ValueError, match="nothing to learn"):
        SprintSelector(HEADS).fit(solved_by_all, data.train, embeddings=emb)


def test_configurations_are_candidates_too(tmp_path):
    """Head sets, whole layers and mean-ablated heads are selector candidates like single heads:
    fitted from the sweep's labels, returned as Config objects, saved and loaded with n_heads."""
    from sprint_lab.core.configs import Config, config_from_label

    configs = ["L0H1+L1H0", "L1", "L0H0@mean", "L2H3"]
    problems = [SimpleNamespace(id=str(i), question=f"q{i}") for i in range(40)]
    emb = {p.id: torch.tensor([float(int(p.id) % 4 == k) for k in range(4)]) for p in problems}
    rows = [
        (p.id, config, int(p.id) % 4 == j)
        for p in problems
        for j, config in enumerate(["none", *configs][1:])
    ]
    sweep = pd.DataFrame(rows, columns=["question_id", "config", "correct"])
    selector = SprintSelector(configs, dim=4, n_heads=4).fit(sweep, problems, embeddings=emb)
    assert selector.labels == configs
    for j, config in enumerate(configs):
        probe = problems[j]  # question j is solved only by configuration j
        (top,) = selector.top_heads(probe, 1, embeddings=emb)
        assert top.label == config
    assert isinstance(selector.heads[1], Config) and len(selector.heads[1].heads) == 4
    assert selector.heads[3] == Head(2, 3)
    ranks = selector.rank(problems[:1], embeddings=emb)
    assert ranks.set_index("head").loc["L1", ["layer", "head_index"]].tolist() == [1, -1]

    again = SprintSelector.load(selector.save(tmp_path / "sel"))
    assert again.labels == configs and again.n_heads == 4
    assert torch.equal(
        again.scores(problems, embeddings=emb), selector.scores(problems, embeddings=emb)
    )
    # a whole-layer Config carries the model's head count
    inferred = SprintSelector([config_from_label("L1", n_heads=4), "L0H1"], dim=4)
    assert inferred.n_heads == 4
    with pytest.raises(ValueError, match="n_heads"):
        SprintSelector(["L1", "L0H1"], dim=4)
