"""Tiny random-model sizes and a small tokenizer: `hf-llava demo --quick` (the CI smoke run) and the tests.

The tokenizer is a byte-level BPE trained on a few built-in sentences, so it encodes any text and behaves like a
Llama tokenizer (BOS added, `</s>` as EOS, `<image>` and ChatML markers as special tokens). Nothing here downloads.
"""

from functools import cache

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

    from .chat_templates import get_chat_template

    source = _tokenizer_json() if image_token else _tokenizer_json().replace(f'"{IMAGE_TOKEN}"', '"<unused0>"')
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(source),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN} if image_token else {},
    )
    if chat_template is not None:
        tokenizer.chat_template = get_chat_template(chat_template)
    return tokenizer
