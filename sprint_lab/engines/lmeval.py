"""A peer check of head ablation: lm-evaluation-harness on the exported LoRA adapters.

sprint_lab ablates a head with its own gate (:mod:`sprint_lab.core.gate`) and generates with its
own decoder. lm-evaluation-harness (lm-eval) knows neither: it loads a plain Hugging Face model
and, with ``peft=``, a PEFT adapter. :func:`~sprint_lab.engines.lora.export_head_adapters` writes
the base model and one adapter per head that zeroes exactly that head's slice of the ``o_proj``
input, so lm-eval's greedy ``gsm8k_cot`` completions under an adapter must equal sprint_lab's
``fewshot_cot`` completions under ``ablate(model, [head])``, character for character, and so must
the two tools' verdicts. Any difference points at the gate, the adapter, the prompt, the stopping
rule or the grader.

lm-eval has its own dependency pins, so it lives in a separate virtual environment
(``.ci/lmeval_env.sh`` creates ``.venvs/lmeval``; ``SPRINT_LAB_LMEVAL_VENV`` points elsewhere) and
runs as an ``lm_eval`` subprocess. Nothing here imports ``lm_eval``. With no Hugging Face hub,
the task is lm-eval's own ``gsm8k_cot`` YAML (``include``-d from the installed package, so its
prompt, exemplars, ``until`` strings and filters are lm-eval's) with the dataset replaced by a
local JSON Lines copy of the GSM8K test split (:func:`write_local_gsm8k_cot_task`).

The pieces: :func:`lmeval_venv` / :func:`lmeval_executable` find the environment,
:func:`run_lmeval` runs one configuration (base model, or base plus one adapter) and returns the
samples file, :func:`read_samples` reads it as :class:`LmevalSample` rows,
:func:`sprint_lab_completions` generates the same prompts with sprint_lab, and
:func:`compare_samples` counts agreements and describes each mismatch by its first differing
character.

Example:
    >>> first_difference("The answer is 18.", "The answer is 16.")
    15
    >>> first_difference("same", "same") is None
    True
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sprint_lab.core.boundary import no_type_check
from sprint_lab.core.errors import InputError, SetupError

__all__ = [
    "FILTER_MODES",
    "LMEVAL_VENV_ENV",
    "LOCAL_TASK",
    "Agreement",
    "LmevalSample",
    "compare_samples",
    "first_difference",
    "installed_task_yaml",
    "lmeval_command",
    "lmeval_executable",
    "lmeval_venv",
    "peer_check",
    "read_questions",
    "read_samples",
    "run_lmeval",
    "sprint_lab_completions",
    "write_local_gsm8k_cot_task",
]

LMEVAL_VENV_ENV = "SPRINT_LAB_LMEVAL_VENV"
"""Environment variable naming the lm-eval virtual environment (default: :data:`DEFAULT_VENV`)."""

DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venvs" / "lmeval"
"""Where ``.ci/lmeval_env.sh`` puts the environment in a source checkout."""

BASE_TASK = "gsm8k_cot"
"""The lm-eval task the local one copies (``lm_eval/tasks/gsm8k/gsm8k-cot.yaml``, version 3.0)."""

BASE_TASK_FILE = "gsm8k-cot.yaml"

LOCAL_TASK = "gsm8k_cot_local"
"""Name of the generated task: ``gsm8k_cot`` reading a local GSM8K ``test.jsonl``."""

FILTER_MODES = {"strict-match": "strict", "flexible-extract": "flexible"}
"""lm-eval ``gsm8k_cot`` filter name -> the sprint_lab grading mode with the same regex."""

OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Set for the lm-eval process, so that nothing reaches for the Hugging Face hub."""

SNIPPET_CHARS = 40
"""Characters shown on each side of a first difference."""


