"""The SPRINT selector's network and its training loop.

:class:`SelectorNet` maps a question's encoder features φ(x) to q = W·((φ - μ) / σ) + b and
scores every candidate head c by s = -‖q - v_c‖² / τ, with one learnable vector v_c per head.
Training (:func:`train_net`) needs a [question, head] correctness matrix; questions that no
candidate head solves, or that every candidate solves, carry no signal and are set aside by
:func:`split_questions`, which splits the rest by question id (seeded) into train and
validation. The loop runs Adam on :func:`~sprint_lab.selection.loss.multi_positive_loss`,
full batch or seeded mini-batches, evaluates after every epoch, and stops early after
``patience`` epochs without a lower validation loss, restoring the best weights.

Example:
    >>> y = torch.tensor([[True, False], [False, True], [True, True], [False, True]])
    >>> split = split_questions(["a", "b", "c", "d"], y, seed=0, val_fraction=0.5)
    >>> split.informative, split.all_heads_ok.tolist()
    (['a', 'b', 'd'], [False, False, True, False])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from sprint_lab.selection.loss import head_repulsion, multi_positive_loss

__all__ = [
    "HistoryRow",
    "QuestionSplit",
    "SelectorNet",
    "TrainOutcome",
    "TrainSettings",
    "split_questions",
    "train_net",
]

HistoryRow = dict[str, float | int]
"""One epoch of training history: ``epoch`` (int), losses and hit rates (floats)."""


class SelectorNet(nn.Module):
    """q = W·((φ - μ) / σ) + b; one vector per head; score = -‖q - v‖² / τ.

    The initialisation draws only from a generator seeded with ``seed`` (never the global RNG).

    Example:
        >>> net = SelectorNet(enc_dim=3, dim=2, n_heads=4, temperature=1.0, seed=0)
        >>> net(torch.zeros(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(self, enc_dim: int, dim: int, n_heads: int, temperature: float, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.temperature = float(temperature)
        self.proj = nn.utils.skip_init(nn.Linear, enc_dim, dim)  # no global-RNG draw
        self.head_vectors = nn.Parameter(torch.randn(n_heads, dim, generator=gen) / math.sqrt(dim))
        with torch.no_grad():  # for ‖x‖ ≈ 1, E‖q‖² ≈ E‖v‖² ≈ 1: a near-uniform initial softmax
            self.proj.weight.copy_(torch.randn(dim, enc_dim, generator=gen) / math.sqrt(dim))
            self.proj.bias.zero_()
        self.register_buffer("feature_mean", torch.zeros(enc_dim))
        self.register_buffer("feature_scale", torch.ones(()))

    def query(self, x: Float[Tensor, "n enc_dim"]) -> Float[Tensor, "n dim"]:
        """The projected question vectors q."""
        return self.proj((x - self.feature_mean) / self.feature_scale)

    def forward(self, x: Float[Tensor, "n enc_dim"]) -> Float[Tensor, "n n_heads"]:
        """Scores s(x, c) of every question against every head."""
        q = self.query(x)
        d2 = ((q[:, None, :] - self.head_vectors[None, :, :]) ** 2).sum(-1)
        return -d2 / self.temperature

    def standardize(self, x: Float[Tensor, "n enc_dim"]) -> None:
        """Set μ to the mean of ``x`` and σ to its root-mean-square distance to μ (one scalar)."""
        mean = x.mean(dim=0)
        rms = float((x - mean).pow(2).sum(dim=1).mean().sqrt())
        self.feature_mean.copy_(mean)
        self.feature_scale.fill_(rms if rms > 1e-8 else 1.0)


# ---------------------------------------------------------------------------- the split
@dataclass
class QuestionSplit:
    """Which questions train, validate, or are left out of the loss.

    Attributes:
        no_head_ok: per question, no candidate head solves it.
        all_heads_ok: per question, every candidate head solves it.
        informative: ids of the remaining questions, sorted.
        train_ids: informative ids used for training.
        val_ids: informative ids held out for early stopping.
        train_rows: row indices of ``train_ids`` in the question order given.
        val_rows: row indices of ``val_ids``.
    """

    no_head_ok: Bool[Tensor, " n_questions"]
    all_heads_ok: Bool[Tensor, " n_questions"]
    informative: list[str]
    train_ids: list[str]
    val_ids: list[str]
    train_rows: Int[Tensor, " n_train"]
    val_rows: Int[Tensor, " n_val"]


def split_questions(
    ids: Sequence[str],
    correct: Bool[Tensor, "n_questions n_heads"],
    seed: int,
    val_fraction: float,
) -> QuestionSplit:
    """Set aside the questions with no signal and split the rest (seeded) into train / val.

    Raises:
        ValueError: if no question has both correct and incorrect candidate heads.
    """
    n_pos = correct.sum(dim=1)
    none_ok = n_pos == 0
    all_ok = n_pos == correct.shape[1]
    informative = ~(none_ok | all_ok)
    if not bool(informative.any()):
        raise ValueError(
            "no question has both correct and incorrect candidate heads: nothing to learn"
        )
    inf_ids = sorted(qid for qid, flag in zip(ids, informative.tolist(), strict=True) if flag)
    order = np.random.default_rng(seed).permutation(len(inf_ids))
    n_val = 0
    if val_fraction > 0 and len(inf_ids) >= 2:
        n_val = min(max(1, round(val_fraction * len(inf_ids))), len(inf_ids) - 1)
    val_ids = [inf_ids[i] for i in order[:n_val]]
    train_ids = [inf_ids[i] for i in order[n_val:]]
    pos = {qid: i for i, qid in enumerate(ids)}
    return QuestionSplit(
        no_head_ok=none_ok,
        all_heads_ok=all_ok,
        informative=inf_ids,
        train_ids=train_ids,
        val_ids=val_ids,
        train_rows=torch.tensor([pos[q] for q in train_ids], dtype=torch.long),
        val_rows=torch.tensor([pos[q] for q in val_ids], dtype=torch.long),
    )


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainSettings:
    """Optimisation settings of :func:`train_net` (see :meth:`SprintSelector.fit`)."""

    epochs: int
    lr: float
    batch_size: int | None
    patience: int | None
    weight_decay: float
    diversity: float
    seed: int
    verbose: bool = False


@dataclass
class TrainOutcome:
    """The trained network (best weights restored), the history rows and how training ended."""

    net: SelectorNet
    rows: list[HistoryRow]
    best_epoch: int
    stopped_early: bool


def _evaluate(
    net: SelectorNet,
    epoch: int,
    parts: dict[str, tuple[Tensor, Tensor]],
    diversity: float,
) -> HistoryRow:
    """One history row: loss and top-1 hit rate per split (NaN for an empty split)."""
    net.eval()
    with torch.no_grad():
        row: HistoryRow = {"epoch": epoch}
        for split, (xs, ys) in parts.items():
            if len(ys) == 0:
                row[f"{split}_loss"] = float("nan")
                row[f"{split}_top1_hit"] = float("nan")
                continue
            s = net(xs)
            row[f"{split}_loss"] = float(multi_positive_loss(s, ys))
            hit = ys.gather(1, s.argmax(dim=1, keepdim=True)).float().mean()
            row[f"{split}_top1_hit"] = float(hit)
        if diversity > 0:
            row["diversity_penalty"] = float(head_repulsion(net.head_vectors, net.temperature))
    return row


def _train_epoch(
    net: SelectorNet,
    opt: torch.optim.Optimizer,
    x: Float[Tensor, "n enc_dim"],
    y: Bool[Tensor, "n n_heads"],
    settings: TrainSettings,
    shuffle: torch.Generator,
) -> None:
    """One pass over the training questions, full batch or seeded mini-batches."""
    net.train()
    batch_size = settings.batch_size
    step = len(x) if batch_size is None else int(batch_size)
    perm = torch.arange(len(x)) if batch_size is None else torch.randperm(len(x), generator=shuffle)
    for start in range(0, len(perm), step):
        b = perm[start : start + step]
        loss = multi_positive_loss(net(x[b]), y[b])
        if settings.diversity > 0:
            loss = loss + settings.diversity * head_repulsion(net.head_vectors, net.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _report(row: HistoryRow, epoch: int, epochs: int) -> None:
    if epoch % max(1, epochs // 10) == 0 or epoch == 1:
        print(
            f"epoch {epoch:4d}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  "
            f"val top-1 hit {row['val_top1_hit']:.3f}"
        )


def train_net(
    net: SelectorNet,
    x: Float[Tensor, "n_questions enc_dim"],
    y: Bool[Tensor, "n_questions n_heads"],
    split: QuestionSplit,
    settings: TrainSettings,
    callback: Callable[[HistoryRow], None] | None = None,
) -> TrainOutcome:
    """Train ``net`` on the rows of ``split`` with early stopping on the validation loss.

    ``callback`` gets a copy of every history row (epoch 0 = initialisation) as it is made.
    """
    tr, va = split.train_rows, split.val_rows
    parts = {"train": (x[tr], y[tr]), "val": (x[va], y[va])}
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    shuffle = torch.Generator().manual_seed(settings.seed + 1)
    epochs = int(settings.epochs)

    rows = [_evaluate(net, 0, parts, settings.diversity)]
    if callback is not None:
        callback(dict(rows[0]))
    best_loss, best_epoch, waited = rows[0]["val_loss"], 0, 0
    best_state = copy.deepcopy(net.state_dict())
    stopped_early = False
    for epoch in range(1, epochs + 1):
        _train_epoch(net, opt, *parts["train"], settings, shuffle)
        rows.append(_evaluate(net, epoch, parts, settings.diversity))
        if callback is not None:
            callback(dict(rows[-1]))
        if settings.verbose:
            _report(rows[-1], epoch, epochs)
        if len(va):
            if rows[-1]["val_loss"] < best_loss:
                best_loss, best_epoch, waited = rows[-1]["val_loss"], epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                waited += 1
                if settings.patience is not None and waited >= int(settings.patience):
                    stopped_early = True
                    break
    if len(va):
        net.load_state_dict(best_state)
    else:
        best_epoch = len(rows) - 1
    return TrainOutcome(net, rows, best_epoch, stopped_early)
