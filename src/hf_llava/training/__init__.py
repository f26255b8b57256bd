"""Training glue for recipes/sft.py (TRL SFTTrainer + MultimodalCollator), one concern per module:

arguments      `LlavaArguments` (+ `DatasetSpec`), parsed next to TRL's SFTConfig and ModelConfig
data           dataset mixtures of canonical rows (save_to_disk folders, Hub ids, LLaVA JSON), weighted; stage 1
               refuses (or skips) text-only rows
feature_cache  a frozen tower's image features computed once and memory-mapped (`cache_image_features`)
sampler        modality-length grouped batches (`group_by_modality_length`)
model          compose or load the model (4-bit LLM for QLoRA), freeze per stage, LoRA config restricted to the LLM
trainer        `LlavaSFTTrainer`: SFTTrainer with a separate projector learning rate and the grouped sampler
save           the final merged checkpoint (through `save_checkpoint`) and its push to the Hub
"""

from .arguments import DatasetSpec, LlavaArguments
from .data import load_mixture, require_images
from .feature_cache import ImageFeatureCache, cache_image_features
from .model import load_model_and_processor, lora_config, prepare_quantized, set_trainable
from .save import save_final
from .trainer import LlavaSFTTrainer

__all__ = [
    "DatasetSpec", "ImageFeatureCache", "LlavaArguments", "LlavaSFTTrainer", "cache_image_features", "load_mixture",
    "load_model_and_processor", "lora_config", "prepare_quantized", "require_images", "save_final", "set_trainable",
]