@dataclass(frozen=True)
class LmevalSample:
    """One question of an lm-eval samples file (all filters of one ``doc_id`` merged).

    Attributes:
        doc_id: the question's index in the test split (file order).
        question: ``doc["question"]``, as lm-eval read it.
        target: lm-eval's gold answer (``answer.split('####')[-1].strip()``).
        prompt: the context lm-eval generated from (8 exemplars and the question).
        completion: the generated text (``resps``), cut at the first ``until`` string.
        extracted: filter name -> the filtered answer (``filtered_resps``).
        correct: filter name -> lm-eval's ``exact_match`` verdict.
    """

    doc_id: int
    question: str
    target: str
    prompt: str
    completion: str
    extracted: dict[str, str] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    """How far sprint_lab and lm-eval agree on one configuration.

    Attributes:
        config: the configuration label (``"L5H2"``, ``"none"``).
        n: questions compared.
        prompts: questions whose prompt text is identical.
        completions: questions whose completion text is identical.
        verdicts: filter name -> questions where the two verdicts agree (each tool grading its
            own completion; sprint_lab with the mode of :data:`FILTER_MODES`).
        mismatches: one line per difference (question, what differs, first differing character).
        texts: sprint_lab's completions, in question order.
    """

    config: str
    n: int
    prompts: int
    completions: int
    verdicts: dict[str, int]
    mismatches: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def all_verdicts(self) -> int:
        """Questions where every filter's verdicts agree."""
        return min(self.verdicts.values(), default=self.n)


def first_difference(a: str, b: str) -> int | None:
    """The index of the first character where ``a`` and ``b`` differ (``None`` if equal).

    A string that is a proper prefix of the other differs at its own length.

    Example:
        >>> first_difference("abc", "abd"), first_difference("ab", "abc")
        (2, 2)
    """
    if a == b:
        return None
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def lmeval_venv(venv: str | os.PathLike[str] | None = None) -> Path:
    """The lm-eval virtual environment: ``venv``, else ``$SPRINT_LAB_LMEVAL_VENV``, else default.

    The default is ``.venvs/lmeval`` in the source checkout (:data:`DEFAULT_VENV`).

    Example:
        >>> lmeval_venv("/opt/lmeval")
        PosixPath('/opt/lmeval')
    """
    chosen = venv if venv is not None else os.environ.get(LMEVAL_VENV_ENV) or DEFAULT_VENV
    return Path(chosen).expanduser()


def lmeval_executable(venv: str | os.PathLike[str] | None = None) -> Path:
    """The ``lm_eval`` command of the environment (see :func:`lmeval_venv`).

    Raises:
        SetupError: the environment has no ``bin/lm_eval``; the message says how to create it.
    """
    folder = lmeval_venv(venv)
    executable = folder / "bin" / "lm_eval"
    if not executable.is_file():
        raise SetupError(
            f"lm-evaluation-harness is not installed at {folder} ({executable} is missing); "
            f"create it with `bash .ci/lmeval_env.sh` (set {LMEVAL_VENV_ENV} to use another "
            "location)"
        )
    return executable


def installed_task_yaml(venv: str | os.PathLike[str] | None = None) -> Path:
    """lm-eval's own ``gsm8k-cot.yaml`` inside the environment's site-packages.

    Raises:
        SetupError: the environment has no ``lm_eval/tasks/gsm8k/gsm8k-cot.yaml``.
    """
    folder = lmeval_venv(venv)
    found = sorted(folder.glob(f"lib/python*/site-packages/lm_eval/tasks/gsm8k/{BASE_TASK_FILE}"))
    if not found:
        raise SetupError(
            f"no lm_eval/tasks/gsm8k/{BASE_TASK_FILE} under {folder}/lib; the lm-eval "
            "environment is incomplete: re-create it with `bash .ci/lmeval_env.sh`"
        )
    return found[0]


