"""Tiny random models, tokenizers and processors for tests (no network, seconds on a CPU). The sizes and the
tokenizer come from `hf_llava.tiny`, which the demo's --quick run uses as well.
"""

import numpy as np
from PIL import Image

from ..tiny import IMAGE_TOKEN, TEXT_CONFIGS, VISION_CONFIGS, tiny_tokenizer

__all__ = [
    "IMAGE_TOKEN", "TEXT_CONFIGS", "VISION_CONFIGS", "random_image", "run_without_hf_llava", "tiny_config",
    "tiny_image_processor", "tiny_llava", "tiny_processor", "tiny_tokenizer",
]


def tiny_config(
    text_model_type: str = "llama",
    vision_model_type: str = "clip_vision_model",
    vocab_size: int | None = None,
    **overrides,
):
    """An HfLlavaConfig with tiny towers; `overrides` go to HfLlavaConfig (e.g. projector_type)."""
    from .. import HfLlavaConfig

    tokenizer = tiny_tokenizer(chat_template=None)
    text = dict(TEXT_CONFIGS[text_model_type], model_type=text_model_type,
                vocab_size=vocab_size or len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(VISION_CONFIGS[vision_model_type], model_type=vision_model_type)
    defaults = dict(image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    if "siglip" in vision_model_type:
        defaults["vision_feature_select_strategy"] = "full"
    return HfLlavaConfig(vision_config=vision, text_config=text, **{**defaults, **overrides})


def tiny_image_processor(config, pad_to_square: bool = False):
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    size = config.vision_config.image_size
    if "siglip" in config.vision_config.model_type:
        return SiglipImageProcessorPil(size={"height": size, "width": size})
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tiny_processor(config, chat_template: str = "vicuna_v1", pad_to_square: bool = False):
    """The processor that matches `config` (image size, image_seq_length, tokenizer)."""
    from .. import HfLlavaProcessor
    from ..chat_templates import get_chat_template

    return HfLlavaProcessor(
        image_processor=tiny_image_processor(config),
        tokenizer=tiny_tokenizer(chat_template=None),
        chat_template=get_chat_template(chat_template),
        image_seq_length=config.image_seq_length,
        pad_to_square=pad_to_square,
    )


def tiny_llava(seed: int = 0, chat_template: str = "vicuna_v1", **config_kwargs):
    """A (model, processor) pair with random weights, in eval mode."""
    import torch

    from .. import HfLlavaForConditionalGeneration

    config = tiny_config(**config_kwargs)
    torch.manual_seed(seed)
    model = HfLlavaForConditionalGeneration(config).eval()
    return model, tiny_processor(config, chat_template=chat_template)


def random_image(seed: int = 0, size: tuple[int, int] = (40, 32)) -> Image.Image:
    """A noise RGB image, different per seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


_BLOCK_HF_LLAVA = '''
import importlib.abc, sys
class _BlockHfLlava(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "hf_llava" or name.startswith("hf_llava."):
            raise ImportError("hf_llava is blocked in this process (remote-code test)")
sys.meta_path.insert(0, _BlockHfLlava())
'''


def run_without_hf_llava(script: str, *args: str, timeout: float = 300):
    """Run `script` in a fresh Python where `import hf_llava` fails, as on a machine that only has transformers.

    Returns the CompletedProcess; raises with the child's stderr when it fails.
    """
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_HF_LLAVA + script, *args],
        capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result
