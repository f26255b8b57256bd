"""The contrastive (CLIP-style) vision tower trainer: it learns, and what it saves is a usable vision tower."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import CLIPImageProcessorPil, CLIPVisionModel

from hf_llava.data import shapes
from hf_llava.testing import VISION_CONFIGS, tiny_tokenizer
from hf_llava.training.contrastive import (ContrastiveSettings, image_caption_pairs, main, make_parser,
                                           sincos_position_embeddings, train_tower)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_checkpoints import save_llama  # noqa: E402

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "max_position_embeddings": 64}


def caption_rows(n):
    return list(shapes.rows("caption", "train", num_images=n, image_size=28))


def test_learns_to_match_images_and_captions(tmp_path):
    # 48 scenes, 40 to train on (batch 16): the in-batch loss (mean of the last 10 steps) must fall well below chance
    # (ln 16); with a collapsed tower (e.g. lr 3e-3, no warm-up) it stays at chance.
    settings = ContrastiveSettings(steps=60, batch_size=16, learning_rate=2e-3, heldout=8, text_config=TINY_TEXT,
                                   projection_dim=16)
    summary = train_tower(caption_rows(48), VISION_CONFIGS["clip_vision_model"], tiny_tokenizer(), tmp_path,
                          settings)
    assert summary["rows"] == 40 and summary["heldout_rows"] == 8
    assert summary["last_loss"] < 0.65 * summary["chance_loss"]

    tower = CLIPVisionModel.from_pretrained(tmp_path)
    processor = CLIPImageProcessorPil.from_pretrained(tmp_path)
    assert tower.config.hidden_size == VISION_CONFIGS["clip_vision_model"]["hidden_size"]
    assert processor.crop_size["height"] == VISION_CONFIGS["clip_vision_model"]["image_size"]
    # trained, not the random init: a fresh tower with the same seed gives other features
    pixels = torch.rand(1, 3, 28, 28)
    torch.manual_seed(0)
    fresh = CLIPVisionModel(tower.config)
    assert not torch.allclose(tower(pixels).pooler_output, fresh(pixels).pooler_output)
    saved = json.loads((tmp_path / "contrastive_training.json").read_text())
    assert saved["summary"] == summary and saved["settings"]["steps"] == 60


def test_sincos_positions_start_the_towers_position_embeddings(tmp_path):
    # a 3x3 patch grid: a zero row for the class token, then nine distinct rows; cells in one grid row share the
    # row half of the table and differ in the column half
    table = sincos_position_embeddings(3, 16)
    assert table.shape == (10, 16) and not table[0].any()
    assert len({tuple(row.tolist()) for row in table[1:]}) == 9
    assert torch.equal(table[1, :8], table[2, :8]) and not torch.equal(table[1, 8:], table[2, 8:])
    config = VISION_CONFIGS["clip_vision_model"]
    grid = config["image_size"] // config["patch_size"]
    for sincos in (True, False):  # learning rate 0: the saved tower holds its initial position embeddings
        settings = ContrastiveSettings(steps=1, batch_size=4, learning_rate=0.0, heldout=2, text_config=TINY_TEXT,
                                       projection_dim=16, sincos_positions=sincos)
        train_tower(caption_rows(12), config, tiny_tokenizer(), tmp_path / str(sincos), settings)
        state = CLIPVisionModel.from_pretrained(tmp_path / str(sincos)).state_dict()
        saved = next(value for key, value in state.items() if key.endswith("position_embedding.weight"))
        assert torch.equal(saved, sincos_position_embeddings(grid, config["hidden_size"])) is sincos


def test_rows_without_caption_are_refused():
    row = caption_rows(1)[0]
    pairs = image_caption_pairs([row])
    assert pairs[0][1] == row["messages"][-1]["content"][0]["text"]
    with pytest.raises(ValueError, match="caption-0.*no image or no assistant caption"):
        image_caption_pairs([{**row, "images": []}])


def test_cli_trains_a_tower_usable_by_the_recipe(tmp_path):
    from datasets import Dataset

    from hf_llava.build import build_llava

    Dataset.from_list(caption_rows(12)).save_to_disk(tmp_path / "data" / "caption")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(tok_dir)
    recipe = tmp_path / "tower.yaml"  # the shipped recipe's layout: sources as recipes/sft.py's `datasets`
    recipe.write_text(yaml.safe_dump({
        "datasets": [{"path": str(tmp_path / "data"), "name": "caption", "split": "train"}],
        "vision_tower_config": VISION_CONFIGS["clip_vision_model"], "tokenizer": str(tok_dir),
        "output_dir": str(tmp_path / "unused"), "steps": 300, "batch_size": 4, "heldout": 2}))
    summary = main(["--config", str(recipe), "--output_dir", str(tmp_path / "tower"), "--steps", "2"])
    assert summary["steps"] == 2 and summary["rows"] == 10  # flags override the YAML
    assert not (tmp_path / "unused").exists()
    model, processor = build_llava(str(tmp_path / "tower"), str(save_llama(tmp_path / "llm")),
                                   chat_template="plain")
    image = shapes.render(next(shapes.generate_scenes(1, image_size=28)))
    inputs = processor(images=[image], text=["<image>\nA picture."], return_tensors="pt")
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


@pytest.mark.parametrize("recipe, message", [
    ({"datasets": ["d"], "vision_tower_config": {"image_size": 28}, "output_dir": "o", "config_name": "caption"},
     "Unknown arguments from config file.*config_name"),
    ({"datasets": ["d"], "vision_tower_config": {"image_size": 28}}, "needs output_dir"),
    ({"datasets": [{"path": "d", "config_name": "caption"}], "vision_tower_config": {"image_size": 28},
      "output_dir": "o"}, "unknown dataset key"),
])
def test_bad_recipes_are_clear_errors(tmp_path, recipe, message):
    # the pre-TrlParser keys (`data`, `config_name`) are refused by name, not ignored
    path = tmp_path / "tower.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match=message):
        make_parser().parse_args_and_config(["--config", str(path)])
