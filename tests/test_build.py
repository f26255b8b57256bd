"""`hf-llava build`: pretrained towers are reused untouched, the tokenizer gains <image>, the result reloads remotely."""

import json
import shutil

import pytest
import torch
from tiny_checkpoints import (save_clip_vision, save_full_clip, save_llama, save_mistral, save_qwen2,
                              save_siglip_vision)

from hf_llava.build import build_llava, save_llava
from hf_llava.cli import main
from hf_llava.errors import UserError
from hf_llava.testing import random_image, run_without_hf_llava

SOURCES = {
    "clip_full": save_full_clip, "clip_vision": save_clip_vision, "siglip_vision": save_siglip_vision,
    "llama": save_llama, "qwen2": save_qwen2, "mistral": save_mistral,
}
TEXT = "what is a red circle ?"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {name: str(save(root / name)) for name, save in SOURCES.items()}


def build(sources, vision, llm, **kwargs):
    kwargs.setdefault("chat_template", "vicuna_v1" if llm == "llama" else None)
    return build_llava(sources[vision], sources[llm], **kwargs)


@pytest.mark.parametrize(("vision", "llm"), [("clip_full", "llama"), ("clip_vision", "qwen2"), ("siglip_vision", "mistral")])
def test_built_model_carries_the_pretrained_weights(sources, vision, llm):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, processor = build(sources, vision, llm)
    # Read the source files directly: every tower parameter comes from the checkpoint (text half of CLIP ignored).
    stored = load_file(f"{sources[vision]}/model.safetensors")
    tower = model.model.vision_tower.state_dict()
    for name, _ in model.model.vision_tower.named_parameters():
        key = name if name in stored else f"vision_model.{name}"  # CLIPModel files prefix the vision half
        assert torch.equal(tower[name], stored[key]), name

    stored = load_file(f"{sources[llm]}/model.safetensors")
    source_llm = AutoModelForCausalLM.from_pretrained(sources[llm]).eval()
    vocab = source_llm.config.vocab_size
    built = {f"model.{name}": tensor for name, tensor in model.model.language_model.state_dict().items()}
    built["lm_head.weight"] = model.lm_head.weight
    for name, tensor in stored.items():
        rows = slice(None, vocab) if name in ("model.embed_tokens.weight", "lm_head.weight") else slice(None)
        assert torch.equal(built[name][rows], tensor), name
    assert ("lm_head.weight" not in stored) == model.config.tie_word_embeddings == source_llm.config.tie_word_embeddings
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight is model.get_input_embeddings().weight

    # Text-only logits equal the source LLM's on the same text (the new rows only add columns).
    ids = AutoTokenizer.from_pretrained(sources[llm])(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = source_llm(input_ids=ids).logits
    torch.testing.assert_close(ours[..., :vocab], theirs, rtol=0, atol=1e-6)

    projector = model.model.multi_modal_projector
    assert projector.linear_1.in_features == model.config.vision_config.hidden_size
    assert 0.01 < projector.linear_1.weight.std() < 0.03 and not projector.linear_1.bias.any()  # fresh init
    assert processor.image_seq_length == model.config.image_seq_length


@pytest.mark.parametrize(("llm", "grows", "pad"), [("llama", False, "<pad>"), ("qwen2", True, "<|endoftext|>"),
                                                  ("mistral", True, "<unk>")])
def test_tokenizer_gains_image_token_and_embeddings_grow_only_when_needed(sources, llm, grows, pad):
    from transformers import AutoConfig, AutoTokenizer

    source_tokenizer = AutoTokenizer.from_pretrained(sources[llm])
    source_vocab = AutoConfig.from_pretrained(sources[llm]).vocab_size
    model, processor = build(sources, "clip_vision", llm)
    tokenizer = processor.tokenizer
    image_token_id = model.config.image_token_id
    assert image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert tokenizer.pad_token == pad and model.generation_config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer("what <image> circle", add_special_tokens=False).input_ids
    assert ids.count(image_token_id) == 1  # one special token, never split
    size = model.get_input_embeddings().num_embeddings
    assert size == model.config.text_config.vocab_size
    if not grows:  # llama: <image> known and the vocabulary padded past the tokenizer: nothing changes
        assert len(tokenizer) == len(source_tokenizer) and size == source_vocab
        return
    # <image> appended after every existing id; embeddings grown to fit it, the new rows = mean of the old ones
    assert len(tokenizer) == len(source_tokenizer) + 1 and image_token_id == len(source_tokenizer)
    assert size == len(tokenizer) > source_vocab
    for weight in (model.get_input_embeddings().weight, model.lm_head.weight):
        torch.testing.assert_close(weight[source_vocab:], weight[:source_vocab].mean(0).expand(size - source_vocab, -1))


def test_chat_template_by_name_or_from_the_tokenizer(sources):
    from hf_llava.chat_templates import get_chat_template

    _, processor = build(sources, "clip_vision", "qwen2")  # its tokenizer's template has {% generation %}
    assert processor.chat_template == get_chat_template("chatml")
    _, processor = build(sources, "clip_vision", "qwen2", chat_template="plain")
    assert processor.chat_template == get_chat_template("plain")
    with pytest.raises(ValueError, match="has no chat template.*--chat-template"):
        build(sources, "clip_vision", "llama", chat_template=None)


def test_wrong_sources_are_clear_errors(sources, tmp_path):
    with pytest.raises(ValueError, match="not a vision tower"):
        build_llava(sources["llama"], sources["llama"], chat_template="vicuna_v1")
    tower_only = tmp_path / "tower"
    save_clip_vision(tower_only)
    (tower_only / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="no image processor"):
        build_llava(str(tower_only), sources["llama"], chat_template="vicuna_v1")
    with pytest.raises(UserError, match=f"vision tower {tmp_path / 'no-tower'}: no such folder"):
        build_llava(str(tmp_path / "no-tower"), sources["llama"], chat_template="vicuna_v1")
    no_tokenizer = tmp_path / "llm"
    shutil.copytree(sources["llama"], no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*",
                                                                                   "chat_template*"))
    with pytest.raises(UserError, match=f"LLM {no_tokenizer}: cannot load its tokenizer"):
        build_llava(sources["clip_vision"], str(no_tokenizer), chat_template="vicuna_v1")


