"""MultimodalCollator: labels are exactly the assistant answers (+ end token), under every chat template."""

import pytest
import torch

from hf_llava import MultimodalCollator
from hf_llava.data.errors import BadRecordError
from hf_llava.data.schema import assistant_message, image_block, message, text_block, user_message
from hf_llava.testing import random_image, tiny_config, tiny_processor

END_TOKEN = {"vicuna_v1": "</s>", "chatml": "<|im_end|>", "llama2": " </s>", "plain": "\n"}


def rows():
    multi_turn = {
        "id": "multi-turn",
        "images": [random_image(1)],
        "messages": [
            message("system", text_block("Answer briefly.")),
            user_message("What shape is it?", with_image=True),
            assistant_message("A circle."),
            user_message("What colour?"),
            assistant_message("Red, like a stop sign."),
        ],
    }
    multi_image = {
        "id": "two-images",
        "images": [random_image(2), random_image(3)],
        "messages": [
            message("user", image_block(), text_block("Compare with"), image_block()),
            assistant_message("The second one is brighter."),
        ],
    }
    text_only = {"id": "text", "images": [], "messages": [user_message("Say hi."), assistant_message("Hi there!")]}
    return [multi_turn, multi_image, text_only]


def answers(row):
    return [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.mark.parametrize("template", ["vicuna_v1", "chatml", "llama2"])
def test_labels_are_exactly_the_answers(config, template):
    processor = tiny_processor(config, chat_template=template)
    collator = MultimodalCollator(processor)
    batch_rows = rows()
    batch = collator(batch_rows)
    assert batch["pixel_values"].shape[0] == 3  # 1 + 2 + 0 images, in row order
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i, row in enumerate(batch_rows):
        labels = batch["labels"][i]
        decoded = processor.tokenizer.decode(labels[labels != -100])
        expected = "".join(a + END_TOKEN[template] for a in answers(row))
        assert decoded.replace(" ", "") == expected.replace(" ", "")
        real = batch["attention_mask"][i].bool()
        assert (labels[~real] == -100).all()  # padding never supervised
        image_positions = batch["input_ids"][i] == config.image_token_id
        assert image_positions.sum() == len(row["images"]) * config.image_seq_length
        assert (labels[image_positions] == -100).all()


def test_plain_template_supervises_the_caption_only(config):
    processor = tiny_processor(config, chat_template="plain")
    caption_row = {"id": "cap", "images": [random_image()],
                   "messages": [user_message("Describe briefly.", with_image=True), assistant_message("A red dot.")]}
    batch = MultimodalCollator(processor)([caption_row])
    labels = batch["labels"][0]
    assert processor.tokenizer.decode(labels[labels != -100]) == "A red dot.\n"
    assert "Describe" not in processor.tokenizer.decode(batch["input_ids"][0])


def test_batch_feeds_the_model_and_loss_ignores_prompts(config):
    from hf_llava.testing import tiny_llava

    model, processor = tiny_llava()
    batch = MultimodalCollator(processor)(rows())
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_truncated_image_is_an_error_naming_the_sample(config):
    collator = MultimodalCollator(tiny_processor(config), max_length=20)
    row = {"id": "long-one", "images": [random_image()],
           "messages": [user_message("Please look at this picture carefully", with_image=False),
                        assistant_message("ok")]}
    row["messages"][0]["content"].append(image_block())
    with pytest.raises(BadRecordError, match="record long-one: .*truncation cut image tokens"):
        collator([row])


def test_sample_without_supervised_tokens_is_an_error_or_a_counted_skip(config):
    processor = tiny_processor(config)
    no_answer = {"id": "question-only", "images": [], "messages": [user_message("Anyone there?")]}
    with pytest.raises(BadRecordError, match="question-only.*no assistant tokens"):
        MultimodalCollator(processor)([no_answer])
    # Truncation that removes the whole answer is caught the same way.
    cut = {"id": "cut", "images": [], "messages": [user_message("word " * 40), assistant_message("late answer")]}
    skipping = MultimodalCollator(processor, max_length=100, skip_bad_samples=True)  # "Say hi." row: 80 tokens
    batch = skipping([no_answer, cut, rows()[2]])
    assert batch["input_ids"].shape[0] == 1
    assert skipping.skips.counts == {"nothing to supervise": 2}
    with pytest.raises(ValueError, match="every sample of this batch was bad"):
        skipping([no_answer])


def test_image_marker_mismatch_names_the_sample(config):
    row = {"id": "missing-image", "images": [], "messages": [user_message("What?", with_image=True),
                                                             assistant_message("No idea.")]}
    with pytest.raises(BadRecordError, match="missing-image"):
        MultimodalCollator(tiny_processor(config))([row])


def test_random_image_placement_moves_the_image_but_not_the_labels(config):
    processor = tiny_processor(config)
    row = rows()[0]
    collator = MultimodalCollator(processor, random_image_placement=True, seed=0)
    image_first, label_sets = set(), set()
    for _ in range(12):
        user_turn = collator.place_images(row["messages"])[1]
        image_first.add(user_turn["content"][0]["type"] == "image")
        labels = collator([row])["labels"][0]
        label_sets.add(processor.tokenizer.decode(labels[labels != -100]))
    assert image_first == {True, False}  # both placements occur
    assert len(label_sets) == 1  # answers unchanged
    assert row["messages"][1]["content"][0]["type"] == "image"  # the row itself is not modified


def test_template_without_generation_markers_is_refused(config):
    processor = tiny_processor(config)
    processor.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ValueError, match="generation"):
        MultimodalCollator(processor)
