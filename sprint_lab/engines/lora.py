"""Head ablation as a LoRA adapter, for serving engines that know nothing of sprint_lab's gate.

The gate (:mod:`sprint_lab.core.gate`) zeroes head ``h`` of layer ``l`` at the input of that
layer's output projection. Write that input as ``z`` (``n_heads * d_head`` wide, one
``d_head``-wide slice per *query* head, also under grouped-query attention) and the projection
as ``W_O`` (``[d_model, n_heads * d_head]``). Zeroing the slice ``s_h`` of ``z`` gives::

    W_O z_without_h = W_O z - W_O[:, s_h] z[s_h] = W_O z + B A z

with ``A = I[s_h, :]`` (the ``d_head`` rows of the identity that select the slice,
``[r, n_heads * d_head]``) and ``B = -W_O[:, s_h]`` (``[d_model, r]``): a rank-``d_head`` LoRA
on ``o_proj`` with scale ``lora_alpha / r = 1``. Several heads of one layer stack their slices
(``r = d_head * k``); heads in several layers give one LoRA per layer. Layers that ablate fewer
heads than the widest one pad their ``A`` rows and ``B`` columns with zeros, since a PEFT adapter
has one rank. The identity is exact in real arithmetic; in float32 the engine's result differs
from the gate's by rounding only (about 1e-6 of the logits), in bfloat16 by bfloat16 rounding.

:func:`export_head_adapters` writes one PEFT-format adapter folder per configuration (loadable by
``peft.PeftModel.from_pretrained`` or a serving engine's multi-LoRA support) and the plain base
model the adapters apply to; :func:`adapter_path` finds an adapter again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError, SetupError
from sprint_lab.core.gate import check_head
from sprint_lab.core.heads import (
    Head,
    as_heads,
    config_label,
    is_baseline,
    is_placebo,
    parse_config,
)
from sprint_lab.core.model import LabModel, resolve_dtype, resolve_source

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "BASE_FOLDER",
    "MANIFEST",
    "adapter_name",
    "adapter_path",
    "export_head_adapters",
    "head_adapter_weights",
    "hf_state_dict",
    "save_base_model",
]

BASE_FOLDER = "base"
"""The folder under ``out_dir`` that holds the plain base model."""

ADAPTER_CONFIG = "adapter_config.json"
"""PEFT's adapter configuration file."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
"""PEFT's adapter weights file."""

MANIFEST = "adapters.json"
"""The file under ``out_dir`` that maps each configuration label to its adapter folder."""

NAME_SEPARATOR = "_"
"""Joins head labels in a folder name (``"L3H5_L7H2"``): ``+`` is awkward in URLs and shells."""

MAX_NAME_CHARS = 96
"""Longer folder names are shortened to the first head, a count and a hash of the label."""

BRIDGE_WRAPPER = "._original_component"
"""The path segment TransformerLens inserts where a bridge component wraps a Hugging Face one."""

_O_PROJ = re.compile(
    r"^(?P<module>(?:.*\.)?(?P<layers>[A-Za-z_]+)\.(?P<layer>\d+)\.self_attn\.o_proj)\.weight$"
)

_DTYPES = {"n_heads": "int64", "rank": "int64"}
"""Listing columns that are not Python objects (``None`` stays ``None`` in ``name``/``path``)."""

Config = str | Head | tuple[int, int] | Iterable[Head | str | tuple[int, int]] | None
"""One configuration: a label (``"L3H5"``, ``"L3H5+L7H2"``, ``"none"``), a head, or heads."""


@no_type_check  # reads configurations of any type; unreadable ones -> InputError
def adapter_name(config: Config) -> str:
    """The filesystem-safe folder name of a configuration's adapter.

    Head labels are joined by ``_``; a name longer than :data:`MAX_NAME_CHARS` becomes the first
    head, the number of the others and a hash of the whole label. Order matters, as in
    :func:`~sprint_lab.core.heads.config_label`.

    Raises:
        InputError: ``config`` is the baseline (it needs no adapter) or not readable.

    Example:
        >>> adapter_name("L3H5"), adapter_name(["L3H5", "L7H2"]), adapter_name("L3H5+L7H2")
        ('L3H5', 'L3H5_L7H2', 'L3H5_L7H2')
        >>> adapter_name([f"L0H{h}" for h in range(40)])
        'L0H0_and_39_more_...'
    """
    heads = _config_heads(config, where="adapter_name")
    if not heads:
        raise InputError(
            f"configuration {config!r} is the unpruned baseline: it needs no adapter; "
            f"serve the base model (the {BASE_FOLDER!r} folder of an export) for it"
        )
    name = NAME_SEPARATOR.join(head.label for head in heads)
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha1(config_label(heads).encode()).hexdigest()[:10]
    return f"{heads[0].label}{NAME_SEPARATOR}and{NAME_SEPARATOR}{len(heads) - 1}_more_{digest}"


