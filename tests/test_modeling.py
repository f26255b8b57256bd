"""HfLlavaConfig and HfLlavaForConditionalGeneration on tiny random towers (CPU, seconds)."""

import pytest
import torch

from hf_llava import HfLlavaConfig, HfLlavaForConditionalGeneration
from hf_llava.testing import random_image, tiny_config, tiny_llava

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]


def prompt_inputs(processor, conversations, images, **kwargs):
    """Tokenised generation prompts for a batch of conversations with their images (a list per conversation)."""
    return processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"images": images, "padding": True, **kwargs},
    )


# --- config -------------------------------------------------------------------------------------------------------


def test_config_derives_image_seq_length_and_round_trips():
    config = tiny_config()
    assert config.image_seq_length == (28 // 7) ** 2  # CLIP 28 px / patch 7, CLS dropped
    full = tiny_config(vision_feature_select_strategy="full")
    assert full.image_seq_length == 16 + 1
    assert tiny_config(vision_model_type="siglip_vision_model").image_seq_length == 16  # no CLS at all
    reloaded = HfLlavaConfig.from_dict(config.to_dict())
    assert reloaded.image_seq_length == config.image_seq_length
    assert reloaded.text_config.hidden_size == config.text_config.hidden_size
    assert reloaded.auto_map["AutoModelForImageTextToText"] == "modeling_hf_llava.HfLlavaForConditionalGeneration"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(projector_type="mlp_gelu"), "Unknown projector_type"),
        (dict(projector_type="identity"), "identity"),
        (dict(image_seq_length=99), "image_seq_length=99"),
        (dict(vision_model_type="siglip_vision_model", vision_feature_select_strategy="default"), "has none"),
        (dict(image_position_embedding_std=-1.0), "image_position_embedding_std must be >= 0"),
        (dict(vision_feature_layer=99), r"vision_feature_layer 99 is out of range.*from -\d+ to \d+"),
        (dict(vision_feature_layer=[-2, -99]), r"vision_feature_layer \[-2, -99\] is out of range"),
    ],
)
def test_config_rejects_inconsistent_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_vision_feature_layer_accepts_every_hidden_state_of_the_tower():
    from transformers import CLIPVisionModel

    vision_config = tiny_config().vision_config
    states = CLIPVisionModel(vision_config)(torch.zeros(1, 3, vision_config.image_size, vision_config.image_size),
                                            output_hidden_states=True).hidden_states
    for layer in (len(states) - 1, -len(states), [0, -1]):  # the ends of the range the config accepts
        assert tiny_config(vision_feature_layer=layer).vision_feature_layer == layer
    with pytest.raises(ValueError, match="out of range"):
        tiny_config(vision_feature_layer=len(states))


def test_full_clip_config_is_reduced_to_its_vision_part():
    from transformers import CLIPConfig

    clip = CLIPConfig(vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=28, patch_size=7))
    config = HfLlavaConfig(vision_config=clip, text_config=tiny_config().text_config)
    assert config.vision_config.model_type == "clip_vision_model"


# --- forward ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text_model_type", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("vision_model_type", ["clip_vision_model", "siglip_vision_model"])
def test_forward_backward_for_each_tower(text_model_type, vision_model_type):
    model, processor = tiny_llava(text_model_type=text_model_type, vision_model_type=vision_model_type)
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    outputs = model(**inputs, labels=inputs["input_ids"])
    assert outputs.logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert outputs.image_hidden_states.shape == (1, model.config.image_seq_length, 64)
    outputs.loss.backward()
    assert model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("projector_type", "depth"), [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_types(projector_type, depth):
    model, processor = tiny_llava(projector_type=projector_type)
    names = {name.split(".")[0] for name, _ in model.multi_modal_projector.named_parameters()}
    assert names == {f"linear_{i}" for i in range(1, depth + 1)}
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    assert torch.isfinite(model(**inputs).logits).all()


def test_identity_projector_when_widths_match():
    config = tiny_config(projector_type="identity", vision_feature_layer=[-2, -1])  # 2 x 32 = LLM width 64
    model = HfLlavaForConditionalGeneration(config)
    assert not list(model.multi_modal_projector.parameters())
    features = model.get_image_features(torch.randn(2, 3, 28, 28))
    assert features.shape == (2, config.image_seq_length, 64)


def test_image_position_embedding_marks_where_each_image_token_sits(tmp_path):
    plain, _ = tiny_llava()
    assert plain.multi_modal_projector.position_embedding is None
    same_patch_everywhere = torch.randn(1, 1, 32).expand(2, plain.config.image_seq_length, 32)
    output = plain.multi_modal_projector(same_patch_everywhere)
    assert torch.equal(output, output[:, :1].expand_as(output))  # as in LLaVA: a token cannot tell where it is

    model, processor = tiny_llava(image_position_embedding_std=0.5)
    embedding = model.multi_modal_projector.position_embedding
    assert embedding.shape == (model.config.image_seq_length, 64)
    assert 0.4 < embedding.std().item() < 0.6  # initialised with the configured std (not left empty or zero)
    output = model.multi_modal_projector(same_patch_everywhere)
    torch.testing.assert_close(output - output[:, :1], (embedding - embedding[:1]).expand_as(output))

    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert embedding.grad.abs().sum() > 0  # it trains with the projector

    model.save_pretrained(tmp_path)
    loaded = HfLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.image_position_embedding_std == 0.5
    torch.testing.assert_close(loaded.multi_modal_projector.position_embedding, embedding, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_feature_layers_select_and_concatenate_hidden_states():
    model, _ = tiny_llava(vision_feature_layer=[-3, -1], projector_type="linear")
    pixels = torch.randn(1, 3, 28, 28)
    hidden = model.vision_tower(pixels, output_hidden_states=True).hidden_states
    expected = torch.cat([hidden[-3], hidden[-1]], dim=-1)[:, 1:]  # CLS dropped
    torch.testing.assert_close(model.get_image_features(pixels), model.multi_modal_projector(expected))


def test_layout_matches_transformers_native_llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    model, _ = tiny_llava()
    native = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=model.config.vision_config.to_dict(), text_config=model.config.text_config.to_dict(),
        image_token_index=model.config.image_token_id, image_seq_length=model.config.image_seq_length,
    ))
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert ours == {name: tuple(t.shape) for name, t in native.state_dict().items()}
    assert "model.multi_modal_projector.linear_2.bias" in ours


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_pixel_values_in_any_float_dtype(dtype):
    model, processor = tiny_llava()
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    reference = model(**inputs).logits
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    # Values are cast to the tower's dtype; only the input rounding of low-precision pixels differs.
    torch.testing.assert_close(model(**inputs).logits, reference, atol=5e-2, rtol=0)


