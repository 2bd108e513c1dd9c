"""SPRINT's head selector: pick, per question, which single attention head to prune.

A frozen encoder embeds the question, φ(x); a trainable linear map gives q = Wφ(x) + b, and each
candidate head c has a learnable vector v_c. The score is s(x, c) = -‖q - v_c‖² / τ, trained with
the multi-positive contrastive loss -log(Σ_{c correct} e^{s} / Σ_{c candidate} e^{s}) on a sweep's
[question, head] correctness matrix, so a question pulls *some* head that solves it close to q.
Ranking heads by score gives SPRINT's top-N (``sprint-paper.md`` §4–5).

Example:
    >>> sel = SprintSelector(["L0H0", "L0H1"], encoder=my_encoder)   # doctest: +SKIP
    >>> sel.fit(sweep, train_problems).top_heads(test_problems[0], 1)  # doctest: +SKIP
    [Head(layer=0, head=1)]
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from sprint_lab.core.heads import Head, as_heads
from sprint_lab.selection.encoders import get_encoder

NO_PRUNE = "none"
REQUIRED_COLUMNS = ("question_id", "config", "correct")
_WEIGHTS = "selector.safetensors"
_CONFIG = "config.json"
_HISTORY = "history.parquet"
_FORMAT_VERSION = 1
_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "train_top1_hit", "val_top1_hit")


def _extra_columns(row: Mapping[str, Any]) -> list[str]:
    return [c for c in row if c not in _HISTORY_COLUMNS]


# ---------------------------------------------------------------------------- sweep tables
def sweep_table(sweep: Any) -> pd.DataFrame:
    """The tidy table of a ``SweepResult``-like object (``.table``) or of a DataFrame.

    Raises:
        ValueError: if it is neither, or lacks one of ``question_id``, ``config``, ``correct``.
    """
    table = getattr(sweep, "table", sweep)
    if not isinstance(table, pd.DataFrame):
        raise ValueError(
            f"expected a sweep result (with .table) or a DataFrame, got {type(sweep).__name__}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"sweep table is missing columns {missing}; it has {list(table.columns)}")
    return table


def _correctness(
    sweep: Any, heads: Sequence[Head | str | tuple[int, int]] | None
) -> tuple[pd.DataFrame, int]:
    table = sweep_table(sweep)
    rows = table.loc[table["config"].astype(str) != NO_PRUNE, list(REQUIRED_COLUMNS)].copy()
    if rows["correct"].isna().any():
        raise ValueError("sweep column 'correct' has missing values")
    rows["question_id"] = rows["question_id"].astype(str)
    labels = {text: Head.parse(text).label for text in rows["config"].astype(str).unique()}
    rows["config"] = rows["config"].astype(str).map(labels)
    if rows.duplicated(["question_id", "config"]).any():
        dup = rows.loc[rows.duplicated(["question_id", "config"]), ["question_id", "config"]]
        raise ValueError(f"sweep has repeated (question, head) rows, e.g. {dup.iloc[0].tolist()}")
    wanted = sorted(set(rows["config"]), key=Head.parse) if heads is None else _unique_labels(heads)
    absent = [label for label in wanted if label not in labels.values()]
    if absent:
        raise ValueError(f"the sweep has no rows for heads {absent}")
    rows = rows[rows["config"].isin(wanted)]
    matrix = rows.pivot(index="question_id", columns="config", values="correct")
    matrix = matrix.reindex(columns=wanted)
    complete = matrix.notna().all(axis=1)
    matrix = matrix[complete].astype(bool)
    matrix.columns.name = None
    return matrix, int((~complete).sum())


def correctness_matrix(
    sweep: Any, heads: Sequence[Head | str | tuple[int, int]] | None = None
) -> pd.DataFrame:
    """The [question, head] 0/1 correctness matrix of a sweep (the unpruned rows are ignored).

    Args:
        sweep: a ``SweepResult`` (its ``.table``) or the tidy DataFrame itself.
        heads: candidate heads (columns, in this order); default: every head in the sweep.

    Returns:
        A bool DataFrame indexed by ``question_id`` (str) with one column per head label.
        Questions lacking a row for some candidate head are left out.

    Raises:
        ValueError: for missing columns, bad head labels, repeated rows or absent heads.

    Example:
        >>> t = pd.DataFrame({"question_id": ["a", "a", "a"], "config": ["none", "L0H0", "L0H1"],
        ...                   "correct": [True, False, True]})
        >>> correctness_matrix(t).loc["a"].tolist()
        [False, True]
    """
    return _correctness(sweep, heads)[0]


def _unique_labels(heads: Iterable[Head | str | tuple[int, int]]) -> list[str]:
    labels = [h.label for h in as_heads(heads)]
    if not labels:
        raise ValueError("need at least one candidate head")
    if len(set(labels)) != len(labels):
        raise ValueError(f"candidate heads repeat: {labels}")
    return labels


# ---------------------------------------------------------------------------- the loss
def multi_positive_loss(
    scores: Float[Tensor, "n_questions n_heads"], positives: Bool[Tensor, "n_questions n_heads"]
) -> Float[Tensor, ""]:
    """Mean over questions of ``-log(Σ_{positives} e^s / Σ_{all} e^s)`` (computed with logsumexp).

    Raises:
        ValueError: if some question has no positive head (its loss would be infinite).

    Example:
        >>> s = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
        >>> round(float(multi_positive_loss(s, torch.tensor([[True, True, False, False]]))), 4)
        0.6931
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)}")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every question needs at least one positive head")
    pos = torch.logsumexp(scores.masked_fill(~positives, float("-inf")), dim=1)
    return (torch.logsumexp(scores, dim=1) - pos).mean()