def write_local_gsm8k_cot_task(
    folder: str | os.PathLike[str],
    data_file: str | os.PathLike[str],
    base_yaml: str | os.PathLike[str],
) -> Path:
    """Write a task YAML that is lm-eval's ``gsm8k_cot`` reading a local GSM8K test file.

    The YAML ``include``-s ``base_yaml`` (so prompt, exemplars, ``until`` and filters stay
    lm-eval's) and overrides only the task name and the dataset: ``dataset_path: json`` with
    ``data_files: {test: data_file}``. Pass ``folder`` to ``lm_eval --include_path``.

    Args:
        folder: where to write ``gsm8k_cot_local.yaml`` (created if missing).
        data_file: GSM8K ``test.jsonl`` (``question`` and ``answer`` per line).
        base_yaml: lm-eval's ``gsm8k-cot.yaml`` (:func:`installed_task_yaml`).

    Returns:
        The YAML file.

    Raises:
        InputError: ``data_file`` or ``base_yaml`` is not a file.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> _ = (tmp / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\\n')
        >>> _ = (tmp / "gsm8k-cot.yaml").write_text("task: gsm8k_cot\\n")
        >>> task = write_local_gsm8k_cot_task(
        ...     tmp / "tasks", tmp / "test.jsonl", tmp / "gsm8k-cot.yaml"
        ... )
        >>> print(task.read_text().splitlines()[1])
        task: gsm8k_cot_local
    """
    data_file, base_yaml = Path(data_file).resolve(), Path(base_yaml).resolve()
    for path, what in ((data_file, "GSM8K test file"), (base_yaml, "lm-eval task YAML")):
        if not path.is_file():
            raise InputError(f"{what} {path} does not exist")
    lines = [
        f"include: {json.dumps(str(base_yaml))}",
        f"task: {LOCAL_TASK}",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "test_split: test",
    ]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = folder / f"{LOCAL_TASK}.yaml"
    task.write_text("\n".join(lines) + "\n")
    return task


def lmeval_command(
    executable: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None,
    task_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    limit: int,
    max_gen_toks: int = 256,
    attn_implementation: str | None = "eager",
) -> list[str]:
    """The ``lm_eval`` command line for one configuration (greedy, float32, batch size 1).

    Args:
        executable: the ``lm_eval`` command (:func:`lmeval_executable`).
        base: the exported base model folder.
        adapter: the configuration's adapter folder; ``None`` for the baseline.
        task_dir: the folder of :func:`write_local_gsm8k_cot_task`.
        output_dir: where lm-eval writes results and samples.
        limit: the first ``limit`` questions.
        max_gen_toks: lm-eval's generation limit (passed as ``--gen_kwargs``; HFLM's default
            is 256).
        attn_implementation: passed to ``from_pretrained`` (``"eager"`` is the kernel
            sprint_lab's TransformerLens model runs; ``None`` leaves transformers' default).

    Example:
        >>> lmeval_command("lm_eval", base="b", adapter="a", task_dir="t", output_dir="o",
        ...                limit=5)[4]
        'pretrained=b,dtype=float32,attn_implementation=eager,peft=a'
    """
    model_args = f"pretrained={base},dtype=float32"
    if attn_implementation:
        model_args += f",attn_implementation={attn_implementation}"
    if adapter is not None:
        model_args += f",peft={adapter}"
    return [
        str(executable),
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        LOCAL_TASK,
        "--include_path",
        str(task_dir),
        "--limit",
        str(limit),
        "--batch_size",
        "1",
        "--device",
        "cpu",
        "--gen_kwargs",
        f"max_gen_toks={max_gen_toks}",
        "--log_samples",
        "--output_path",
        str(output_dir),
    ]