@no_type_check  # reads paths and configurations of any type; bad ones -> InputError naming them
def adapter_path(out_dir: str | Path, config: Config) -> Path:
    """The adapter folder of ``config`` in an export made by :func:`export_head_adapters`.

    Args:
        out_dir: the ``out_dir`` given to :func:`export_head_adapters`.
        config: a label (``"L3H5"``, ``"L3H5+L7H2"``), a ``Head`` or a list of heads.

    Returns:
        ``out_dir / adapter_name(config)``, which holds ``adapter_config.json``.

    Raises:
        InputError: ``config`` is the baseline (load ``out_dir / "base"`` with no adapter), or
            the export holds no adapter for it.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "adapters"
        >>> _ = export_head_adapters(model, ["L1H2"], out, base=False)
        >>> adapter_path(out, "L1H2").name
        'L1H2'
        >>> adapter_path(out, "L0H0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: no adapter for L0H0 in ...: ... is missing; ...
    """
    path = Path(out_dir) / adapter_name(config)
    if not (path / ADAPTER_CONFIG).is_file():
        label = config_label(_config_heads(config, where="adapter_path"))
        raise InputError(
            f"no adapter for {label} in {out_dir}: {path / ADAPTER_CONFIG} is missing; "
            f"export it with export_head_adapters(model, [{label!r}], {str(out_dir)!r}, "
            "overwrite=True)"
        )
    return path


def hf_state_dict(model: LabModel) -> dict[str, Tensor]:
    """The Hugging Face model's weights under their own names, without the bridge's wrappers.

    The TransformerLens bridge swaps its components into ``model.hf_model``, so that module's own
    ``state_dict`` names each weight several times (``model.layers.0._original_component...``,
    aliases such as ``model.layers.0.attn...``) and holds extras (a zero ``lm_head.bias``). This
    returns exactly the keys a fresh model of the same class has, sharing the live tensors.

    Raises:
        SetupError: a weight of the fresh model has no counterpart under the bridge (a
            TransformerLens version that renames differently).

    Example:
        >>> weights = hf_state_dict(model)
        >>> weights["model.layers.1.self_attn.o_proj.weight"].shape
        torch.Size([64, 64])
    """
    stripped: dict[str, Tensor] = {}
    for key, value in model.hf_model.state_dict().items():
        stripped.setdefault(key.replace(BRIDGE_WRAPPER, ""), value)
    wanted = list(_skeleton(model).state_dict())
    missing = [key for key in wanted if key not in stripped]
    if missing:
        raise SetupError(
            f"{model.name}: {len(missing)} weight(s) of {type(model.hf_model).__name__} are not "
            f"found under the TransformerLens bridge (first: {missing[0]}); this transformer-lens "
            "version wraps modules differently, so the base model cannot be exported"
        )
    return {key: stripped[key] for key in wanted}