def test_sdpa_and_eager_attention_agree():
    model, processor = tiny_llava()
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    model.set_attn_implementation("eager")
    eager = model(**inputs).logits
    model.set_attn_implementation("sdpa")
    assert model.config.text_config._attn_implementation == "sdpa"
    torch.testing.assert_close(model(**inputs).logits, eager, atol=1e-5, rtol=1e-5)


def test_loaded_with_attn_implementation(tmp_path):
    model, _ = tiny_llava()
    model.save_pretrained(tmp_path)
    for implementation in ("eager", "sdpa"):
        loaded = HfLlavaForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=implementation)
        assert loaded.config.text_config._attn_implementation == implementation


def test_gradient_checkpointing_gives_the_same_gradients():
    model, processor = tiny_llava()
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    model.train()

    def grads():
        model.zero_grad()
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.language_model.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


# --- images and tokens --------------------------------------------------------------------------------------------


def test_mismatched_image_tokens_raise_with_counts():
    model, processor = tiny_llava()
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    two_images = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match=r"Image features and image tokens do not match.*16 image tokens.*2 image"):
        model(input_ids=inputs["input_ids"], pixel_values=two_images)
    with pytest.raises(ValueError, match="Image features and image tokens do not match.*no pixel_values"):
        model(input_ids=inputs["input_ids"])


def test_several_images_in_one_sample_use_their_own_features():
    model, processor = tiny_llava()
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"},
                                                 {"type": "image"}, {"type": "text", "text": "differ?"}]}]
    images = [random_image(1), random_image(2)]
    inputs = prompt_inputs(processor, [conversation], [images])
    assert inputs["pixel_values"].shape[0] == 2
    swapped = prompt_inputs(processor, [conversation], [images[::-1]])
    last = model(**inputs).logits[0, -1]
    assert not torch.allclose(last, model(**swapped).logits[0, -1])  # order of images matters
    # The embeddings at the second image's positions are exactly its projected features.
    image_positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(-1)
    features = model.get_image_features(inputs["pixel_values"])
    embeds = model.model.merge_image_features(
        inputs["input_ids"], model.get_input_embeddings()(inputs["input_ids"]), features
    )
    torch.testing.assert_close(embeds[0, image_positions[16:]], features[1])


def test_text_only_rows_batch_with_image_rows():
    model, processor = tiny_llava()
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Say yes or no."}]}]
    batch = processor.apply_chat_template(
        [QUESTION, text_only], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"images": [[random_image()], []], "padding": True, "padding_side": "left"},
    )
    assert batch["pixel_values"].shape[0] == 1
    logits = model(**batch).logits
    alone = processor.apply_chat_template(text_only, add_generation_prompt=True, tokenize=True, return_dict=True,
                                          return_tensors="pt")
    torch.testing.assert_close(logits[1, -1], model(**alone).logits[0, -1], atol=1e-5, rtol=1e-5)


# --- generation ---------------------------------------------------------------------------------------------------


def test_greedy_generation_same_with_and_without_kv_cache():
    model, processor = tiny_llava(seed=3)
    inputs = prompt_inputs(processor, [QUESTION], [[random_image()]])
    cached = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(cached, uncached)


def test_left_padded_batch_generates_each_row_as_alone():
    model, processor = tiny_llava(seed=4)
    long_question = [{"role": "user", "content": [
        {"type": "text", "text": "Look closely at the picture and describe every shape you see in detail:"},
        {"type": "image"}]}]
    conversations, images = [QUESTION, long_question], [[random_image(5)], [random_image(6)]]
    batch = prompt_inputs(processor, conversations, images, padding_side="left")
    assert (batch["attention_mask"][0] == 0).any()  # the first row really is padded
    batched = model.generate(**batch, max_new_tokens=8, do_sample=False)
    for row, (conversation, row_images) in enumerate(zip(conversations, images)):
        alone = prompt_inputs(processor, [conversation], [row_images])
        single = model.generate(**alone, max_new_tokens=8, do_sample=False)
        assert batched[row, -8:].tolist() == single[0, -8:].tolist()


def test_generation_reads_the_image():
    model, processor = tiny_llava(seed=5)
    first = model.generate(**prompt_inputs(processor, [QUESTION], [[random_image(1)]]), max_new_tokens=6,
                           do_sample=False, output_scores=True, return_dict_in_generate=True)
    second = model.generate(**prompt_inputs(processor, [QUESTION], [[random_image(2)]]), max_new_tokens=6,
                            do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert not torch.allclose(first.scores[0], second.scores[0])