def run_lmeval(
    command: Sequence[str], output_dir: str | os.PathLike[str], *, timeout_s: float
) -> Path:
    """Run an :func:`lmeval_command` offline and return the samples file it wrote.

    Raises:
        SetupError: lm-eval failed, ran past ``timeout_s`` or wrote no samples file; the message
            holds the end of its output.
    """
    env = {**os.environ, **OFFLINE_ENV, "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(
            list(command), env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise SetupError(f"lm-eval ran past {timeout_s:.0f} s: {' '.join(command)}") from error
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SetupError(f"lm-eval exited with {done.returncode}: {' '.join(command)}\n{tail}")
    found = sorted(Path(output_dir).rglob(f"samples_{LOCAL_TASK}_*.jsonl"), key=os.path.getmtime)
    if not found:
        raise SetupError(f"lm-eval wrote no samples_{LOCAL_TASK}_*.jsonl under {output_dir}")
    return found[-1]


def _first(value: Any) -> Any:
    """Unwrap lm-eval's nested lists (``resps`` is ``[[text]]``, ``filtered_resps`` ``[text]``)."""
    while isinstance(value, list):
        value = value[0] if value else ""
    return value


def _context(arguments: Any) -> str:
    """The prompt of a sample's ``arguments``: ``{"gen_args_0": {"arg_0": context, ...}}``."""
    if isinstance(arguments, dict):
        first = next(iter(arguments.values()), "")
        return str(first["arg_0"] if isinstance(first, dict) else _first(first))
    return str(_first(arguments))


def read_samples(path: str | os.PathLike[str]) -> list[LmevalSample]:
    """Read an lm-eval samples file: one :class:`LmevalSample` per question, by ``doc_id``.

    lm-eval writes one line per (question, filter); the lines of a question share ``resps`` and
    differ in ``filter``, ``filtered_resps`` and ``exact_match``.

    Raises:
        InputError: a line is not JSON or lacks a field lm-eval writes (naming file and line).
    """
    merged: dict[int, dict[str, Any]] = {}
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            doc_id = int(row["doc_id"])
            entry = merged.setdefault(
                doc_id,
                {
                    "doc_id": doc_id,
                    "question": row["doc"]["question"],
                    "target": str(row["target"]),
                    "prompt": _context(row["arguments"]),
                    "completion": str(_first(row["resps"])),
                    "extracted": {},
                    "correct": {},
                },
            )
            entry["extracted"][row["filter"]] = str(_first(row["filtered_resps"]))
            entry["correct"][row["filter"]] = bool(row["exact_match"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"{path}, line {number}: not an lm-eval sample ({error!r})") from error
    return [LmevalSample(**merged[doc_id]) for doc_id in sorted(merged)]


def sprint_lab_completions(
    model: Any, questions: Sequence[str], heads: Sequence[str], *, max_new_tokens: int
) -> list[tuple[str, str]]:
    """sprint_lab's greedy ``fewshot_cot`` prompts and completions, ``heads`` ablated.

    The same call as a sweep's: ``generate(model, [template.parts(q)], max_new_tokens=...,
    stop=template.stop)`` inside ``ablate(model, heads)`` (no ablation for ``[]``).

    Returns:
        ``(prompt text, completion text)`` per question.
    """
    from sprint_lab.core.gate import ablate
    from sprint_lab.generation.generator import generate
    from sprint_lab.tasks.prompts import get_template

    template = get_template("fewshot_cot")
    parts = [template.parts(question, model.tokenizer) for question in questions]
    with ablate(model, list(heads)):
        done = generate(model, parts, max_new_tokens=max_new_tokens, stop=template.stop)
    return [
        (prefix + suffix, answer.text) for (prefix, suffix), answer in zip(parts, done, strict=True)
    ]


def _describe(doc_id: int, what: str, lmeval: str, ours: str) -> str:
    at = first_difference(lmeval, ours)
    if at is None:
        return f"q{doc_id} {what}: equal"
    start = max(0, at - SNIPPET_CHARS)
    return (
        f"q{doc_id} {what} differs at char {at}: "
        f"lm-eval {lmeval[start : at + SNIPPET_CHARS]!r} vs "
        f"sprint_lab {ours[start : at + SNIPPET_CHARS]!r}"
    )


def compare_samples(
    config: str, samples: Sequence[LmevalSample], ours: Sequence[tuple[str, str]]
) -> Agreement:
    """Compare lm-eval's samples with sprint_lab's ``(prompt, completion)`` for the same questions.

    sprint_lab grades its own completion with :func:`~sprint_lab.tasks.grading.grade` against
    lm-eval's ``target`` (strict / flexible as in :data:`FILTER_MODES`); lm-eval's verdict is its
    ``exact_match``. A verdict mismatch on identical text is a grader difference.

    Raises:
        InputError: the two lists have different lengths.
    """
    from sprint_lab.tasks.grading import grade

    if len(samples) != len(ours):
        raise InputError(f"{config}: {len(samples)} lm-eval samples but {len(ours)} completions")
    prompts = completions = 0
    verdicts = dict.fromkeys(FILTER_MODES, 0)
    mismatches: list[str] = []
    for sample, (prompt, text) in zip(samples, ours, strict=True):
        prompts += sample.prompt == prompt
        if sample.prompt != prompt:
            mismatches.append(_describe(sample.doc_id, "prompt", sample.prompt, prompt))
        completions += sample.completion == text
        if sample.completion != text:
            mismatches.append(_describe(sample.doc_id, "completion", sample.completion, text))
        for name, mode in FILTER_MODES.items():
            verdict = grade(text, sample.target, task="gsm8k", mode=mode)
            if verdict.correct == sample.correct.get(name):
                verdicts[name] += 1
                continue
            mismatches.append(
                f"q{sample.doc_id} {name} verdict: lm-eval {sample.correct.get(name)} "
                f"({sample.extracted.get(name)!r}) vs sprint_lab {verdict.correct} "
                f"({verdict.extracted!r}, {verdict.extractor}); gold {sample.target!r}; "
                f"same text: {sample.completion == text}"
            )
    texts = tuple(text for _, text in ours)
    return Agreement(config, len(samples), prompts, completions, verdicts, tuple(mismatches), texts)


def read_questions(data_file: str | os.PathLike[str], limit: int) -> list[str]:
    """The first ``limit`` questions of a GSM8K JSON Lines file, in file order.

    Raises:
        InputError: the file is missing, or a line is not JSON with a ``question``.
    """
    path = Path(data_file)
    if not path.is_file():
        raise InputError(f"GSM8K test file {path} does not exist; set SPRINT_LAB_DATA")
    questions = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if len(questions) == limit:
                break
            try:
                questions.append(str(json.loads(line)["question"]))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(f"{path}, line {number}: no question ({error!r})") from error
    return questions


@no_type_check  # validates the heads, the limit and the folders itself (InputError)
def peer_check(
    model: Any,
    heads: Sequence[str],
    out_dir: str | os.PathLike[str],
    data_file: str | os.PathLike[str],
    *,
    limit: int = 20,
    max_new_tokens: int = 256,
    baseline: bool = False,
    venv: str | os.PathLike[str] | None = None,
    attn_implementation: str | None = "eager",
    timeout_s: float = 3600.0,
) -> list[Agreement]:
    """Export adapters for ``heads``, run lm-eval on each, compare with sprint_lab.

    Args:
        model: the float32 :class:`~sprint_lab.core.model.LabModel` to check.
        heads: head labels (``"L5H2"``), one adapter and one lm-eval run each.
        out_dir: a folder for the export (``adapters/``), the task YAML (``tasks/``) and
            lm-eval's output (``lmeval/<config>/``); replaced files are overwritten.
        data_file: the GSM8K test file lm-eval and sprint_lab both read.
        limit: the first ``limit`` questions.
        max_new_tokens: sprint_lab's ``max_new_tokens`` and lm-eval's ``max_gen_toks``.
        baseline: also compare the unablated model (the base folder, no adapter).
        venv: the lm-eval environment (see :func:`lmeval_venv`).
        attn_implementation: the base model's attention kernel in lm-eval
            (see :func:`lmeval_command`).
        timeout_s: limit for one lm-eval run.

    Returns:
        One :class:`Agreement` per configuration (the baseline ``"none"`` first if asked).

    Raises:
        InputError: no heads, ``limit`` < 1, or a head the model lacks.
        SetupError: the lm-eval environment is missing or lm-eval failed.
    """
    from sprint_lab.engines.lora import BASE_FOLDER, adapter_path, export_head_adapters

    if isinstance(heads, str) or not heads:
        raise InputError(f"peer_check: give a list of head labels such as ['L5H2'], got {heads!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputError(f"peer_check: limit must be a positive int, got {limit!r}")
    executable = lmeval_executable(venv)
    out_dir = Path(out_dir)
    export = out_dir / "adapters"
    export_head_adapters(model, list(heads), export, overwrite=True)
    task_dir = out_dir / "tasks"
    write_local_gsm8k_cot_task(task_dir, data_file, installed_task_yaml(venv))
    questions = read_questions(data_file, limit)
    configs = (["none"] if baseline else []) + list(heads)
    results = []
    for config in configs:
        adapter = None if config == "none" else adapter_path(export, config)
        output = out_dir / "lmeval" / config
        command = lmeval_command(
            executable,
            base=export / BASE_FOLDER,
            adapter=adapter,
            task_dir=task_dir,
            output_dir=output,
            limit=limit,
            max_gen_toks=max_new_tokens,
            attn_implementation=attn_implementation,
        )
        samples = read_samples(run_lmeval(command, output, timeout_s=timeout_s))
        ablated = [] if config == "none" else [config]
        ours = sprint_lab_completions(model, questions, ablated, max_new_tokens=max_new_tokens)
        results.append(compare_samples(config, samples, ours))
    return results
