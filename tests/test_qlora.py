"""QLoRA through recipes/sft.py on a tiny random checkpoint (CPU: bitsandbytes NF4 runs there with bf16 autocast):
only the LLM is 4-bit, the projector stays unquantised and trains with the adapter, every output reloads."""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes", reason="QLoRA needs the qlora extra (pip install -e '.[qlora]')")

sys.path.insert(0, str(Path(__file__).parent))
from test_training import Snapshot, base_args, logits, losses, sft  # noqa: E402
from tiny_checkpoints import save_clip_vision, save_llama  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A stage-2 QLoRA run (3 steps, checkpoint at step 3) from a freshly composed tiny checkpoint."""
    import datasets

    from hf_llava.build import build_llava, save_llava
    from hf_llava.data.schema import features
    from test_training import colour_rows

    root = tmp_path_factory.mktemp("qlora")
    datasets.Dataset.from_list(colour_rows(12), features=features()).save_to_disk(str(root / "data"))
    # bitsandbytes' CPU inference kernel needs in_features divisible by its block size (64): MLP width 128
    llm = save_llama(root / "llm", intermediate_size=128)
    model, processor = build_llava(str(save_clip_vision(root / "tower")), str(llm), chat_template="plain")
    save_llava(model, processor, root / "base")
    out = root / "out"
    snapshot = Snapshot()
    trainer = sft.main(base_args(
        {"data": str(root / "data")}, out, "--model_name_or_path", str(root / "base"), "--chat_template",
        "vicuna_v1", "--stage", "2", "--learning_rate", "1e-2", "--max_steps", "3", "--bf16", "true",
        "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--load_in_4bit", "true",
        "--bnb_4bit_quant_type", "nf4", "--use_bnb_nested_quant", "true", "--save_strategy", "steps",
        "--save_steps", "3"), callbacks=[snapshot])
    return {"root": root, "out": out, "trainer": trainer, "changed": snapshot.changed(trainer.model)}


def linear_types(model, part: str) -> set[str]:
    """Classes of the nn.Linear layers of one part (the LoRA A/B matrices aside)."""
    return {type(m).__name__ for n, m in model.named_modules() if f".{part}." in f".{n}." and "lora_" not in n
            and isinstance(m, torch.nn.Linear)}


def test_only_the_llm_is_4bit_nf4_with_double_quantisation(run):
    model = run["trainer"].model
    config = model.config.quantization_config
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    # LLM linears: LoRA wrappers around Linear4bit base layers; nothing else is quantised
    assert linear_types(model, "language_model") == {"Linear4bit"}
    assert linear_types(model, "vision_tower") == {"Linear"}
    assert linear_types(model, "multi_modal_projector") == {"Linear"}
    assert linear_types(model, "lm_head") == {"Linear"}
    projector = [p for n, p in model.named_parameters() if "multi_modal_projector.modules_to_save" in n]
    assert projector and all(p.dtype == torch.float32 and p.requires_grad for p in projector)


def test_training_changes_the_adapter_and_the_projector_only(run):
    changed = run["changed"]
    assert any("language_model" in n and "lora_" in n for n in changed)
    assert any("multi_modal_projector.modules_to_save" in n for n in changed)
    assert all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in changed)
    assert len(losses(run["trainer"])) == 3


def test_checkpoint_and_final_folder_reload(run):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    from hf_llava import HfLlavaForConditionalGeneration, HfLlavaProcessor
    from hf_llava.training.model import QUANTIZATION_SKIP_MODULES

    checkpoint = run["out"] / "checkpoint-3"
    processor = HfLlavaProcessor.from_pretrained(checkpoint)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = logits(run["trainer"].model, processor).float()
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
                                          llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES)
        base = HfLlavaForConditionalGeneration.from_pretrained(run["root"] / "base", quantization_config=quantization)
        reloaded = PeftModel.from_pretrained(base, checkpoint)
        torch.testing.assert_close(logits(reloaded, processor).float(), expected)
    # the final folder: the adapter merged onto the full-precision base, an ordinary unquantised checkpoint
    merged = AutoModelForImageTextToText.from_pretrained(run["out"], trust_remote_code=True)
    assert linear_types(merged, "language_model") == {"Linear"}
    assert "QLoRA adapter" in (run["out"] / "README.md").read_text()
    full_precision = PeftModel.from_pretrained(HfLlavaForConditionalGeneration.from_pretrained(run["root"] / "base"),
                                               run["out"] / "adapter")
    merged_logits = logits(merged, processor)
    torch.testing.assert_close(merged_logits, logits(full_precision, processor), atol=1e-4, rtol=1e-4)
    # ... which differs from the 4-bit training model only by the NF4 rounding of the LLM
    assert (merged_logits - expected).abs().mean() < 0.2 * expected.std()  # measured: 0.011 vs std 0.16


def test_qlora_needs_use_peft_and_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="set use_peft true"):
        sft.main(base_args({"data": str(tmp_path)}, tmp_path, "--load_in_4bit", "true", "--stage", "2"))
    with pytest.raises(ValueError, match="not supported"):
        sft.main(base_args({"data": str(tmp_path)}, tmp_path, "--load_in_8bit", "true", "--stage", "2",
                           "--use_peft", "true", "--model_name_or_path", str(tmp_path)))
