"""SPRINT's head selector: pick, per question, which single attention head to prune.

A frozen encoder embeds the question, φ(x); a trainable linear map gives q = Wφ(x) + b, and each
candidate head c has a learnable vector v_c. The score is s(x, c) = -‖q - v_c‖² / τ, trained with
the multi-positive contrastive loss -log(Σ_{c correct} e^{s} / Σ_{c candidate} e^{s}) on a sweep's
[question, head] correctness matrix, so a question pulls *some* head that solves it close to q.
Ranking heads by score gives SPRINT's top-N (``sprint-paper.md`` §4–5).

The network and its training loop are in :mod:`sprint_lab.selection.training`, the loss in
:mod:`sprint_lab.selection.loss`.

Example:
    Odd-numbered questions are solved by head L0H1 only, even ones by L0H0 only; precomputed
    two-dimensional features stand in for the encoder:

    >>> from types import SimpleNamespace as P
    >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
    >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
    >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
    ...                       for p in probs for h in ("L0H0", "L0H1")],
    ...                      columns=["question_id", "config", "correct"])
    >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
    >>> sel.top_heads(probs[3], 1, embeddings=emb), sel.top_heads(probs[4], 1, embeddings=emb)
    ([Head(layer=0, head=1)], [Head(layer=0, head=0)])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from sprint_lab.core.configs import Candidate, as_candidates
from sprint_lab.core.errors import InputError
from sprint_lab.core.heads import CONFIG_SEPARATOR, Head
from sprint_lab.selection.encoders import get_encoder
from sprint_lab.selection.training import (
    QuestionSplit,
    SelectorNet,
    TrainOutcome,
    TrainSettings,
    split_questions,
    train_net,
)
from sprint_lab.sweeps.result import SweepResult
from sprint_lab.sweeps.rows import config_position

__all__ = ["SprintSelector", "correctness_matrix", "heads_checksum", "sweep_table"]

_WEIGHTS = "selector.safetensors"
_CONFIG = "config.json"
_HISTORY = "history.parquet"
_FORMAT_VERSION = 1
_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "train_top1_hit", "val_top1_hit")


def _extra_columns(row: Mapping[str, Any]) -> list[str]:
    return [c for c in row if c not in _HISTORY_COLUMNS]


def heads_checksum(labels: Sequence[str]) -> str:
    """SHA-256 of the ordered head labels joined by ``","``, as saved in a selector's config.

    Row ``i`` of the saved head vectors belongs to head ``i``, so the checksum ties the order of
    the config's ``heads`` list to the weights: a reordered or edited list no longer matches.

    Example:
        >>> heads_checksum(["L0H0", "L0H1"]) == heads_checksum(["L0H1", "L0H0"])
        False
        >>> len(heads_checksum(["L0H0", "L0H1"]))
        64
    """
    return hashlib.sha256(",".join(labels).encode("utf-8")).hexdigest()


def _saved_heads(config: Mapping[str, Any], config_file: Path) -> list[str]:
    """The config's head labels, checked against its ``heads_sha256`` (warns when absent)."""
    heads = config.get("heads")
    if not isinstance(heads, list) or not heads:
        raise InputError(f"{config_file}: 'heads' must be a non-empty list of head labels")
    try:
        labels = [c.label for c in as_candidates(heads, config.get("n_heads"))]
    except ValueError as error:
        raise InputError(f"{config_file}: 'heads': {error}") from error
    saved = config.get("heads_sha256")
    if saved is None:
        warnings.warn(
            f"{config_file} has no heads_sha256 (saved by an older sprint_lab), so the order of "
            "its 'heads' cannot be checked against the saved head vectors; save the selector "
            "again to add the checksum",
            stacklevel=3,
        )
    elif saved != heads_checksum(labels):
        raise InputError(
            f"{config_file}: the order of 'heads' does not match the saved head embeddings "
            "(heads_sha256 differs: the list was reordered or edited since it was saved), so "
            "the learned head vectors would score the wrong heads; restore the saved 'heads' "
            "list or fit and save the selector again"
        )
    return labels


def _heads_per_layer(candidates: Iterable[Any], n_heads: int | None) -> int | None:
    """``n_heads`` if given, else what a whole-layer :class:`~sprint_lab.core.configs.Config`
    among the candidates shows (its head count), else ``None``."""
    if n_heads is not None:
        return int(n_heads)
    for candidate in candidates:
        name = getattr(candidate, "name", None) or ""
        for part in name.split(CONFIG_SEPARATOR):
            whole = re.fullmatch(r"L(\d+)", part)
            if whole is not None:
                return sum(h.layer == int(whole.group(1)) for h in candidate.heads)
    return None


