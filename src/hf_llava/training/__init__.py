"""Training glue for `hf_llava.training.sft` (TRL SFTTrainer + MultimodalCollator), one concern per module:

sft            the entry point: `main(argv)` parses a recipe, trains, saves (`hf-llava train`, recipes/sft.py)
cli            the `hf-llava train` subcommand
arguments      `LlavaArguments` (+ `DatasetSpec`), parsed next to TRL's SFTConfig and ModelConfig
data           dataset mixtures of canonical rows (save_to_disk folders, Hub ids, LLaVA JSON), weighted; stage 1
               refuses (or skips) text-only rows
feature_cache  a frozen tower's image features computed once and memory-mapped (`cache_image_features`)
sampler        modality-length grouped batches (`group_by_modality_length`)
model          compose or load the model (4-bit LLM for QLoRA), freeze per stage, LoRA config restricted to the LLM
trainer        `LlavaSFTTrainer`: SFTTrainer with a separate projector learning rate and the grouped sampler
save           the final merged checkpoint (through `save_checkpoint`) and its push to the Hub

Names load lazily (as in `hf_llava`): `hf-llava --help` imports the `cli` module, which must not pull in TRL.
"""

from importlib import import_module

_LAZY = {
    "DatasetSpec": "arguments", "LlavaArguments": "arguments", "load_mixture": "data", "require_images": "data",
    "ImageFeatureCache": "feature_cache", "cache_image_features": "feature_cache",
    "load_model_and_processor": "model", "lora_config": "model", "prepare_quantized": "model",
    "set_trainable": "model", "save_final": "save", "LlavaSFTTrainer": "trainer",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
