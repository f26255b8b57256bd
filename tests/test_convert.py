"""`hf-llava convert`: llava-hf <-> hf_llava and original LLaVA -> hf_llava give the same logits as the source.

The foreign checkpoints are built here from tiny random models: a native `LlavaForConditionalGeneration` with its
`LlavaProcessor`, and the original LLaVA layout (Llama keys + `model.mm_projector.*` + optional
`model.vision_tower.vision_tower.*`, `mm_*` config fields, a tokenizer without `<image>`). The original computation is
re-implemented below in a few lines (CLIP hidden state, CLS dropped or kept, projector, splice at -200, Llama).
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (
    AutoProcessor,
    CLIPVisionModel,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from hf_llava import HfLlavaForConditionalGeneration, HfLlavaProcessor
from hf_llava.chat_templates import get_chat_template
from hf_llava.cli import main as cli_main
from hf_llava.convert import ConversionError, from_llava, from_llava_hf, load_weights, to_llava_hf
from hf_llava.testing import random_image, tiny_config, tiny_image_processor, tiny_llava, tiny_tokenizer

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"
SENTINEL = -200  # original LLaVA's image position marker
TOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def greedy(model, inputs, n: int = 8) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False)


@torch.no_grad()
def logits(model, inputs) -> torch.Tensor:
    return model(**inputs).logits


# ------------------------------------------------------------------------------------------------- native llava-hf
NATIVE_VARIANTS = {
    "llava-1.5": {},  # hidden_states[-2], CLS dropped, projector with bias
    "multi-layer-full-nobias": dict(
        vision_feature_layer=[-3, -1], vision_feature_select_strategy="full", multimodal_projector_bias=False
    ),
}


def save_native_llava(path, seed: int = 0, **overrides):
    """A tiny transformers-native llava checkpoint + LlavaProcessor (image_seq_length left at the native default: the
    native model never reads it)."""
    config = tiny_config()
    native_config = LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(native_config).eval()
    processor = LlavaProcessor(
        image_processor=tiny_image_processor(config),
        tokenizer=tiny_tokenizer(chat_template=None),
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=native_config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(NATIVE_VARIANTS))
def native_pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"native-{request.param}")
    native_dir = save_native_llava(root / "native", **NATIVE_VARIANTS[request.param])
    return native_dir, from_llava_hf(native_dir, root / "hf_llava")


def test_from_llava_hf_equal_logits_and_generations(native_pair):
    native_dir, converted_dir = native_pair
    native = LlavaForConditionalGeneration.from_pretrained(native_dir).eval()
    native_processor = AutoProcessor.from_pretrained(native_dir)
    model = HfLlavaForConditionalGeneration.from_pretrained(converted_dir).eval()
    processor = HfLlavaProcessor.from_pretrained(converted_dir)
    assert model.config.projector_type == "mlp2x_gelu"
    assert model.config.vision_feature_layer == native.config.vision_feature_layer
    assert processor.chat_template == native_processor.chat_template

    image = random_image(1)
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    native_inputs = native_processor(images=image, text=PROMPT, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], native_inputs["input_ids"])  # same <image> expansion
    assert torch.equal(inputs["pixel_values"], native_inputs["pixel_values"])

    diff = max_diff(logits(model, inputs), logits(native, native_inputs))
    assert diff <= TOL, f"max abs logit difference {diff}"
    assert torch.equal(greedy(model, inputs), greedy(native, native_inputs))


# ------------------------------------------------------------------------------------------- hf_llava -> llava-hf
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model, processor = tiny_llava(seed=3)
    processor.pad_to_square = True  # LLaVA-1.5 `pad`: must become LlavaImageProcessor(do_pad=True)
    model.save_pretrained(root / "hf_llava")
    processor.save_pretrained(root / "hf_llava")
    return root, model, processor, to_llava_hf(root / "hf_llava", root / "llava_hf")


def test_to_llava_hf_loads_natively_with_equal_logits(exported):
    root, model, processor, out = exported
    assert not list(out.glob("*.py"))
    for path in out.glob("*.json"):
        assert "auto_map" not in path.read_text() and "hf_llava" not in path.read_text(), path.name
    native = LlavaForConditionalGeneration.from_pretrained(out).eval()  # no trust_remote_code
    native_processor = AutoProcessor.from_pretrained(out)
    assert type(native_processor).__name__ == "LlavaProcessor"
    assert native_processor.image_processor.do_pad

    wide = random_image(2, size=(48, 30))  # not square: both must pad with the same (122, 116, 104) fill
    inputs = processor(images=wide, text=PROMPT, return_tensors="pt")
    native_inputs = native_processor(images=wide, text=PROMPT, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], native_inputs["input_ids"])
    assert torch.equal(inputs["pixel_values"], native_inputs["pixel_values"])
    diff = max_diff(logits(model, inputs), logits(native, native_inputs))
    assert diff <= TOL, f"max abs logit difference {diff}"
    assert torch.equal(greedy(model, inputs), greedy(native, native_inputs))


def test_round_trip_hf_llava_llava_hf_hf_llava(exported):
    root, model, _, out = exported
    back = HfLlavaForConditionalGeneration.from_pretrained(from_llava_hf(out, root / "back"))
    original_state, back_state = model.state_dict(), back.state_dict()
    assert original_state.keys() == back_state.keys()
    assert all(torch.equal(original_state[key], back_state[key]) for key in original_state)
    for field in ("image_token_id", "image_seq_length", "vision_feature_layer", "vision_feature_select_strategy",
                  "projector_type", "projector_bias", "tie_word_embeddings"):
        assert getattr(back.config, field) == getattr(model.config, field), field


def test_to_llava_hf_rejects_what_native_llava_cannot_hold(tmp_path):
    model, processor = tiny_llava(projector_type="linear")
    model.save_pretrained(tmp_path / "linear")
    processor.save_pretrained(tmp_path / "linear")
    with pytest.raises(ConversionError, match=r"'linear'.*mlp2x_gelu"):
        to_llava_hf(tmp_path / "linear", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    model, processor = tiny_llava(image_position_embedding_std=0.5)
    model.save_pretrained(tmp_path / "positions")
    processor.save_pretrained(tmp_path / "positions")
    with pytest.raises(ConversionError, match=r"image_position_embedding_std=0\.5.*per image token position"):
        to_llava_hf(tmp_path / "positions", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- original LLaVA
def original_tokenizer():
    """The tiny tokenizer without `<image>` (its slot renamed), like Vicuna's: original LLaVA never tokenized it."""
    tokenizer = tiny_tokenizer(chat_template=None, image_token=False)
    tokenizer.pad_token = None  # Vicuna has none; the converter sets pad = unk
    return tokenizer


