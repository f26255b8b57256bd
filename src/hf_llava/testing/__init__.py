"""Tiny random models, tokenizers and processors for tests and smoke runs (no network, seconds on a CPU).

The tokenizer is a byte-level BPE trained on a few built-in sentences, so it encodes any text and behaves like a
Llama tokenizer (BOS added, `</s>` as EOS, `<image>` and ChatML markers as special tokens).
"""

from functools import cache

import numpy as np
from PIL import Image

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: A red circle and a blue square on a white background.",
    "Describe the picture in detail. There are two shapes: a green triangle at the top left.",
    "How many objects are there? Three. What colour is the square? It is yellow.",
    "[INST] <<SYS>> You are a helpful language and vision assistant. <</SYS>> [/INST]",
    "system user assistant Question Answer the question using a single word or phrase.",
    "left right top bottom centre middle small large big tiny purple orange black gray",
    "0 1 2 3 4 5 6 7 8 9 yes no . , ? ! : ; ' \" ( ) [ ] { } - _ / \\ \n",
]

TEXT_CONFIGS = {
    "llama": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512),
    "mistral": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=512, sliding_window=None),
    "qwen2": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512),
}
VISION_CONFIGS = {
    "clip_vision_model": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                              image_size=28, patch_size=7),
    "siglip_vision_model": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                                image_size=28, patch_size=7),
}


@cache
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer.to_str()


def tiny_tokenizer(chat_template: str | None = "vicuna_v1", image_token: bool = True):
    """A fresh small byte-level BPE tokenizer (400 tokens) with `<image>` as a special token.

    `image_token=False` renames that slot to `<unused0>`: a Vicuna-like tokenizer that never saw `<image>`, as in
    original LLaVA checkpoints."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from ..chat_templates import get_chat_template

    source = _tokenizer_json() if image_token else _tokenizer_json().replace(f'"{IMAGE_TOKEN}"', '"<unused0>"')
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(source),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN} if image_token else {},
    )
    if chat_template is not None:
        tokenizer.chat_template = get_chat_template(chat_template)
    return tokenizer


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
