"""Tiny pretrained-looking source checkpoints on disk (random weights) for `hf-llava build` and demo tests."""

from pathlib import Path

import torch

from hf_llava.chat_templates import get_chat_template
from hf_llava.testing import TEXT_CONFIGS, VISION_CONFIGS, tiny_tokenizer
from hf_llava.training.model import save_random_clip_tower

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "what", "is", "a", "red", "circle", "?", "."]


def word_tokenizer():
    """A Qwen2-like word-level tokenizer WITHOUT `<image>` and without a pad token; ChatML template built in."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
        extra_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = get_chat_template("chatml")  # has {% generation %}: build may take it as is
    return tokenizer


def save_llm(path: Path, model_type: str, tokenizer, tie: bool = False, extra_vocab: int = 0, seed: int = 0,
             **overrides) -> Path:
    """A random causal LM of `TEXT_CONFIGS[model_type]` (+ `overrides`) whose vocabulary is len(tokenizer) + extra_vocab."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {**TEXT_CONFIGS[model_type], **overrides}
    config = AutoConfig.for_model(model_type, **sizes, vocab_size=len(tokenizer) + extra_vocab,
                                  tie_word_embeddings=tie, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_llama(path: Path, **overrides) -> Path:
    """Untied Llama with the tiny BPE tokenizer (has `<image>`, no chat template), vocabulary padded by 3 rows."""
    return save_llm(path, "llama", tiny_tokenizer(chat_template=None), extra_vocab=3, **overrides)


def save_qwen2(path: Path) -> Path:
    """Tied Qwen2 with `word_tokenizer()`; transformers' Qwen2Tokenizer adds its own pad token on loading."""
    return save_llm(path, "qwen2", word_tokenizer(), tie=True, seed=1)


def save_mistral(path: Path) -> Path:
    """Untied Mistral with `word_tokenizer()`: `<image>` must be added, embeddings grown, pad chosen (unk)."""
    return save_llm(path, "mistral", word_tokenizer(), seed=4)


def save_full_clip(path: Path, seed: int = 0) -> Path:
    """A full CLIPModel (text + vision halves) with its image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    vision = VISION_CONFIGS["clip_vision_model"]
    text = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    size = vision["image_size"]
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return path


def save_clip_vision(path: Path) -> Path:
    return save_random_clip_tower(path, seed=2, **VISION_CONFIGS["clip_vision_model"])


def save_siglip_vision(path: Path) -> Path:
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**VISION_CONFIGS["siglip_vision_model"])
    torch.manual_seed(3)
    SiglipVisionModel(config).save_pretrained(path)
    SiglipImageProcessorPil(size={"height": config.image_size, "width": config.image_size}).save_pretrained(path)
    return path