def save_original_llava(root, weights_format: str, embed_tower: bool, projector_type: str, select_feature: str):
    """A tiny original LLaVA checkpoint in `root/llava` and a CLIP tower directory in `root/clip`.

    Returns (checkpoint dir, the weights it holds, the CLIP tower it computes with). When the checkpoint embeds its
    tower, `root/clip` holds different weights, so using the wrong ones shows."""
    hf_config = tiny_config()
    tokenizer = original_tokenizer()
    text_config = hf_config.text_config.to_dict() | {"vocab_size": len(tokenizer)}
    torch.manual_seed(7)
    llm = LlamaForCausalLM(type(hf_config.text_config)(**text_config))
    tower = CLIPVisionModel(hf_config.vision_config).eval()
    stored_tower = tower if not embed_tower else CLIPVisionModel(hf_config.vision_config)
    stored_tower.save_pretrained(root / "clip")
    tiny_image_processor(hf_config).save_pretrained(root / "clip")

    width, vision_width = text_config["hidden_size"], hf_config.vision_config.hidden_size
    weights = dict(llm.state_dict())
    if projector_type == "linear":
        weights |= {"model.mm_projector.weight": torch.randn(width, vision_width),
                    "model.mm_projector.bias": torch.randn(width)}
    else:
        weights |= {"model.mm_projector.0.weight": torch.randn(width, vision_width) / 4,
                    "model.mm_projector.0.bias": torch.randn(width),
                    "model.mm_projector.2.weight": torch.randn(width, width) / 8,
                    "model.mm_projector.2.bias": torch.randn(width)}
    if embed_tower:  # the original wrapper's keys: CLIPVisionTower.vision_tower(CLIPVisionModel).vision_model.*
        weights |= {f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in tower.state_dict().items()}
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # saved by old transformers versions

    ckpt = root / "llava"
    ckpt.mkdir()
    tokenizer.save_pretrained(ckpt)
    config = {k: v for k, v in text_config.items() if k not in ("architectures", "dtype")}
    config |= dict(
        architectures=["LlavaLlamaForCausalLM"], model_type="llava", mm_vision_tower=str(root / "clip"),
        mm_hidden_size=vision_width, mm_projector_type=projector_type, mm_vision_select_layer=-2,
        mm_vision_select_feature=select_feature, image_aspect_ratio="pad", mm_use_im_start_end=False,
        mm_use_im_patch_token=False, tune_mm_mlp_adapter=False, tokenizer_model_max_length=2048,
    )
    (ckpt / "config.json").write_text(json.dumps(config))
    tensors = {k: v.contiguous() for k, v in weights.items()}
    if weights_format == "bin":
        torch.save(tensors, ckpt / "pytorch_model.bin")
    elif weights_format == "safetensors":
        save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    else:  # sharded safetensors with an index
        keys = sorted(tensors)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, shard_keys in shards.items():
            save_file({k: tensors[k] for k in shard_keys}, ckpt / name, metadata={"format": "pt"})
        weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
        (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return ckpt, weights, tower


@torch.no_grad()
def original_llava_logits(weights, config, tower, input_ids: list[int], pixel_values) -> torch.Tensor:
    """Original LLaVA's forward, independently: CLIP layer, select feature, projector, splice at -200, Llama."""
    features = tower(pixel_values, output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]]
    if config["mm_vision_select_feature"] == "patch":
        features = features[:, 1:]
    if config["mm_projector_type"] == "linear":
        features = F.linear(features, weights["model.mm_projector.weight"], weights["model.mm_projector.bias"])
    else:
        hidden = F.linear(features, weights["model.mm_projector.0.weight"], weights["model.mm_projector.0.bias"])
        features = F.linear(F.gelu(hidden), weights["model.mm_projector.2.weight"], weights["model.mm_projector.2.bias"])
    llm_config = type(tiny_config().text_config)(**{k: v for k, v in config.items() if not k.startswith("mm_")})
    llm = LlamaForCausalLM(llm_config).eval()
    llm.load_state_dict({k: v for k, v in weights.items() if k in llm.state_dict()})
    at = input_ids.index(SENTINEL)
    embed = llm.get_input_embeddings()
    embeds = torch.cat([embed(torch.tensor(input_ids[:at])), features[0], embed(torch.tensor(input_ids[at + 1:]))])
    return llm(inputs_embeds=embeds[None]).logits


