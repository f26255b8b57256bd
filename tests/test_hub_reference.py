"""The top-level MODEL_CARD.md is the rendered card of the reference (demo) model: equal to what hf_llava.hub renders
from hub/reference/, parseable, with the results in its model-index; the demo's hook writes the same kind of card."""

import json
import shutil
from pathlib import Path

from huggingface_hub import ModelCard

from hf_llava.checkpoint import save_checkpoint
from hf_llava.hub import CARD_INPUTS, read_card_inputs, reference_card, write_demo_card
from hf_llava.hub_scripts import reference_card_main
from hf_llava.testing import tiny_llava

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "hub" / "reference"


def test_model_card_md_is_the_rendered_reference_card(capsys):
    assert reference_card_main(["--root", str(ROOT), "--check"]) == 0, capsys.readouterr().out
    card = ModelCard.load(ROOT / "MODEL_CARD.md")
    results = json.loads((REFERENCE / "results.json").read_text())["hub_results"]
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [
        (r["metric_name"], r["metric_value"]) for r in results]
    assert card.data.pipeline_tag == "image-text-to-text" and card.data.license == "apache-2.0"
    assert "{{" not in card.content and "{%" not in card.content  # a reader on GitHub sees no template syntax


def test_check_fails_when_the_card_is_stale(tmp_path, capsys):
    shutil.copytree(REFERENCE, tmp_path / "hub" / "reference")
    (tmp_path / "MODEL_CARD.md").write_text((ROOT / "MODEL_CARD.md").read_text().replace("62.3", "99.9"))
    assert reference_card_main(["--root", str(tmp_path), "--check"]) == 1
    assert "differs" in capsys.readouterr().out
    assert reference_card_main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / "MODEL_CARD.md").read_text() == (ROOT / "MODEL_CARD.md").read_text()


def test_demo_hook_and_refresh_from_a_demo_folder(tmp_path):
    demo = tmp_path / "demo"
    model, processor = tiny_llava()
    save_checkpoint(model, processor, demo / "stage2-finetune", vision_tower=str(tmp_path), llm="smollm2",
                    training="2 steps.")
    (demo / "eval").mkdir()
    shutil.copyfile(REFERENCE / "results.json", demo / "eval" / "results.json")
    card_path = write_demo_card(demo)
    expected = reference_card(read_card_inputs(demo / "stage2-finetune"), [demo / "eval" / "results.json"])
    assert card_path.read_text() == str(expected)
    assert "2 steps." in expected.text and "| parameters | 0.1 M |" in expected.text

    root = tmp_path / "checkout"
    shutil.copytree(REFERENCE, root / "hub" / "reference")
    assert reference_card_main([str(demo), "--root", str(root)]) == 0
    assert (root / "MODEL_CARD.md").read_text() == card_path.read_text()
    copied = json.loads((root / "hub" / "reference" / CARD_INPUTS).read_text())
    # the machine's paths stay out of the checked-in inputs
    assert [p["name"] for p in copied["parts"]] == [tmp_path.name, "HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_a_checkpoint_saved_before_card_inputs_existed_is_described_from_its_files(tmp_path):
    model, processor = tiny_llava()
    folder = save_checkpoint(model, processor, tmp_path / "ckpt", llm="smollm2", datasets=["me/data"])
    (folder / CARD_INPUTS).unlink()
    inputs = read_card_inputs(folder)
    assert inputs["architecture"]["num_parameters"] == model.num_parameters()  # from the safetensors headers
    assert inputs["architecture"]["image_seq_length"] == model.config.image_seq_length
    assert [(p["name"], p["license"]) for p in inputs["parts"]] == [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"), ("me/data", None)]  # from the old card's metadata
