"""lm-evaluation-harness as a peer: its gsm8k_cot completions under a head adapter equal ours.

The slow test runs lm-eval 0.4.13 (its own venv, ``bash .ci/lmeval_env.sh``) on the exported base
model plus one head's LoRA adapter, on the first GSM8K test questions, and requires every prompt,
completion and strict-match / flexible-extract verdict to equal sprint_lab's (``fewshot_cot``,
greedy, float32, under ``ablate``). The quick tests check the samples reader and the comparison on
a hand-written samples file in lm-eval's format.
"""

from __future__ import annotations

import json

import pytest

from sprint_lab import generate, get_template
from sprint_lab.engines.lmeval import (
    LMEVAL_VENV_ENV,
    compare_samples,
    lmeval_venv,
    peer_check,
    read_samples,
)

HEADS = ["L5H2"]
N_QUESTIONS = 5
MAX_NEW_TOKENS = 96  # lm-eval's max_gen_toks via --gen_kwargs; 256 (its default) is the benchmark's


def sample_line(doc_id, name, extracted, correct, completion):
    """One line as lm-eval 0.4.13 writes it with --log_samples."""
    return json.dumps(
        {
            "doc_id": doc_id,
            "doc": {"question": f"question {doc_id}", "answer": "... #### 18"},
            "target": "18",
            "arguments": {"gen_args_0": {"arg_0": f"prompt {doc_id}", "arg_1": {"until": ["Q:"]}}},
            "resps": [[completion]],
            "filtered_resps": [extracted],
            "filter": name,
            "metrics": ["exact_match"],
            "exact_match": float(correct),
        }
    )


@pytest.fixture
def samples_file(tmp_path):
    texts = {0: " 16 - 3 - 4 = 9. 9 * 2 = 18. The answer is 18.", 1: " So it is 20."}
    lines = [
        sample_line(0, "strict-match", "18", True, texts[0]),
        sample_line(1, "strict-match", "[invalid]", False, texts[1]),
        sample_line(0, "flexible-extract", "18", True, texts[0]),
        sample_line(1, "flexible-extract", "20", False, texts[1]),
    ]
    path = tmp_path / "samples_gsm8k_cot_local_x.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, texts


def test_read_samples_merges_the_filters_of_a_question(samples_file):
    path, texts = samples_file
    samples = read_samples(path)
    assert [s.doc_id for s in samples] == [0, 1]
    assert samples[0].prompt == "prompt 0" and samples[0].completion == texts[0]
    assert samples[1].extracted == {"strict-match": "[invalid]", "flexible-extract": "20"}
    assert samples[1].correct == {"strict-match": False, "flexible-extract": False}


def test_compare_samples_counts_and_locates_differences(samples_file):
    path, texts = samples_file
    samples = read_samples(path)
    same = compare_samples("L5H2", samples, [("prompt 0", texts[0]), ("prompt 1", texts[1])])
    assert (same.prompts, same.completions, same.all_verdicts, same.mismatches) == (2, 2, 2, ())
    other = " 16 - 3 - 4 = 9. 9 * 2 = 16. The answer is 16."
    changed = compare_samples("L5H2", samples, [("prompt 0", other), ("prompt 1", texts[1])])
    assert changed.completions == 1 and changed.verdicts["strict-match"] == 1
    assert changed.mismatches[0].startswith("q0 completion differs at char 26:")


@pytest.mark.slow
def test_lmeval_completions_and_verdicts_equal_sprint_lab(
    embedded_model, shared_data_dir, tmp_path
):
    if not (lmeval_venv() / "bin" / "lm_eval").is_file():
        pytest.skip(
            f"lm-eval venv not found at {lmeval_venv()}: create it with `bash .ci/lmeval_env.sh` "
            f"(or point {LMEVAL_VENV_ENV} at one)"
        )
    data_file = shared_data_dir / "gsm8k" / "test.jsonl"
    (result,) = peer_check(
        embedded_model,
        HEADS,
        tmp_path,
        data_file,
        limit=N_QUESTIONS,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    print(
        f"{result.config}: prompts {result.prompts}/{result.n}, completions "
        f"{result.completions}/{result.n}, verdicts {result.verdicts}"
    )
    assert result.n == N_QUESTIONS
    assert result.mismatches == (), "\n".join(result.mismatches)
    assert result.prompts == result.completions == result.all_verdicts == N_QUESTIONS
    # The check means something only if the head changes the text: the unablated model differs.
    template = get_template("fewshot_cot")
    questions = [json.loads(line)["question"] for line in data_file.open()][:N_QUESTIONS]
    parts = [template.parts(q, embedded_model.tokenizer) for q in questions]
    plain = generate(embedded_model, parts, max_new_tokens=MAX_NEW_TOKENS, stop=template.stop)
    assert any(a.text != b for a, b in zip(plain, result.texts, strict=True))
