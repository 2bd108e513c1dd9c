"""A model-internal question encoder: the language model's own residual stream.

Instead of a separate sentence encoder, embed a question with the model being pruned: run the
question alone through it and mean-pool the residual stream after one block over the real
tokens. It costs one forward pass per question of the model already loaded, and the vectors
live in the space the heads themselves read from.

Example:
    >>> ResidualEncoder(model, layer=-1).encode(["What is 2 + 2?"]).shape
    torch.Size([1, 64])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sprint_lab.core.boundary import no_type_check
from sprint_lab.selection.encoder_cache import QuestionEncoder, as_texts

__all__ = ["ResidualEncoder"]


def _blocks(hf_model: Any, n_layers: int) -> torch.nn.ModuleList:
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
        >>> enc = ResidualEncoder(model, layer=1)
        >>> enc.encode(["What is 2 + 2?", "Is 7 prime?"]).shape  # [n_questions, d_model]
        torch.Size([2, 64])
    """

    @no_type_check  # checks layer itself: bools, floats, out-of-range -> ValueError
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
            >>> ResidualEncoder(model, 0).encode(["1+1?"]).shape
            torch.Size([1, 64])
        """
        texts = as_texts(questions)
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