def head_repulsion(
    vectors: Float[Tensor, "n_heads dim"], temperature: float = 1.0
) -> Float[Tensor, ""]:
    """Mean of ``exp(-‖v_i - v_j‖² / τ)`` over head pairs i < j: large when head vectors crowd.

    Example:
        >>> float(head_repulsion(torch.zeros(3, 2)))
        1.0
    """
    n = vectors.shape[0]
    if n < 2:
        return vectors.sum() * 0.0
    d2 = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    i, j = torch.triu_indices(n, n, offset=1)
    return torch.exp(-d2[i, j] / temperature).mean()


class _SelectorNet(nn.Module):
    """q = W·((φ - μ) / σ) + b; one vector per head; score = -‖q - v‖² / τ."""

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
        return self.proj((x - self.feature_mean) / self.feature_scale)

    def forward(self, x: Float[Tensor, "n enc_dim"]) -> Float[Tensor, "n n_heads"]:
        q = self.query(x)
        d2 = ((q[:, None, :] - self.head_vectors[None, :, :]) ** 2).sum(-1)
        return -d2 / self.temperature


def _as_items(problems: Any) -> list[Any]:
    """A list of problems / question strings; a single one becomes a list of one."""
    if isinstance(problems, str) or hasattr(problems, "question"):
        return [problems]
    return list(problems)


def _problem_id(item: Any) -> str:
    try:
        return str(item.id)
    except AttributeError as err:
        raise ValueError(f"expected a problem with an .id, got {type(item).__name__}") from err


