"""HfLlavaProcessor and the named chat templates."""

import pytest
import torch
from PIL import Image

from hf_llava import HfLlavaProcessor
from hf_llava.chat_templates import available_templates, get_chat_template
from hf_llava.testing import random_image, tiny_config, tiny_image_processor, tiny_processor, tiny_tokenizer

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
# Two turns, two images (one before the first question, one after the second), as in LLaVA's data.
CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "It is red."}]},
    {"role": "user", "content": [{"type": "text", "text": "And in this one?"}, {"type": "image"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Blue, next to a square."}]},
]
END_TOKEN = {"vicuna_v1": "</s>", "chatml": "<|im_end|>", "llama2": " </s>", "plain": "\n"}


@pytest.fixture(scope="module")
def config():
    return tiny_config()


def test_templates_are_all_shipped():
    assert set(available_templates()) == {"vicuna_v1", "plain", "chatml", "llama2"}
    with pytest.raises(ValueError, match="Unknown chat template 'vicuna'"):
        get_chat_template("vicuna")


def test_vicuna_v1_renders_llava_format(config):
    processor = tiny_processor(config, chat_template="vicuna_v1")
    text = processor.apply_chat_template(CONVERSATION)
    # Hand-written from LLaVA's conv_vicuna_v1 (sep " ", sep2 "</s>"), image first then question.
    assert text == (
        f"{VICUNA_SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT: It is red.</s>"
        "USER: And in this one?\n<image> ASSISTANT: Blue, next to a square.</s>"
    )
    prompt = processor.apply_chat_template(CONVERSATION[:1], add_generation_prompt=True)
    assert prompt == f"{VICUNA_SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT:"


def test_llama2_and_plain_render_llava_formats(config):
    llama2 = tiny_processor(config, chat_template="llama2").apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    )
    assert llama2 == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat colour is the circle? [/INST] It is red. </s>"
        "<s>[INST] And in this one?\n<image> [/INST] Blue, next to a square. </s>"
    )
    caption = [CONVERSATION[0], {"role": "assistant", "content": "A red circle."}]
    assert tiny_processor(config, chat_template="plain").apply_chat_template(caption) == "<image>A red circle.\n"


@pytest.mark.parametrize("template", ["vicuna_v1", "chatml", "llama2", "plain"])
def test_assistant_mask_covers_exactly_the_answers(config, template):
    processor = tiny_processor(config, chat_template=template)
    conversation = CONVERSATION[:2] if template == "plain" else CONVERSATION
    images = [random_image(i) for i in range(2 if template != "plain" else 1)]
    out = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt",
        processor_kwargs={"images": images},
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    answers = [m["content"][0]["text"] for m in conversation if m["role"] == "assistant"]
    supervised = processor.tokenizer.decode(ids[mask])
    assert supervised.replace(" ", "") == "".join(a + END_TOKEN[template] for a in answers).replace(" ", "")
    assert not (ids[mask] == processor.image_token_id).any()
    assert (ids == processor.image_token_id).sum() == len(images) * config.image_seq_length


def test_image_marker_count_must_match_images(config):
    processor = tiny_processor(config)
    with pytest.raises(ValueError, match="Found total 1 <image> tokens and 2 images"):
        processor(text="<image> what?", images=[random_image(1), random_image(2)])
    with pytest.raises(ValueError, match="no images were passed"):
        processor(text="<image> what?")


def test_per_row_image_lists_are_checked_row_by_row(config):
    processor = tiny_processor(config)
    first, second = random_image(1), random_image(2)
    with pytest.raises(ValueError, match=r"Sample 0: 2 <image> marker\(s\) in its text but 1 image\(s\)"):
        processor(text=["<image><image> a", "b"], images=[[first], [second]])  # same total, wrong rows
    with pytest.raises(ValueError, match="1 image lists for 2 texts"):
        processor(text=["<image> a", "<image> b"], images=[[first, second]])
    rows = processor(text=["<image><image> a", "b"], images=[[first, second], []], padding=True, return_tensors="pt")
    assert rows["pixel_values"].shape[0] == 2
    assert (rows["input_ids"][0] == processor.image_token_id).sum() == 2 * processor.image_seq_length
    assert not (rows["input_ids"][1] == processor.image_token_id).any()


def test_truncation_that_cuts_image_tokens_is_an_error(config):
    processor = tiny_processor(config)
    text = "Describe this picture please. " * 3 + "<image>"
    with pytest.raises(ValueError, match=r"Sample 0: truncation cut image tokens \(\d+ of 16"):
        processor(text=text, images=[random_image()], truncation=True, max_length=30)
    first = processor(text="<image> " + "Describe this picture please. " * 3, images=[random_image()],
                      truncation=True, max_length=30, return_tensors="pt")
    assert first["input_ids"].shape[1] == 30  # the text was cut ...
    assert (first["input_ids"][0] == processor.image_token_id).sum() == 16  # ... the image was not


def test_pad_to_square_fills_with_the_mean_colour(config):
    wide_red = Image.new("RGB", (56, 28), (255, 0, 0))
    cropped = tiny_processor(config)(text="<image>", images=[wide_red], return_tensors="pt")["pixel_values"]
    padded = tiny_processor(config, pad_to_square=True)(text="<image>", images=[wide_red], return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.allclose(cropped[0, :, 0, 0], cropped[0, :, 14, 14])  # centre crop: red everywhere
    # Padded: the top row is the mean colour, which normalises to ~0; the centre is still red.
    assert padded[0, :, 0, :].abs().max() < 0.02
    torch.testing.assert_close(padded[0, :, 14, 14], cropped[0, :, 14, 14], atol=0.05, rtol=0)


def test_tokenizer_without_image_token_is_refused(config):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "hi": 1}, "<unk>")),
                                   unk_token="<unk>")
    with pytest.raises(ValueError, match="no '<image>' token"):
        HfLlavaProcessor(image_processor=tiny_image_processor(config), tokenizer=bare)


def test_save_and_reload_keep_settings(tmp_path, config):
    processor = tiny_processor(config, chat_template="chatml", pad_to_square=True)
    processor.save_pretrained(tmp_path)
    reloaded = HfLlavaProcessor.from_pretrained(tmp_path)
    assert (reloaded.image_seq_length, reloaded.pad_to_square) == (16, True)
    assert reloaded.chat_template == get_chat_template("chatml")
    image = random_image()
    first, second = processor(text="<image>hi", images=[image]), reloaded(text="<image>hi", images=[image])
    assert first["input_ids"] == second["input_ids"]
    assert (first["pixel_values"][0] == second["pixel_values"][0]).all()


def test_tiny_tokenizer_is_deterministic():
    assert tiny_tokenizer().encode("What colour?") == tiny_tokenizer().encode("What colour?")