# ---------------------------------------------------------------------------- sweep tables
def sweep_table(sweep: Any) -> pd.DataFrame:
    """The tidy table of a ``SweepResult``-like object (``.table``) or of a DataFrame.

    Raises:
        ValueError: if it is neither, or lacks one of ``question_id``, ``config``, ``correct``.
    """
    return SweepResult.coerce(sweep).table


def _candidate_order(candidate: Candidate) -> tuple[tuple[int, int], str]:
    """Sort key: single heads by (layer, head) as before, other configurations after them."""
    position = config_position(candidate.label)
    return (position if position[1] >= 0 else (10**9, 0)), candidate.label


def _correctness(
    sweep: Any, heads: Sequence[Candidate | str | tuple[int, int]] | None
) -> tuple[pd.DataFrame, int]:
    result = SweepResult.coerce(sweep)
    if heads is None:
        unique = {c.label: c for c in result.heads}.values()
        wanted = [c.label for c in sorted(unique, key=_candidate_order)]
    else:
        wanted = _unique_labels(heads)
    full = result.correctness(wanted, complete=False)
    complete = full.notna().all(axis=1)
    return full[complete].astype(bool), int((~complete).sum())


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


def _unique_labels(
    heads: Iterable[Candidate | str | tuple[int, int]], n_heads: int | None = None
) -> list[str]:
    labels = [c.label for c in as_candidates(heads, n_heads)]
    if not labels:
        raise ValueError("need at least one candidate head")
    if len(set(labels)) != len(labels):
        raise ValueError(f"candidate heads repeat: {labels}")
    return labels