def tokenizer_image_token(tokenizer, prompt: str) -> list[int]:
    """Original LLaVA's prompt tokenization: BOS, the text chunks around `<image>`, -200 between them."""
    before, after = prompt.split("<image>")
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return [tokenizer.bos_token_id, *encode(before), SENTINEL, *encode(after)]


ORIGINAL_CASES = {
    # weights format, tower weights in the checkpoint, projector, select feature, --vision-tower
    "safetensors-embedded-tower-mlp": ("safetensors", True, "mlp2x_gelu", "patch", False),
    "bin-tower-from-flag-linear-cls": ("bin", False, "linear", "cls_patch", True),
    "sharded-tower-from-mm_vision_tower": ("sharded", False, "mlp2x_gelu", "patch", False),
}


@pytest.mark.parametrize("case", list(ORIGINAL_CASES))
def test_from_llava_original_matches_original_computation(case, tmp_path):
    weights_format, embed_tower, projector_type, select_feature, tower_flag = ORIGINAL_CASES[case]
    ckpt, weights, tower = save_original_llava(tmp_path, weights_format, embed_tower, projector_type, select_feature)
    config = json.loads((ckpt / "config.json").read_text())
    out = from_llava(ckpt, tmp_path / "out", vision_tower=str(tmp_path / "clip") if tower_flag else None)

    model = HfLlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = HfLlavaProcessor.from_pretrained(out)
    old_vocab = config["vocab_size"]
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == old_vocab == model.config.image_token_id
    assert model.config.text_config.vocab_size == old_vocab + 1
    embeddings = model.get_input_embeddings().weight
    assert torch.allclose(embeddings[old_vocab], embeddings[:old_vocab].mean(0))
    assert processor.pad_to_square and processor.chat_template == get_chat_template("vicuna_v1")
    assert processor.tokenizer.pad_token == "<unk>"

    inputs = processor(images=random_image(4), text=PROMPT, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    image_positions = [i for i, token in enumerate(ids) if token == model.config.image_token_id]
    assert len(image_positions) == model.config.image_seq_length
    original_ids = ids[: image_positions[0]] + [SENTINEL] + ids[image_positions[-1] + 1:]
    assert original_ids == tokenizer_image_token(original_tokenizer(), PROMPT)

    ours = logits(model, inputs)[0, :, :old_vocab]
    reference = original_llava_logits(weights, config, tower, original_ids, inputs["pixel_values"])[0]
    assert ours.shape == reference.shape  # same sequence: the features occupy the image tokens' places
    diff = max_diff(ours, reference)
    assert diff <= TOL, f"max abs logit difference {diff} (all positions, text and image)"


# --------------------------------------------------------------------------------------------------------- CLI
def test_cli_converts_and_reports_errors(tmp_path, capsys):
    native_dir = save_native_llava(tmp_path / "native")
    assert cli_main(["convert", "--from", "llava-hf", str(native_dir), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "modeling_hf_llava.py").is_file()  # remote code travels with the checkpoint
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "hf_llava" and "AutoModelForImageTextToText" in config["auto_map"]

    capsys.readouterr()
    assert cli_main(["convert", "--from", "llava", str(native_dir), str(tmp_path / "bad")]) == 2
    assert "use --from llava-hf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["convert", "--from", "llava-hf", "--to", "llava-hf", "a", "b"])  # one direction only


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli_main(["convert", "--help"])
    help_text = capsys.readouterr().out
    for command in ("--from llava-hf", "--to llava-hf", "--from llava ", "--vision-tower"):
        assert command in help_text


# ------------------------------------------------------------------------------------------------------ errors
def test_unknown_source_layouts(tmp_path):
    with pytest.raises(ConversionError, match="no config.json"):
        from_llava_hf(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for convert in (from_llava_hf, from_llava, to_llava_hf):
        with pytest.raises(ConversionError, match=r"config\.json: expected .*'bert'"):
            convert(tmp_path, tmp_path / "out")


def test_original_without_vision_tower_is_a_clear_error(tmp_path):
    ckpt, _, _ = save_original_llava(tmp_path, "safetensors", False, "mlp2x_gelu", "patch")
    config = json.loads((ckpt / "config.json").read_text())
    config["mm_vision_tower"] = str(tmp_path / "no-such-clip")
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"vision tower .*no-such-clip.*mm_vision_tower.*--vision-tower"):
        from_llava(ckpt, tmp_path / "out")


def test_original_unsupported_fields_and_wrong_tower(tmp_path):
    ckpt, _, _ = save_original_llava(tmp_path, "safetensors", False, "mlp2x_gelu", "patch")
    config = json.loads((ckpt / "config.json").read_text())
    for field, value, message in [
        ("mm_projector_type", "qformer", "Unknown projector_type 'qformer'"),
        ("image_aspect_ratio", "anyres", "LLaVA-NeXT"),
        ("mm_vision_select_feature", "cls", "mm_vision_select_feature 'cls'"),
        ("mm_hidden_size", 1024, "mm_hidden_size=1024"),
    ]:
        (ckpt / "config.json").write_text(json.dumps(config | {field: value}))
        with pytest.raises(ConversionError, match=message):
            from_llava(ckpt, tmp_path / "out")


def test_bin_weights_never_unpickle_objects(tmp_path):
    torch.save({"weight": torch.zeros(2), "payload": ConversionError("not a tensor")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin.*weights_only=True"):
        load_weights(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(ConversionError, match="no weights found"):
        load_weights(tmp_path)


def test_a_truncated_safetensors_file_is_named(tmp_path):
    save_file({"weight": torch.ones(64, 64)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(ConversionError, match=f"{tmp_path / 'model.safetensors'}: not a readable safetensors file"):
        load_weights(tmp_path)