RELOAD = '''
import json, sys, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is a red circle ?"}]}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt", processor_kwargs={"images": [Image.open(sys.argv[2])]})
with torch.no_grad():
    logits = model(**inputs).logits[0, -1]
print(json.dumps({"module": type(model).__module__, "input_ids": inputs["input_ids"][0].tolist(),
                  "logits": logits.tolist()}))
'''


def test_cli_build_saves_a_checkpoint_that_reloads_with_remote_code(sources, tmp_path, capsys):
    out = tmp_path / "built"
    assert main(["build", "--vision-tower", sources["clip_full"], "--llm", sources["qwen2"],
                 "--projector-type", "mlp2x_gelu", "--vision-feature-layer", "-2", "--pad-to-square",
                 "--image-position-embedding-std", "0.5", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "projector (new, untrained)" in printed and "per-position embedding (init std 0.5)" in printed
    for name in ("model.safetensors", "modeling_hf_llava.py", "processing_hf_llava.py", "configuration_hf_llava.py",
                 "chat_template.jinja", "tokenizer.json", "processor_config.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_llava" and config["projector_type"] == "mlp2x_gelu"
    assert config["image_position_embedding_std"] == 0.5

    image = tmp_path / "image.png"
    random_image(5).save(image)
    report = json.loads(run_without_hf_llava(RELOAD, str(out), str(image)).stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")

    # The same checkpoint loaded in this process (hf_llava's own classes) gives the same inputs and logits.
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert processor.pad_to_square
    assert 0.4 < model.multi_modal_projector.position_embedding.std().item() < 0.6  # the build initialised it
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is a red circle ?"}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [Image.open(image)]})
    assert report["input_ids"] == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model(**inputs).logits[0, -1]
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=0, atol=1e-5)


def test_save_llava_round_trips_the_weights(sources, tmp_path):
    from transformers import AutoModelForImageTextToText

    model, processor = build(sources, "siglip_vision", "qwen2", projector_type="linear")
    save_llava(model, processor, tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert loaded.config.vision_feature_select_strategy == "full"  # picked for SigLIP (no CLS)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
