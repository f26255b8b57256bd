"""hf-llava: LLaVA (Visual Instruction Tuning) as a HuggingFace-native package.

Design notes
- The three remote-code files (configuration_/modeling_/processing_hf_llava.py) are flat siblings that import only
  each other and public libraries; the Hub copies them next to config.json.
- Heavy imports (torch, transformers) are lazy so that `import hf_llava.data` and the CLI's `--help` stay fast.
- Importing any model class registers `hf_llava` with the Auto classes, so checkpoints load without
  `trust_remote_code` inside a process that has this package.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "HfLlavaConfig": "configuration_hf_llava",
    "HfLlavaModel": "modeling_hf_llava",
    "HfLlavaForConditionalGeneration": "modeling_hf_llava",
    "HfLlavaPreTrainedModel": "modeling_hf_llava",
    "HfLlavaProcessor": "processing_hf_llava",
    "MultimodalCollator": "collator",
}
_registered = False


def register_auto_classes() -> None:
    """Register `hf_llava` with AutoConfig/AutoModel*/AutoProcessor (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from .configuration_hf_llava import HfLlavaConfig
    from .modeling_hf_llava import HfLlavaForConditionalGeneration, HfLlavaModel
    from .processing_hf_llava import HfLlavaProcessor

    AutoConfig.register(HfLlavaConfig.model_type, HfLlavaConfig, exist_ok=True)
    AutoModel.register(HfLlavaConfig, HfLlavaModel, exist_ok=True)
    AutoModelForCausalLM.register(HfLlavaConfig, HfLlavaForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(HfLlavaConfig, HfLlavaForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(HfLlavaConfig, HfLlavaProcessor, exist_ok=True)
    _registered = True


def __getattr__(name):
    if name in _LAZY:
        module = import_module(f".{_LAZY[name]}", __name__)
        register_auto_classes()
        return getattr(module, name)
    raise AttributeError(f"module 'hf_llava' has no attribute {name!r}")


__all__ = [*_LAZY, "register_auto_classes", "__version__"]