# ---------------------------------------------------------------------------- the selector
class SprintSelector:
    """Learned per-question ranking of candidate heads (SPRINT).

    Args:
        heads: candidate heads (``Head``, ``"L3H5"`` labels or ``(layer, head)`` pairs); their
            order is the column order of :meth:`scores`.
        encoder: question encoder: a spec for :func:`sprint_lab.selection.encoders.get_encoder`
            (``"minilm"``, ``"minilm:<model>"``), resolved on first use, or any object with
            ``encode(list[str]) -> Tensor[n, enc_dim]`` such as
            ``ResidualEncoder(lab_model, layer)`` (``encode_problems`` is used when present, else
            the object is wrapped in :class:`~sprint_lab.selection.encoders.CachedEncoder`, so vectors are
            cached by question id).
        dim: output size p of the linear map (not given in the paper).
        temperature: τ in ``s = -‖q - v‖² / τ`` (the paper has none, i.e. 1).
        seed: seeds the initialisation, the train/validation split and batch shuffling.
        diversity: weight of an optional repulsion penalty on head vectors,
            ``mean_{i<j} exp(-‖v_i - v_j‖² / τ)`` (see :func:`head_repulsion`); 0 = off.
        standardize: before the linear map, subtract the training questions' mean feature
            vector and divide by one scalar, their root-mean-square distance to it, so inputs
            have norm ≈ 1 whatever the encoder (a residual stream's norm is in the hundreds).
            A single scale keeps φ's geometry (per-feature scaling would blow up noise
            dimensions). It is an affine change of φ, so the model class is the paper's.

    Attributes (after :meth:`fit`):
        history: one row per epoch (0 = initialisation): ``epoch, train_loss, val_loss,
            train_top1_hit, val_top1_hit`` (+ ``diversity_penalty`` when ``diversity > 0``).
        report_: counts: questions used, with no correct head, with every head correct (both
            excluded from the loss), train/validation sizes, best epoch, early stop.
        train_ids_: every question id ``fit`` used (train + validation, including the excluded
            ones); evaluation code should refuse test sets that overlap it.

    Example:
        >>> import torch, pandas as pd
        >>> from types import SimpleNamespace as P
        >>> probs = [P(id=str(i), question=f"q{i}") for i in range(20)]
        >>> emb = {p.id: torch.tensor([1.0, 0.0]) if int(p.id) % 2 else torch.tensor([0.0, 1.0])
        ...        for p in probs}
        >>> rows = [(p.id, h, (int(p.id) % 2) == (h == "L0H1")) for p in probs
        ...         for h in ("L0H0", "L0H1")]
        >>> sweep = pd.DataFrame(rows, columns=["question_id", "config", "correct"])
        >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
        >>> sel.top_heads(probs[1], 1, embeddings={"1": emb["1"]})
        [Head(layer=0, head=1)]
    """

    def __init__(
        self,
        heads: Sequence[Head | str | tuple[int, int]],
        encoder: Any = "minilm",
        dim: int = 64,
        temperature: float = 1.0,
        seed: int = 0,
        diversity: float = 0.0,
        *,
        standardize: bool = True,
    ) -> None:
        labels = _unique_labels(heads)
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not float(diversity) >= 0:
            raise ValueError(f"diversity must be >= 0, got {diversity}")
        self.heads: list[Head] = [Head.parse(label) for label in labels]
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.diversity = float(diversity)
        self.standardize = bool(standardize)
        self._encoder_spec = encoder
        self._encoder: Any = None if isinstance(encoder, str) else get_encoder(encoder)
        self.net_: _SelectorNet | None = None
        self.enc_dim_: int | None = None
        self.history = pd.DataFrame(columns=list(_HISTORY_COLUMNS))
        self.report_: dict[str, Any] = {}
        self.train_ids_: set[str] = set()
        self.train_question_ids_: list[str] = []
        self.val_question_ids_: list[str] = []
        self.excluded_ids_: dict[str, list[str]] = {"no_correct_head": [], "all_heads_correct": []}

    # ------------------------------------------------------------------ encoder / features
    @property
    def labels(self) -> list[str]:
        """Candidate head labels, in column order."""
        return [h.label for h in self.heads]

    @property
    def encoder(self) -> Any:
        """The question encoder (a string spec is resolved on first access)."""
        if self._encoder is None:
            self._encoder = get_encoder(self._encoder_spec)
        return self._encoder

    @property
    def encoder_name(self) -> str:
        """Name of the encoder (its ``.name``, or the spec string if not yet resolved)."""
        if self._encoder is not None:
            return str(getattr(self._encoder, "name", type(self._encoder).__name__))
        return str(self._encoder_spec)

    def _features(
        self,
        items: Sequence[Any],
        embeddings: Mapping[str, Tensor] | Tensor | None,
        check_dim: bool = True,
    ) -> Float[Tensor, "n enc_dim"]:
        """Encoder features for problems (cached by id) and/or raw question strings."""
        if not items:
            return torch.zeros(0, self.enc_dim_ or 0)
        if embeddings is not None:
            if isinstance(embeddings, Mapping):
                ids = [_problem_id(p) for p in items]
                missing = [i for i in ids if i not in embeddings]
                if missing:
                    raise ValueError(f"embeddings lack problem ids {missing[:5]}")
                x = torch.stack([torch.as_tensor(embeddings[i]).reshape(-1) for i in ids])
            else:
                x = torch.as_tensor(embeddings)
                if x.ndim != 2 or x.shape[0] != len(items):
                    raise ValueError(
                        f"embeddings of shape {tuple(x.shape)} do not align with {len(items)} items"
                    )
        else:
            is_text = [isinstance(item, str) for item in items]
            x_parts: dict[bool, Tensor] = {}
            if not all(is_text):
                probs = [it for it, t in zip(items, is_text, strict=True) if not t]
                x_parts[False] = torch.as_tensor(self.encoder.encode_problems(probs))
            if any(is_text):
                texts = [it for it, t in zip(items, is_text, strict=True) if t]
                x_parts[True] = torch.as_tensor(self.encoder.encode(texts))
            width = next(iter(x_parts.values())).shape[1]
            x = torch.zeros(len(items), width)
            for flag, part in x_parts.items():
                rows = [i for i, t in enumerate(is_text) if t == flag]
                x[rows] = part.detach().to("cpu", torch.float32)
        x = x.detach().to("cpu", torch.float32)
        if check_dim and self.enc_dim_ is not None and x.shape[1] != self.enc_dim_:
            raise ValueError(
                f"features have dim {x.shape[1]}, the selector expects {self.enc_dim_}"
            )
        return x

    # ------------------------------------------------------------------ training
    def fit(
        self,
        sweep: Any,
        problems: Iterable[Any],
        *,
        val_fraction: float = 0.2,
        epochs: int = 200,
        lr: float = 1e-2,
        batch_size: int | None = None,
        patience: int | None = 20,
        weight_decay: float = 0.0,
        verbose: bool = False,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
        num_threads: int | None = 1,
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> SprintSelector:
        """Train on a sweep's correctness matrix for the candidate heads.

        Questions are the ids present both in ``problems`` and in the sweep (with a row for every
        candidate head). Those no candidate solves and those every candidate solves carry no
        signal: they are counted in ``report_`` and left out of the loss. The rest are split by
        question id (seeded) into train and validation; training uses Adam (``weight_decay`` as
        L2), full batch unless ``batch_size`` is given (then seeded shuffling), and stops early
        after ``patience`` epochs without a lower validation loss, restoring the best weights.

        Args:
            sweep: ``SweepResult`` or tidy DataFrame (``question_id``, ``config``, ``correct``).
            problems: objects with ``.id`` and ``.question`` (their texts are encoded).
            val_fraction: share of the informative questions held out for early stopping
                (0: no validation, train all ``epochs``).
            epochs: maximum number of epochs.
            lr: Adam learning rate.
            batch_size: questions per step (``None``: all training questions).
            patience: epochs without improvement before stopping (``None``: never stop early).
            weight_decay: Adam L2 penalty.
            verbose: print progress every tenth of the epochs.
            embeddings: precomputed encoder features instead of the encoder: a mapping from
                problem id to vector, or a tensor aligned with ``problems``.
            num_threads: torch CPU threads while training (restored afterwards); the network is
                small enough that thread overhead dominates. ``None`` keeps the current setting.
            callback: called with each history row (a dict: ``epoch``, losses, hit rates) right
                after it is computed, from epoch 0 (initialisation) on; for live plots such as
                :class:`sprint_lab.widgets.panels.SelectorTrainer`.

        Returns:
            ``self``.

        Raises:
            ValueError: for a malformed sweep, no overlap between sweep and problems, or no
                question with both correct and incorrect candidate heads.
        """
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        problems = list(problems)
        ids = [_problem_id(p) for p in problems]
        if len(set(ids)) != len(ids):
            raise ValueError("problem ids repeat")
        matrix, n_incomplete = _correctness(sweep, self.heads)
        in_sweep = set(matrix.index)
        keep = [i for i, qid in enumerate(ids) if qid in in_sweep]
        if not keep:
            raise ValueError(
                "no overlap between the sweep's question ids and the problems' ids "
                f"(sweep e.g. {list(matrix.index[:3])}, problems e.g. {ids[:3]})"
            )
        if embeddings is not None and not isinstance(embeddings, Mapping):
            embeddings = torch.as_tensor(embeddings)
            if embeddings.ndim != 2 or embeddings.shape[0] != len(problems):
                raise ValueError(
                    f"embeddings of shape {tuple(embeddings.shape)} do not align with "
                    f"{len(problems)} problems"
                )
            embeddings = embeddings[keep]
        used = [problems[i] for i in keep]
        used_ids = [ids[i] for i in keep]
        x_all = self._features(used, embeddings, check_dim=False)
        y_all = torch.tensor(matrix.loc[used_ids].to_numpy(dtype=bool, copy=True))

        n_pos = y_all.sum(dim=1)
        none_ok = n_pos == 0
        all_ok = n_pos == len(self.heads)
        informative = ~(none_ok | all_ok)
        if not bool(informative.any()):
            raise ValueError(
                "no question has both correct and incorrect candidate heads: nothing to learn"
            )
        inf_ids = sorted(
            qid for qid, flag in zip(used_ids, informative.tolist(), strict=True) if flag
        )
        order = np.random.default_rng(self.seed).permutation(len(inf_ids))
        n_val = 0
        if val_fraction > 0 and len(inf_ids) >= 2:
            n_val = min(max(1, round(val_fraction * len(inf_ids))), len(inf_ids) - 1)
        val_ids = [inf_ids[i] for i in order[:n_val]]
        train_ids = [inf_ids[i] for i in order[n_val:]]
        pos = {qid: i for i, qid in enumerate(used_ids)}
        tr = torch.tensor([pos[q] for q in train_ids], dtype=torch.long)
        va = torch.tensor([pos[q] for q in val_ids], dtype=torch.long)

        threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        try:
            net, rows, best_epoch, stopped_early = self._train(
                x_all,
                y_all,
                tr,
                va,
                epochs,
                lr,
                batch_size,
                patience,
                weight_decay,
                verbose,
                callback,
            )
        finally:
            torch.set_num_threads(threads)

        self.net_ = net.eval()
        self.enc_dim_ = int(x_all.shape[1])
        self.history = pd.DataFrame(rows)[[*_HISTORY_COLUMNS, *_extra_columns(rows[0])]]
        self.train_question_ids_ = train_ids
        self.val_question_ids_ = val_ids
        self.train_ids_ = set(used_ids)
        flags = list(zip(used_ids, none_ok.tolist(), all_ok.tolist(), strict=True))
        self.excluded_ids_ = {
            "no_correct_head": [q for q, n, _ in flags if n],
            "all_heads_correct": [q for q, _, a in flags if a],
        }
        self.report_ = {
            "n_heads": len(self.heads),
            "n_questions": len(used_ids),
            "n_no_correct_head": int(none_ok.sum()),
            "n_all_heads_correct": int(all_ok.sum()),
            "n_informative": len(inf_ids),
            "n_train": len(train_ids),
            "n_val": len(val_ids),
            "n_incomplete_in_sweep": n_incomplete,
            "n_sweep_questions_without_problem": len(in_sweep) - len(used_ids),
            "n_problems_without_sweep": len(problems) - len(used_ids),
            "epochs_run": len(rows) - 1,
            "best_epoch": best_epoch,
            "stopped_early": stopped_early,
            "used_precomputed_embeddings": embeddings is not None,
        }
        return self

    def _train(
        self,
        x: Float[Tensor, "n_questions enc_dim"],
        y: Bool[Tensor, "n_questions n_heads"],
        tr: Tensor,
        va: Tensor,
        epochs: int,
        lr: float,
        batch_size: int | None,
        patience: int | None,
        weight_decay: float,
        verbose: bool,
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> tuple[_SelectorNet, list[dict[str, float]], int, bool]:
        """The optimisation loop of :meth:`fit` on the rows ``tr`` (train) and ``va`` (val)."""
        net = _SelectorNet(x.shape[1], self.dim, len(self.heads), self.temperature, self.seed)
        if self.standardize:
            mean = x[tr].mean(dim=0)
            rms = float((x[tr] - mean).pow(2).sum(dim=1).mean().sqrt())
            net.feature_mean.copy_(mean)
            net.feature_scale.fill_(rms if rms > 1e-8 else 1.0)
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        shuffle = torch.Generator().manual_seed(self.seed + 1)

        def evaluate(epoch: int) -> dict[str, float]:
            net.eval()
            with torch.no_grad():
                row = {"epoch": epoch}
                for split, xs, ys in (("train", x_tr, y_tr), ("val", x_va, y_va)):
                    if len(ys) == 0:
                        row[f"{split}_loss"] = float("nan")
                        row[f"{split}_top1_hit"] = float("nan")
                        continue
                    s = net(xs)
                    row[f"{split}_loss"] = float(multi_positive_loss(s, ys))
                    hit = ys.gather(1, s.argmax(dim=1, keepdim=True)).float().mean()
                    row[f"{split}_top1_hit"] = float(hit)
                if self.diversity > 0:
                    row["diversity_penalty"] = float(
                        head_repulsion(net.head_vectors, self.temperature)
                    )
            return row

        rows = [evaluate(0)]
        if callback is not None:
            callback(dict(rows[0]))
        best_loss, best_epoch, waited = rows[0]["val_loss"], 0, 0
        best_state = copy.deepcopy(net.state_dict())
        stopped_early = False
        step = len(x_tr) if batch_size is None else int(batch_size)
        for epoch in range(1, int(epochs) + 1):
            net.train()
            perm = (
                torch.arange(len(x_tr))
                if batch_size is None
                else torch.randperm(len(x_tr), generator=shuffle)
            )
            for start in range(0, len(perm), step):
                b = perm[start : start + step]
                loss = multi_positive_loss(net(x_tr[b]), y_tr[b])
                if self.diversity > 0:
                    loss = loss + self.diversity * head_repulsion(
                        net.head_vectors, self.temperature
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
            rows.append(evaluate(epoch))
            if callback is not None:
                callback(dict(rows[-1]))
            if verbose and (epoch % max(1, int(epochs) // 10) == 0 or epoch == 1):
                r = rows[-1]
                print(
                    f"epoch {epoch:4d}  train {r['train_loss']:.4f}  val {r['val_loss']:.4f}  "
                    f"val top-1 hit {r['val_top1_hit']:.3f}"
                )
            if len(va):
                if rows[-1]["val_loss"] < best_loss:
                    best_loss, best_epoch, waited = rows[-1]["val_loss"], epoch, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    waited += 1
                    if patience is not None and waited >= int(patience):
                        stopped_early = True
                        break
        if len(va):
            net.load_state_dict(best_state)
        else:
            best_epoch = len(rows) - 1

        return net, rows, best_epoch, stopped_early

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> _SelectorNet:
        if self.net_ is None:
            raise RuntimeError("the selector is not fitted: call fit() or SprintSelector.load()")
        return self.net_

    @torch.no_grad()
    def scores(
        self,
        problems: Sequence[Any],
        *,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
    ) -> Float[Tensor, "n_questions n_heads"]:
        """Scores s(x, c) = -‖q - v_c‖² / τ for each problem and candidate head.

        Args:
            problems: problems (``.id`` and ``.question``; encoded once per id), raw question
                strings, or a single one of either.
            embeddings: precomputed encoder features (id -> vector, or a tensor aligned with
                ``problems``) instead of the encoder.

        Example:
            >>> sel.scores(test_problems).shape              # doctest: +SKIP
            torch.Size([500, 72])
        """
        net = self._check_fitted()
        return net(self._features(_as_items(problems), embeddings))

    @torch.no_grad()
    def question_vectors(
        self,
        problems: Sequence[Any],
        *,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
    ) -> Float[Tensor, "n_questions dim"]:
        """The projected question vectors q = Wφ(x) + b (for plots)."""
        net = self._check_fitted()
        return net.query(self._features(_as_items(problems), embeddings))

    @property
    def head_vectors(self) -> Float[Tensor, "n_heads dim"]:
        """The learned head vectors v_c, one row per candidate head (a detached copy)."""
        return self._check_fitted().head_vectors.detach().clone()

    def rank(
        self,
        problems: Sequence[Any],
        *,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
    ) -> pd.DataFrame:
        """All candidate heads ranked per problem (rank 1 = highest score, ties by head order).

        Returns:
            Columns ``question_id, head, layer, head_index, score, rank``; problems in input order,
            heads by rank within each problem.

        Example:
            >>> sel.rank(test_problems).query("rank <= 4")      # doctest: +SKIP
        """
        problems = _as_items(problems)
        ids = [_problem_id(p) for p in problems]
        s = self.scores(problems, embeddings=embeddings).numpy()
        order = np.argsort(-s, axis=1, kind="stable")
        n_q, n_h = s.shape
        heads = [self.heads[j] for j in order.reshape(-1)]
        return pd.DataFrame(
            {
                "question_id": np.repeat(np.asarray(ids, dtype=object), n_h),
                "head": [h.label for h in heads],
                "layer": np.array([h.layer for h in heads], dtype=int),
                "head_index": np.array([h.head for h in heads], dtype=int),
                "score": np.take_along_axis(s, order, axis=1).reshape(-1).astype(float),
                "rank": np.tile(np.arange(1, n_h + 1), n_q),
            }
        )

    def top_heads(
        self,
        problem_or_question: Any,
        n: int = 1,
        *,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
    ) -> list[Head]:
        """The ``n`` best heads to prune for one problem (or raw question text), best first.

        Example:
            >>> sel.top_heads("What is 2 + 2?", 3)             # doctest: +SKIP
            [Head(layer=15, head=3), Head(layer=0, head=7), Head(layer=5, head=1)]
        """
        if not 1 <= int(n) <= len(self.heads):
            raise ValueError(f"n must be in [1, {len(self.heads)}], got {n}")
        s = self.scores([problem_or_question], embeddings=embeddings)[0].numpy()
        order = np.argsort(-s, kind="stable")[: int(n)]
        return [self.heads[j] for j in order]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the selector to a directory: ``selector.safetensors``, ``config.json``,
        ``history.parquet``.

        Example:
            >>> sel.save("runs/selector")                       # doctest: +SKIP
        """
        from safetensors.torch import save_file

        net = self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
        save_file(tensors, str(out / _WEIGHTS))
        config = {
            "format_version": _FORMAT_VERSION,
            "heads": self.labels,
            "encoder": self.encoder_name,
            "enc_dim": self.enc_dim_,
            "dim": self.dim,
            "temperature": self.temperature,
            "seed": self.seed,
            "diversity": self.diversity,
            "standardize": self.standardize,
            "report": self.report_,
            "train_ids": sorted(self.train_ids_),
            "train_question_ids": self.train_question_ids_,
            "val_question_ids": self.val_question_ids_,
            "excluded_ids": self.excluded_ids_,
        }
        (out / _CONFIG).write_text(json.dumps(config, indent=2))
        self.history.to_parquet(out / _HISTORY, index=False)
        return out

    @classmethod
    def load(
        cls, path: str | os.PathLike, encoder: Any = None, *, lab_model: Any = None
    ) -> SprintSelector:
        """Read a selector written by :meth:`save`; scores are identical to the saved one's.

        Args:
            path: the directory.
            encoder: encoder object or spec; default: the saved encoder name (``"minilm"``
                works as is; a residual encoder needs ``lab_model``).
            lab_model: the language model, for a saved ``residual:<layer>`` encoder.

        Example:
            >>> sel2 = SprintSelector.load("runs/selector")     # doctest: +SKIP
        """
        from safetensors.torch import load_file

        folder = Path(path)
        if not (folder / _CONFIG).is_file():
            raise FileNotFoundError(f"{folder} has no {_CONFIG}: not a saved SprintSelector")
        config = json.loads((folder / _CONFIG).read_text())
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported selector format {config.get('format_version')}")
        spec = config["encoder"] if encoder is None else encoder
        if isinstance(spec, str) and lab_model is not None:
            spec = get_encoder(spec, lab_model=lab_model)
        sel = cls(
            config["heads"],
            encoder=spec,
            dim=config["dim"],
            temperature=config["temperature"],
            seed=config["seed"],
            diversity=config["diversity"],
            standardize=config["standardize"],
        )
        enc_dim = int(config["enc_dim"])
        given = getattr(sel._encoder, "dim", None)
        if given is not None and int(given) != enc_dim:
            raise ValueError(f"encoder dim {given} != the saved selector's input dim {enc_dim}")
        net = _SelectorNet(enc_dim, sel.dim, len(sel.heads), sel.temperature, sel.seed)
        net.load_state_dict(load_file(str(folder / _WEIGHTS)))
        sel.net_ = net.eval()
        sel.enc_dim_ = enc_dim
        sel.report_ = dict(config["report"])
        sel.train_ids_ = set(config["train_ids"])
        sel.train_question_ids_ = list(config["train_question_ids"])
        sel.val_question_ids_ = list(config["val_question_ids"])
        sel.excluded_ids_ = {k: list(v) for k, v in config["excluded_ids"].items()}
        if (folder / _HISTORY).is_file():
            sel.history = pd.read_parquet(folder / _HISTORY)
        return sel

    def __repr__(self) -> str:
        state = "fitted" if self.net_ is not None else "not fitted"
        return (
            f"SprintSelector({len(self.heads)} heads, encoder={self.encoder_name!r}, "
            f"dim={self.dim}, temperature={self.temperature}, {state})"
        )