def _check_fit_args(
    val_fraction: float, epochs: int, batch_size: int | None, patience: int | None
) -> None:
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass
class _TrainingData:
    """The questions a fit uses: ids, encoder features, correctness, and what was dropped."""

    ids: list[str]
    x: Float[Tensor, "n_questions enc_dim"]
    correct: Bool[Tensor, "n_questions n_heads"]
    n_incomplete: int
    n_sweep_questions: int
    n_problems: int


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
        heads: candidates (``Head``, ``"L3H5"`` labels, ``(layer, head)`` pairs, or any
            configuration: ``"L3H5+L7H2"``, ``sl.layer(model, 12)``, ``"L3H5@mean"``); their
            order is the column order of :meth:`scores`.
        encoder: question encoder: a spec for :func:`sprint_lab.selection.encoders.get_encoder`
            (``"minilm"``, ``"minilm:<model>"``), resolved on first use, or any object with
            ``encode(list[str]) -> Tensor[n, enc_dim]`` such as
            ``ResidualEncoder(lab_model, layer)`` (``encode_problems`` is used when present, else
            the object is wrapped in
            :class:`~sprint_lab.selection.encoder_cache.CachedEncoder`, so vectors are cached by
            question id).
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
        n_heads: the model's heads per layer, needed only for whole-layer labels (``"L12"``)
            given as strings; read from a whole-layer ``Config`` when there is one.

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
        heads: Sequence[Candidate | str | tuple[int, int]],
        encoder: Any = "minilm",
        dim: int = 64,
        temperature: float | int = 1.0,
        seed: int = 0,
        diversity: float | int = 0.0,
        *,
        standardize: bool = True,
        n_heads: int | None = None,
    ) -> None:
        self.n_heads = _heads_per_layer(heads, n_heads)
        labels = _unique_labels(heads, self.n_heads)
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not float(diversity) >= 0:
            raise ValueError(f"diversity must be >= 0, got {diversity}")
        self.heads: list[Candidate] = as_candidates(labels, self.n_heads)
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.diversity = float(diversity)
        self.standardize = bool(standardize)
        self._encoder_spec = encoder
        self._encoder: Any = None if isinstance(encoder, str) else get_encoder(encoder)
        self.net_: SelectorNet | None = None
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
                :class:`sprint_lab.widgets.selector_trainer.SelectorTrainer`.

        Returns:
            ``self``.

        Raises:
            ValueError: for a malformed sweep, no overlap between sweep and problems, or no
                question with both correct and incorrect candidate heads.
        """
        _check_fit_args(val_fraction, epochs, batch_size, patience)
        data = self._training_data(sweep, problems, embeddings)
        split = split_questions(data.ids, data.correct, self.seed, float(val_fraction))
        net = SelectorNet(data.x.shape[1], self.dim, len(self.heads), self.temperature, self.seed)
        if self.standardize:
            net.standardize(data.x[split.train_rows])
        settings = TrainSettings(
            epochs=int(epochs),
            lr=lr,
            batch_size=batch_size,
            patience=patience,
            weight_decay=weight_decay,
            diversity=self.diversity,
            seed=self.seed,
            verbose=verbose,
        )
        threads = torch.get_num_threads()
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        try:
            outcome = train_net(net, data.x, data.correct, split, settings, callback)
        finally:
            torch.set_num_threads(threads)
        self._record_fit(data, split, outcome, used_embeddings=embeddings is not None)
        return self

    def _training_data(
        self,
        sweep: Any,
        problems: Iterable[Any],
        embeddings: Mapping[str, Tensor] | Tensor | None,
    ) -> _TrainingData:
        """Features and correctness of the problems that have a full row in the sweep."""
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
        used_ids = [ids[i] for i in keep]
        return _TrainingData(
            ids=used_ids,
            x=self._features([problems[i] for i in keep], embeddings, check_dim=False),
            correct=torch.tensor(matrix.loc[used_ids].to_numpy(dtype=bool, copy=True)),
            n_incomplete=n_incomplete,
            n_sweep_questions=len(in_sweep),
            n_problems=len(problems),
        )

    def _record_fit(
        self,
        data: _TrainingData,
        split: QuestionSplit,
        outcome: TrainOutcome,
        *,
        used_embeddings: bool,
    ) -> None:
        """Keep the trained network, its history, the question ids and the counts of a fit."""
        rows = outcome.rows
        self.net_ = outcome.net.eval()
        self.enc_dim_ = int(data.x.shape[1])
        self.history = pd.DataFrame(rows)[[*_HISTORY_COLUMNS, *_extra_columns(rows[0])]]
        self.train_question_ids_ = split.train_ids
        self.val_question_ids_ = split.val_ids
        self.train_ids_ = set(data.ids)
        none_ok, all_ok = split.no_head_ok, split.all_heads_ok
        flags = list(zip(data.ids, none_ok.tolist(), all_ok.tolist(), strict=True))
        self.excluded_ids_ = {
            "no_correct_head": [q for q, n, _ in flags if n],
            "all_heads_correct": [q for q, _, a in flags if a],
        }
        self.report_ = {
            "n_heads": len(self.heads),
            "n_questions": len(data.ids),
            "n_no_correct_head": int(none_ok.sum()),
            "n_all_heads_correct": int(all_ok.sum()),
            "n_informative": len(split.informative),
            "n_train": len(split.train_ids),
            "n_val": len(split.val_ids),
            "n_incomplete_in_sweep": data.n_incomplete,
            "n_sweep_questions_without_problem": data.n_sweep_questions - len(data.ids),
            "n_problems_without_sweep": data.n_problems - len(data.ids),
            "epochs_run": len(rows) - 1,
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "used_precomputed_embeddings": used_embeddings,
        }

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> SelectorNet:
        if self.net_ is None:
            raise RuntimeError("the selector is not fitted: call fit() or SprintSelector.load()")
        return self.net_

    @torch.no_grad()
    def scores(
        self,
        problems: Any,
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
            >>> from types import SimpleNamespace as P
            >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
            >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
            >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
            ...                       for p in probs for h in ("L0H0", "L0H1")],
            ...                      columns=["question_id", "config", "correct"])
            >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
            >>> sel.scores(probs[:3], embeddings=emb).shape
            torch.Size([3, 2])
        """
        net = self._check_fitted()
        return net(self._features(_as_items(problems), embeddings))

    @torch.no_grad()
    def question_vectors(
        self,
        problems: Any,
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
        problems: Any,
        *,
        embeddings: Mapping[str, Tensor] | Tensor | None = None,
    ) -> pd.DataFrame:
        """All candidate heads ranked per problem (rank 1 = highest score, ties by head order).

        Returns:
            Columns ``question_id, head, layer, head_index, score, rank``; problems in input order,
            heads by rank within each problem.

        Example:
            >>> from types import SimpleNamespace as P
            >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
            >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
            >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
            ...                       for p in probs for h in ("L0H0", "L0H1")],
            ...                      columns=["question_id", "config", "correct"])
            >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
            >>> sel.rank(probs[:1], embeddings=emb)[["question_id", "head", "rank"]]
              question_id  head  rank
            0           0  L0H0     1
            1           0  L0H1     2
        """
        problems = _as_items(problems)
        ids = [_problem_id(p) for p in problems]
        s = self.scores(problems, embeddings=embeddings).numpy()
        order = np.argsort(-s, axis=1, kind="stable")
        n_q, n_h = s.shape
        heads = [self.heads[j] for j in order.reshape(-1)]
        positions = [config_position(h.label) for h in heads]
        return pd.DataFrame(
            {
                "question_id": np.repeat(np.asarray(ids, dtype=object), n_h),
                "head": [h.label for h in heads],
                "layer": np.array([layer for layer, _ in positions], dtype=int),
                "head_index": np.array([head for _, head in positions], dtype=int),
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
    ) -> list[Candidate]:
        """The ``n`` best heads (or configurations) to prune for one problem (or raw question
        text), best first.

        Example:
            >>> from types import SimpleNamespace as P
            >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
            >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
            >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
            ...                       for p in probs for h in ("L0H0", "L0H1")],
            ...                      columns=["question_id", "config", "correct"])
            >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
            >>> sel.top_heads(probs[1], 2, embeddings=emb)
            [Head(layer=0, head=1), Head(layer=0, head=0)]
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

        ``config.json`` records the candidate heads in the order of the head-vector rows and
        their :func:`heads_checksum` (``heads_sha256``), which :meth:`load` verifies.

        Example:
            >>> from types import SimpleNamespace as P
            >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
            >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
            >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
            ...                       for p in probs for h in ("L0H0", "L0H1")],
            ...                      columns=["question_id", "config", "correct"])
            >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
            >>> import tempfile
            >>> sorted(p.name for p in sel.save(tempfile.mkdtemp()).iterdir())
            ['config.json', 'history.parquet', 'selector.safetensors']
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
            "heads_sha256": heads_checksum(self.labels),
            "n_heads": self.n_heads,
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

        Raises:
            FileNotFoundError: if ``path`` holds no ``config.json``.
            InputError: (a ``ValueError``) naming ``config.json`` when its ``heads`` list no longer
                matches its ``heads_sha256`` (reordered or edited, so the saved head vectors
                would score the wrong heads), when it lists a different number of heads than
                ``selector.safetensors`` has head vectors, or for an unknown format. A config
                without ``heads_sha256`` (an older save) loads with a warning.

        Example:
            >>> from types import SimpleNamespace as P
            >>> probs = [P(id=str(i), question=f"q{i}") for i in range(8)]
            >>> emb = {p.id: torch.tensor([float(int(p.id) % 2), 1.0]) for p in probs}
            >>> sweep = pd.DataFrame([(p.id, h, (int(p.id) % 2) == (h == "L0H1"))
            ...                       for p in probs for h in ("L0H0", "L0H1")],
            ...                      columns=["question_id", "config", "correct"])
            >>> sel = SprintSelector(["L0H0", "L0H1"], dim=4).fit(sweep, probs, embeddings=emb)
            >>> import tempfile
            >>> again = SprintSelector.load(sel.save(tempfile.mkdtemp()))
            >>> torch.equal(again.scores(probs, embeddings=emb), sel.scores(probs, embeddings=emb))
            True
        """
        from safetensors.torch import load_file

        folder = Path(path)
        config_file = folder / _CONFIG
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder} has no {_CONFIG}: not a saved SprintSelector")
        config = json.loads(config_file.read_text())
        if config.get("format_version") != _FORMAT_VERSION:
            raise InputError(
                f"{config_file}: unsupported selector format {config.get('format_version')!r} "
                f"(this sprint_lab reads format {_FORMAT_VERSION})"
            )
        labels = _saved_heads(config, config_file)
        weights = load_file(str(folder / _WEIGHTS))
        rows = weights.get("head_vectors")
        if rows is not None and rows.shape[0] != len(labels):
            raise InputError(
                f"{config_file} lists {len(labels)} heads but {folder / _WEIGHTS} holds "
                f"{rows.shape[0]} head vectors: the config does not belong to these weights"
            )
        spec = config["encoder"] if encoder is None else encoder
        if isinstance(spec, str) and lab_model is not None:
            spec = get_encoder(spec, lab_model=lab_model)
        sel = cls(
            labels,
            encoder=spec,
            dim=config["dim"],
            temperature=config["temperature"],
            seed=config["seed"],
            diversity=config["diversity"],
            standardize=config["standardize"],
            n_heads=config.get("n_heads"),
        )
        enc_dim = int(config["enc_dim"])
        given = getattr(sel._encoder, "dim", None)
        if given is not None and int(given) != enc_dim:
            raise ValueError(f"encoder dim {given} != the saved selector's input dim {enc_dim}")
        net = SelectorNet(enc_dim, sel.dim, len(sel.heads), sel.temperature, sel.seed)
        net.load_state_dict(weights)
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