def save_base_model(
    model: LabModel, folder: str | Path, *, dtype: str | torch.dtype | None = None
) -> Path:
    """Save the plain base model (weights, config, generation config, tokenizer) to ``folder``.

    The folder loads with ``AutoModelForCausalLM.from_pretrained`` and in any serving engine;
    for the embedded model it holds the de-quantised weights sprint_lab caches.

    Args:
        model: the :class:`~sprint_lab.core.model.LabModel` to save.
        folder: where to write (created if missing; files in it are replaced).
        dtype: the weights' dtype; default float32, whatever the model runs in.

    Returns:
        The folder.

    Example:
        >>> import tempfile
        >>> folder = save_base_model(model, Path(tempfile.mkdtemp()) / "base")
        >>> sorted(p.name for p in folder.iterdir() if p.suffix in {".json", ".safetensors"})[:3]
        ['config.json', 'generation_config.json', 'model.safetensors']
    """
    target = _export_dtype(dtype)
    weights = {key: value.detach().to("cpu", target) for key, value in hf_state_dict(model).items()}
    fresh = _skeleton(model)
    fresh.load_state_dict(weights, strict=True, assign=True)
    if getattr(fresh.config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.config.dtype = target
    generation_config = getattr(model.hf_model, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = copy.deepcopy(generation_config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))
    return folder


@no_type_check  # validates the heads itself (InputError naming them)
def head_adapter_weights(
    model: LabModel, heads: Iterable[Head | str | tuple[int, int]], *, dtype: Any = None
) -> tuple[dict[str, Tensor], int]:
    """The LoRA tensors that zero ``heads`` and the adapter's rank (see the module docstring).

    Args:
        model: the model the adapter is for.
        heads: the heads to ablate (any layers; each at most once).
        dtype: the tensors' dtype; default float32.

    Returns:
        ``(tensors, rank)``: PEFT's keys
        (``base_model.model.<o_proj module>.lora_A.weight`` / ``lora_B.weight``) for each
        layer of ``heads``, and ``rank = d_head * max(heads per layer)``.

    Raises:
        InputError: no heads, a head the model lacks, a head given twice, or a model whose
            attention has no ``self_attn.o_proj`` of width ``n_heads * d_head``.

    Example:
        >>> tensors, rank = head_adapter_weights(model, ["L1H2"])
        >>> rank, sorted(k.split("layers.")[1] for k in tensors)
        (16, ['1.self_attn.o_proj.lora_A.weight', '1.self_attn.o_proj.lora_B.weight'])
    """
    chosen = _checked_heads(model, as_heads(heads), where="head_adapter_weights")
    if not chosen:
        raise InputError("head_adapter_weights needs at least one head; the baseline needs none")
    weights = hf_state_dict(model)
    return _lora_tensors(
        model, weights, _o_proj_modules(model, weights), chosen, _export_dtype(dtype)
    )


@no_type_check  # validates the configurations, the folder and the dtype itself (InputError)
def export_head_adapters(
    model: LabModel,
    configs: Iterable[Config] | str | Head,
    out_dir: str | Path,
    *,
    base: bool = True,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write one PEFT LoRA adapter per configuration that ablates its heads, plus the base model.

    Each adapter folder ``out_dir/<name>/`` (:func:`adapter_name`: ``"L3H5"``, ``"L3H5_L7H2"``)
    holds ``adapter_config.json`` (LoRA on ``o_proj`` of the configuration's layers only,
    ``r = lora_alpha = d_head * max heads per layer``, no dropout, no bias) and
    ``adapter_model.safetensors``. ``out_dir/adapters.json`` maps each label to its folder.
    The baseline (``"none"``, a placebo ``"none~1"``, or ``None``) gets no adapter: its row
    points at the base model.

    Args:
        model: a :class:`~sprint_lab.core.model.LabModel` (Llama, Qwen2, Mistral, ...: any
            model whose layers have ``self_attn.o_proj``; GQA works, ``o_proj`` always takes
            ``n_heads * d_head`` inputs).
        configs: configurations, each a label (``"L3H5"``, ``"L3H5+L7H2"``), a ``Head``, a
            ``(layer, head)`` pair, or a list of heads (possibly spanning layers). A single
            label or ``Head`` is one configuration.
        out_dir: the export folder; it must be missing or empty unless ``overwrite``.
        base: also write the plain base model to ``out_dir/base`` (what the engine loads);
            without it, the adapters name the model's own source folder as their base.
        dtype: dtype of the base weights and the adapters; default float32.
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced; other
            files stay).

    Returns:
        One row per configuration: ``config`` (the label), ``name`` (the folder, ``None`` for
        the baseline), ``path`` (the adapter folder, ``None`` for the baseline), ``base`` (the
        base model folder or source), ``layers``, ``n_heads``, ``rank``.

    Raises:
        InputError: an unreadable or empty configuration, a head or layer the model lacks, a
            head repeated in a configuration, a configuration given twice, a non-empty
            ``out_dir`` without ``overwrite``, an unknown dtype, or a model without ``o_proj``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "adapters"
        >>> listing = export_head_adapters(model, ["L1H2", ["L0H1", "L0H3", "L2H0"], "none"], out)
        >>> listing[["config", "name", "layers", "rank"]]
                   config            name  layers  rank
        0            L1H2            L1H2     [1]    16
        1  L0H1+L0H3+L2H0  L0H1_L0H3_L2H0  [0, 2]    32
        2            none            None      []     0
        >>> json.loads((out / "L1H2" / "adapter_config.json").read_text())["layers_to_transform"]
        [1]
    """
    target = _export_dtype(dtype)
    parsed = _parse_configs(model, configs)
    out_dir = _prepare_out_dir(out_dir, overwrite)
    weights = hf_state_dict(model)
    modules = _o_proj_modules(model, weights)  # fails on an unsupported model before any write
    pattern = _layers_pattern(modules)
    base_dir = out_dir / BASE_FOLDER
    if base:
        save_base_model(model, base_dir, dtype=target)
        base_ref = str(base_dir.resolve())
    else:
        base_ref = _source_location(model)
    rows = []
    for label, heads in parsed:
        if not heads:
            rows.append(_row(label, None, None, base_ref, [], 0))
            continue
        tensors, rank = _lora_tensors(model, weights, modules, heads, target)
        folder = out_dir / adapter_name(heads)
        layers = sorted({head.layer for head in heads})
        _write_adapter(folder, tensors, rank, layers, base_ref, pattern)
        rows.append(_row(label, folder.name, str(folder), base_ref, layers, len(heads), rank))
    manifest = {
        "model": model.name,
        "base": base_ref,
        "dtype": str(target).removeprefix("torch."),
        "d_head": model.d_head,
        "adapters": {row["config"]: row["name"] for row in rows},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    columns = ["config", "name", "path", "base", "layers", "n_heads", "rank"]
    return pd.DataFrame(
        {
            column: pd.Series([row[column] for row in rows], dtype=_DTYPES.get(column, object))
            for column in columns
        }
    )


def _row(
    label: str,
    name: str | None,
    path: str | None,
    base: str,
    layers: list[int],
    n_heads: int,
    rank: int = 0,
) -> dict[str, Any]:
    return {
        "config": label,
        "name": name,
        "path": path,
        "base": base,
        "layers": layers,
        "n_heads": n_heads,
        "rank": rank,
    }


def _export_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """float32 by default (not the loader's bfloat16): engines load the export as it is."""
    return torch.float32 if dtype is None else resolve_dtype(dtype)


def _skeleton(model: LabModel) -> Any:
    """A weightless (meta-device) model of ``model.hf_model``'s class and config."""
    with torch.device("meta"):
        return type(model.hf_model)(copy.deepcopy(model.hf_model.config))


@no_type_check  # reads one configuration of any type; unreadable -> InputError
def _config_heads(config: Config, *, where: str) -> tuple[Head, ...]:
    """The heads of one configuration, unchecked against a model (``()`` for the baseline)."""
    try:
        if config is None:
            return ()
        if isinstance(config, Head):
            return (config,)
        if isinstance(config, str):
            return parse_config(config)
        if isinstance(config, tuple) and len(config) == 2 and all(type(x) is int for x in config):
            return tuple(as_heads([config]))
        if isinstance(config, Iterable):
            heads = tuple(as_heads(config))
            if not heads:
                raise ValueError("it lists no heads (use 'none' for the unpruned baseline)")
            return heads
    except ValueError as error:
        raise InputError(f"{where}: cannot read configuration {config!r}: {error}") from error
    raise InputError(
        f"{where}: cannot read configuration {config!r}; give a label such as 'L3H5' or "
        "'L3H5+L7H2', a Head, or a list of heads"
    )


def _checked_heads(model: LabModel, heads: Iterable[Head], *, where: str) -> tuple[Head, ...]:
    """``heads`` after checking each exists in ``model`` and none repeats."""
    heads = tuple(heads)
    label = config_label(heads)
    for head in heads:
        try:
            check_head(model, head)
        except ValueError as error:
            raise InputError(f"{where}: configuration {label}: {error}") from error
    repeated = sorted({head.label for head in heads if heads.count(head) > 1})
    if repeated:
        raise InputError(f"{where}: configuration {label} lists {', '.join(repeated)} twice")
    return heads


@no_type_check  # reads a user's list of configurations; bad items -> InputError
def _parse_configs(model: LabModel, configs: Any) -> list[tuple[str, tuple[Head, ...]]]:
    """``(label, heads)`` per configuration, checked against ``model``; baselines have no heads."""
    if isinstance(configs, str | Head):
        configs = [configs]
    if not isinstance(configs, Iterable):
        raise InputError(f"export_head_adapters: configs must be a list, got {configs!r}")
    parsed, seen = [], {}
    for index, config in enumerate(configs):
        where = f"export_head_adapters: configs[{index}]"
        if isinstance(config, str) and (is_baseline(config) or is_placebo(config)):
            label, heads = config.strip(), ()
        else:
            heads = _checked_heads(model, _config_heads(config, where=where), where=where)
            label = config_label(heads)
        key = frozenset(heads) if heads else label
        if key in seen:
            raise InputError(f"{where}: {label} repeats configs[{seen[key]}]; list it once")
        seen[key] = index
        parsed.append((label, heads))
    if not parsed:
        raise InputError("export_head_adapters: configs is empty; give at least one configuration")
    return parsed


def _prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"export folder {out_dir} is a file; give a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            f"export folder {out_dir} is not empty; choose another folder or pass overwrite=True"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _source_location(model: LabModel) -> str:
    """What the model was loaded from, as ``from_pretrained`` takes it (an absolute folder)."""
    location = resolve_source(model.name)[0]
    path = Path(location)
    return str(path.resolve()) if path.exists() else location


def _o_proj_modules(model: LabModel, weights: dict[str, Tensor]) -> dict[int, str]:
    """Layer -> module path of its ``self_attn.o_proj`` (``model.layers.3.self_attn.o_proj``)."""
    modules = {}
    for key in weights:
        match = _O_PROJ.match(key)
        if match is not None:
            modules[int(match.group("layer"))] = match.group("module")
    if sorted(modules) != list(range(model.n_layers)):
        raise InputError(
            f"{model.name}: found self_attn.o_proj weights for layers {sorted(modules)} of "
            f"0..{model.n_layers - 1}; head adapters need every layer's attention output "
            "projection named self_attn.o_proj (Llama, Qwen2, Mistral and similar models)"
        )
    width = model.n_heads * model.d_head
    for layer, module in modules.items():
        shape = tuple(weights[f"{module}.weight"].shape)
        if shape[1] != width:
            raise InputError(
                f"{model.name}: {module}.weight has shape {shape}, expected [d_model, "
                f"n_heads * d_head = {width}]; cannot map L{layer}H* to its input slices"
            )
    return modules


def _layers_pattern(modules: dict[int, str]) -> str:
    """The name of the layer list in module paths (``"layers"``), for PEFT's layer matching."""
    match = _O_PROJ.match(f"{modules[0]}.weight")
    assert match is not None  # _o_proj_modules matched it
    return match.group("layers")


def _lora_tensors(
    model: LabModel,
    weights: dict[str, Tensor],
    modules: dict[int, str],
    heads: tuple[Head, ...],
    dtype: torch.dtype,
) -> tuple[dict[str, Tensor], int]:
    """``lora_A = I[slices]``, ``lora_B = -W_O[:, slices]`` per layer, zero-padded to one rank."""
    d_head = model.d_head
    by_layer: dict[int, list[int]] = {}
    for head in heads:
        by_layer.setdefault(head.layer, []).append(head.head)
    rank = d_head * max(len(chosen) for chosen in by_layer.values())
    tensors = {}
    for layer, chosen in sorted(by_layer.items()):
        w_o = weights[f"{modules[layer]}.weight"].detach().to("cpu", torch.float32)
        lora_a = torch.zeros(rank, w_o.shape[1])
        lora_b = torch.zeros(w_o.shape[0], rank)
        for slot, head in enumerate(sorted(chosen)):
            rows = slice(slot * d_head, (slot + 1) * d_head)
            inputs = slice(head * d_head, (head + 1) * d_head)
            lora_a[rows, inputs] = torch.eye(d_head)
            lora_b[:, rows] = -w_o[:, inputs]
        prefix = f"base_model.model.{modules[layer]}"
        tensors[f"{prefix}.lora_A.weight"] = lora_a.to(dtype).contiguous()
        tensors[f"{prefix}.lora_B.weight"] = lora_b.to(dtype).contiguous()
    return tensors, rank


def _write_adapter(
    folder: Path,
    tensors: dict[str, Tensor],
    rank: int,
    layers: list[int],
    base: str,
    layers_pattern: str,
) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` as PEFT saves them."""
    from safetensors.torch import save_file

    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": ["o_proj"],
        "layers_to_transform": layers,
        "layers_pattern": layers_pattern,
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
