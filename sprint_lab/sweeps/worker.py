"""The Ray side of a sweep: what one actor runs, and how the driver joins a cluster.

A :class:`ShardWorker` loads the model once (from the driver's resolved local folder when the
node has it, :func:`model_sources`) and answers shards of work items with the local runner's
batched, gated generation (:class:`~sprint_lab.sweeps.batch.BatchRunner`). Ray wraps it as an
actor; it also runs in-process, so nothing here imports ``ray`` at module import time.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sprint_lab.sweeps.batch import BatchRunner, WorkItem

if TYPE_CHECKING:
    from sprint_lab.core.model import LabModel
    from sprint_lab.tasks.problems import Problem

#: Environment variables handed to every actor (the model cache and the hub's offline switches).
FORWARDED_ENV = (
    "SPRINT_LAB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "XDG_CACHE_HOME",
)


class ShardWorker:
    """Loads the model once and runs shards with :class:`~sprint_lab.sweeps.batch.BatchRunner`.

    Ray wraps this class as an actor; it also runs in-process (handy for debugging).

    Args:
        sources: model sources to try in order (the first that exists on this node wins; the
            last is always tried), e.g. ``["/abs/cached/dir", "smollm2-135m"]``.
        dtype: ``"float32"``, ``"bfloat16"``, ...
        problems: the sweep's questions (``WorkItem.question_index`` indexes them).
        prompt, max_new_tokens, grade_mode: as in :func:`~sprint_lab.sweeps.run.sweep`.
        threads: torch intra-op threads for this worker.
        device: ``None`` for CUDA when this worker sees a GPU, else CPU.
        deterministic: batch-invariant generation.
        strategy: ``"verify"`` or ``"decode"`` (see :class:`~sprint_lab.sweeps.batch.BatchRunner`).
        reference, resample_seed: the driver's reference means and resample seed (see
            :class:`~sprint_lab.sweeps.executor.SweepJob`).

    Example:
        >>> worker = ShardWorker(model_sources(model), "float32", problems, max_new_tokens=2)
        >>> out = worker.run(0, [WorkItem("none", 0)])
        >>> len(out["rows"]), out["prefills"]
        (1, 1)
    """

    def __init__(
        self,
        sources: Sequence[str],
        dtype: str,
        problems: Sequence[Problem],
        prompt: Any = "fewshot_cot",
        max_new_tokens: int = 256,
        grade_mode: str = "flexible",
        threads: int = 1,
        device: str | None = None,
        deterministic: bool = False,
        strategy: str = "decode",
        reference: Any = None,
        resample_seed: int = 0,
    ) -> None:
        import torch

        from sprint_lab.core.model import load_model

        started = time.perf_counter()
        torch.set_num_threads(int(threads))
        source = next((s for s in sources[:-1] if Path(s).exists()), sources[-1])
        self.model = load_model(source, dtype=dtype, device=device)
        self.runner = BatchRunner(
            self.model, problems, prompt=prompt, max_new_tokens=max_new_tokens,
            grade_mode=grade_mode, deterministic=deterministic, strategy=strategy,
            reference=reference, resample_seed=resample_seed,
        )  # fmt: skip
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "load_s": time.perf_counter() - started,
        }

    def ready(self) -> dict[str, Any]:
        """Where the worker runs and how long loading took (returns once loaded)."""
        return dict(self.info)

    def run(self, shard_index: int, items: Sequence[WorkItem]) -> dict[str, Any]:
        """Generate and grade one shard.

        Returns:
            ``{"shard", "rows", "seconds", "pid", "prefills"}``; ``prefills`` counts the prefix
            caches this worker has computed so far (prefix-cache misses).
        """
        started = time.perf_counter()
        rows = self.runner.run(list(items))
        return {
            "shard": shard_index,
            "rows": rows,
            "seconds": time.perf_counter() - started,
            "pid": os.getpid(),
            "prefills": self.runner.prefix_cache.misses,
        }


def ensure_ray(address: str | None = None) -> bool:
    """Connect to Ray: reuse an initialised one, else join ``address`` or start a local one.

    A local instance starts without the dashboard and without usage stats. Returns ``True``
    when this call initialised Ray (it is left running for later sweeps in this process).

    Starting Ray takes seconds and spawns processes, so the example is not run here.

    Example:
        >>> ensure_ray()                               # doctest: +SKIP
        True
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def model_sources(model: LabModel) -> list[str]:
    """Where actors load the model from: the driver's resolved local folder, then ``name``.

    Example:
        >>> Path(model_sources(model)[0]).is_dir()
        True
    """
    name = str(model.name)
    sources = []
    resolved = getattr(getattr(model.hf_model, "config", None), "_name_or_path", None)
    if resolved and Path(resolved).is_dir():
        sources.append(str(Path(resolved).resolve()))
    path = Path(name).expanduser()
    sources.append(str(path.resolve()) if path.exists() else name)
    return sources
