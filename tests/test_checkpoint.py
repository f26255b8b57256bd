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
