"""Input limits of generation: sampling settings and prompt length, refused before any compute."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from sprint_lab import generate, get_template, load_model, load_problems
from sprint_lab.core.errors import InputError
from sprint_lab.generation import (
    PromptTooLongError,
    check_problem_lengths,
    check_prompt_lengths,
    context_length,
)
from sprint_lab.generation.limits import max_chars_per_token
from sprint_lab.generation.sampling import Sampler
from sprint_lab.tasks.records import Problem

HUGE = "x" * 10_000_000  # a 10 MB question


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_model(tiny_models["llama"], dtype="float32")


@contextmanager
def no_forward(model) -> Iterator[list[int]]:
    """Fail the test if the model embeds any token (every forward pass starts there)."""
    calls: list[int] = []

    def refuse(module, args):
        calls.append(1)
        raise AssertionError("a forward pass ran before the inputs were checked")

    handle = model.hf_model.get_input_embeddings().register_forward_pre_hook(refuse)
    try:
        yield calls
    finally:
        handle.remove()
    assert calls == []


class CountingTokenizer:
    """Wraps a tokenizer and records the length of every text it tokenizes."""

    def __init__(self, tokenizer) -> None:
        self.inner = tokenizer
        self.lengths: list[int] = []

    def __call__(self, text, *args, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        self.lengths.extend(len(t) for t in texts)
        return self.inner(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_context_length_of_the_tiny_model(model):
    assert context_length(model) == model.hf_model.config.max_position_embeddings == 4096
    no_config = SimpleNamespace(config=SimpleNamespace())
    bridge_only = SimpleNamespace(
        hf_model=no_config, bridge=SimpleNamespace(cfg=SimpleNamespace(n_ctx=64))
    )
    assert context_length(bridge_only) == 64
    assert context_length(SimpleNamespace()) is None


# --------------------------------------------------------------------------- sampling settings
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(temperature=-1), r"temperature must be >= 0 \(0 is greedy\), got -1$"),
        (dict(temperature=math.nan), r"temperature must be a finite number >= 0.*got nan"),
        (dict(temperature=math.inf), r"temperature must be a finite number >= 0.*got inf"),
        (dict(temperature=1.0, top_p=0), r"top_p must be None or a number in \(0, 1\].*got 0$"),
        (dict(temperature=1.0, top_p=1.5), r"top_p must be None or a number in \(0, 1\].*got 1.5"),
        (dict(temperature=1.0, top_p=-0.2), r"top_p must be None .*got -0.2"),
        (dict(temperature=1.0, top_p=math.nan), r"top_p must be None .*got nan"),
        (dict(temperature=1.0, top_k=-1), r"top_k must be None or an integer >= 0.*got -1$"),
        (dict(temperature=1.0, top_k=True), r"top_k must be None or an integer >= 0.*got True$"),
    ],
)
def test_bad_sampling_settings_refused_before_compute(model, settings, message):
    with no_forward(model), pytest.raises(InputError, match=message) as err:
        generate(model, ["Q: 2+2?\nA:"], max_new_tokens=2, **settings)
    assert isinstance(err.value, ValueError)


def test_good_sampling_settings_accepted():
    assert Sampler(temperature=0).greedy and Sampler().greedy
    sampler = Sampler(temperature=0.7, top_k=0, top_p=1)
    assert not sampler.greedy and (sampler.top_k, sampler.top_p) == (0, 1)
    with pytest.raises(InputError, match="top_k must be None or an integer"):
        Sampler(temperature=1.0, top_k=2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="temperature must be a finite number"):
        Sampler(temperature="hot")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- prompt length
def test_over_long_prompt_refused_before_compute(model):
    long_prompt = " 1" * 5000
    n_tokens = len(model.tokenizer(long_prompt, add_special_tokens=False)["input_ids"])
    assert n_tokens > 4096
    with no_forward(model), pytest.raises(PromptTooLongError) as err:
        generate(model, ["Q: 2+2?\nA:", long_prompt], max_new_tokens=4)
    message = str(err.value)
    assert message.startswith(f"prompt 1 ({n_tokens:,} tokens) is too long for the model's ")
    assert "context of 4,096 tokens with max_new_tokens=4" in message
    assert "prompt 0" not in message
    assert "Fix: shorten the prompt" in message
    assert isinstance(err.value, InputError) and err.value.exit_code == 2
    assert (err.value.context, err.value.max_new_tokens) == (4096, 4)
    assert [(p.label, p.n_tokens) for p in err.value.prompts] == [("prompt 1", n_tokens)]


def test_prompt_plus_max_new_tokens_over_context_refused(model):
    prompt = "Q: 2+2?\nA:"
    n_tokens = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    fits = 4096 - n_tokens
    with no_forward(model), pytest.raises(PromptTooLongError) as err:
        generate(model, [prompt], max_new_tokens=fits + 1)
    assert f"lower max_new_tokens to at most {fits}" in str(err.value)
    assert check_prompt_lengths(model, [prompt], fits) == [n_tokens]  # exactly full is fine
    with no_forward(model), pytest.raises(PromptTooLongError, match="leaves no room"):
        generate(model, [prompt], max_new_tokens=4096)


def test_long_shared_prefix_refused_before_compute(model):
    prefix, suffix = get_template("fewshot_cot").parts("What is 2+2?")
    n_tokens = len(model.tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])
    with no_forward(model), pytest.raises(PromptTooLongError) as err:
        generate(model, [(prefix, suffix)], max_new_tokens=4096 - n_tokens + 1)
    assert str(err.value).startswith(f"prompt 0 ({n_tokens:,} tokens) is too long")


def test_ten_megabyte_question_refused_without_tokenizing(model):
    counting = CountingTokenizer(model.tokenizer)
    watched = dataclasses.replace(model, tokenizer=counting)
    with no_forward(model), pytest.raises(PromptTooLongError) as err:
        generate(watched, ["Q: 2+2?\nA:", HUGE], max_new_tokens=16)
    assert str(err.value).startswith("prompt 1 (>= ")
    assert "10,000,000 characters) is too long" in str(err.value)
    assert err.value.prompts[0].n_tokens is None
    assert err.value.prompts[0].min_tokens > 4096
    assert max(counting.lengths, default=0) < 1000  # only stop strings, never the question
    # the bound is sound: no vocabulary entry is longer than max_chars_per_token characters
    per_token = max_chars_per_token(model.tokenizer)
    assert per_token == max(len(t) for t in model.tokenizer.get_vocab())


def test_error_survives_pickling(model):
    with pytest.raises(PromptTooLongError) as err:
        check_prompt_lengths(model, [HUGE], 8, ids=["q-huge"])
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is PromptTooLongError and str(again) == str(err.value)
    assert again.prompts == err.value.prompts and again.context == 4096


# --------------------------------------------------------------------------- sweep problems
def test_check_problem_lengths_names_the_question_ids(model):
    problems = load_problems("arith", limit=3)
    too_long = [
        Problem(id="too-long-words", question="add " * 5000, answer="1", source="custom"),
        Problem(id="too-long-huge", question=HUGE, answer="1", source="custom"),
    ]
    mixed = [problems[0], too_long[0], problems[1], too_long[1], problems[2]]
    with no_forward(model), pytest.raises(PromptTooLongError) as err:
        check_problem_lengths(model, mixed, get_template("fewshot_cot"), 256)
    message = str(err.value)
    assert message.startswith("2 questions are too long for the model's context of 4,096 tokens")
    assert "question too-long-words (" in message and "question too-long-huge (>= " in message
    assert not any(p.id in message for p in problems)
    assert [p.label for p in err.value.prompts] == [
        "question too-long-words",
        "question too-long-huge",
    ]

    template = get_template("fewshot_cot")
    counts = check_problem_lengths(model, problems, "fewshot_cot", 256)
    for problem, count in zip(problems, counts, strict=True):
        prefix, suffix = template.parts(problem.question, model.tokenizer)
        assert count == len(model.tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])


def test_check_problem_lengths_lists_ten_ids_then_a_count(model):
    problems = load_problems("arith", limit=12)
    with pytest.raises(PromptTooLongError) as err:
        check_problem_lengths(model, problems, "fewshot_cot", 3500)  # ~750 prompt tokens each
    message = str(err.value)
    assert message.startswith("12 questions are too long")
    assert all(f"question {p.id} (" in message for p in problems[:10])
    assert not any(p.id in message for p in problems[10:])
    assert " and 2 more. Fix: " in message
    assert len(err.value.prompts) == 12
