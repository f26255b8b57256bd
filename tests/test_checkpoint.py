"""save_checkpoint: a complete, self-describing folder."""

from huggingface_hub import ModelCard

from hf_llava.checkpoint import save_checkpoint
from hf_llava.testing import tiny_llava


def test_checkpoint_folder_has_weights_code_and_a_rendered_card(tmp_path):
    model, processor = tiny_llava()
    out = save_checkpoint(model, processor, tmp_path / "ckpt", repo_id="me/tiny", llm="HuggingFaceTB/SmolLM2-135M",
                          vision_tower=str(tmp_path), training="2 steps on shapes.", chat_template="vicuna_v1")
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja",
            "configuration_hf_llava.py", "modeling_hf_llava.py", "processing_hf_llava.py", "README.md"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)  # no pickles
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model == ["HuggingFaceTB/SmolLM2-135M"]  # local paths are not Hub base models
    assert "hf-llava" in card.data.tags
    text = card.text
    assert 'from_pretrained("me/tiny", trust_remote_code=True)' in text
    assert f"{model.config.image_seq_length} tokens per image" in text
    assert "`mlp2x_gelu`" in text and "2 steps on shapes." in text
    assert "{{" not in text  # every placeholder rendered


def test_checkpoint_does_not_keep_the_last_calls_truncation(tmp_path):
    # the collator tokenises with truncation=True, max_length=...; before the fix that length landed in
    # tokenizer.json and every later load carried max_length (and generate warned "max_length is ignored")
    import json

    from hf_llava import HfLlavaProcessor

    model, processor = tiny_llava()
    processor.tokenizer("some training text", truncation=True, max_length=7)
    out = save_checkpoint(model, processor, tmp_path / "ckpt")
    assert json.loads((out / "tokenizer.json").read_text())["truncation"] is None
    assert "max_length" not in json.loads((out / "tokenizer_config.json").read_text())
    reloaded = HfLlavaProcessor.from_pretrained(out).tokenizer
    assert len(reloaded("word " * 50)["input_ids"]) >= 50  # nothing truncates a plain call
