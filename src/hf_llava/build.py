"""`hf-llava build`: compose an untrained HfLlava checkpoint from a pretrained vision tower and a pretrained LLM.

Design notes
- Each source is loaded with its own class (only the vision half of a full CLIP/SigLIP checkpoint) and any weight
  the checkpoint lacks is an error: a silently random tower is the worst possible outcome of a build.
- The composite is created on the meta device and the loaded modules are moved into it, not copied, so building a
  7B model needs no second copy of its weights. Only the projector is freshly initialised.
- `<image>` becomes a special token when the tokenizer lacks it (a missing pad token becomes unk, as in original
  LLaVA, else eos); embeddings grow only when the vocabulary is really too small, so padded vocabularies (Qwen2) keep
  their size. New rows are the mean of the old ones (as `hf-llava convert` does); existing rows are untouched, so
  text-only logits equal the source LLM's.
- The chat template is a named one from `hf_llava.chat_templates`, or the LLM tokenizer's own when it marks
  assistant answers with `{% generation %}` (the loss mask comes from the template); anything else is an error.
- `--llm smollm2` is the bundled SmolLM2-135M-Instruct (see `hf_llava.smollm2`).
"""

import argparse
import re
from pathlib import Path

from .errors import UserError, check_source

IMAGE_TOKEN = "<image>"


def _check_loading_info(info: dict, source: str, what: str) -> None:
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(
            f"{source} is missing {len(missing)} {what} weight(s) (e.g. {', '.join(missing[:3])}): "
            "they would be randomly initialised. Is it the right checkpoint?"
        )


def load_vision_tower(name_or_path: str, dtype="auto"):
    """(vision tower, image processor) from a CLIP/SigLIP checkpoint, full (text + vision) or vision-only."""
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.utils import logging

    check_source(name_or_path, "vision tower")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:  # no config.json, an unknown model_type, a Hub id that cannot be reached
        raise UserError(f"vision tower {name_or_path}: cannot read its config ({error})") from error
    vision_config = getattr(config, "vision_config", config)
    if not all(hasattr(vision_config, field) for field in ("image_size", "patch_size", "hidden_size")):
        raise UserError(
            f"{name_or_path} is a {config.model_type!r} checkpoint, not a vision tower: expected a CLIP or SigLIP "
            "(vision) model"
        )
    tower_class = MODEL_MAPPING[type(vision_config)]
    # A full CLIP/SigLIP checkpoint's text half shows up as "unexpected" keys: expected here, so not reported.
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        tower, info = tower_class.from_pretrained(name_or_path, dtype=dtype, output_loading_info=True)
    except OSError as error:  # no weights file
        raise UserError(f"vision tower {name_or_path}: cannot load its weights ({error})") from error
    finally:
        logging.set_verbosity(verbosity)
    _check_loading_info(info, name_or_path, "vision tower")
    try:
        image_processor = AutoImageProcessor.from_pretrained(name_or_path)
    except OSError as error:
        raise UserError(
            f"{name_or_path} has no image processor (preprocessor_config.json): save the tower's image processor "
            "next to its weights"
        ) from error
    return tower, image_processor


def resolve_llm(name_or_path: str) -> str:
    """The reserved name `smollm2` means the bundled SmolLM2-135M-Instruct; anything else is a Hub id or a path."""
    from .smollm2 import SMOLLM2, smollm2_path

    return str(smollm2_path()) if name_or_path == SMOLLM2 else name_or_path


def load_llm(name_or_path: str, dtype="auto"):
    """(causal LM, tokenizer) with `<image>` and a pad token in the tokenizer, and a row for `<image>` in the embeddings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_llm(name_or_path)
    check_source(source, "LLM")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:  # without tokenizer files transformers asks for sentencepiece/tiktoken
        raise UserError(f"LLM {source}: cannot load its tokenizer; save it next to the weights ({error})") from error
    try:
        llm, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as error:  # no weights, or a config that is not a causal LM's
        raise UserError(f"LLM {source}: cannot load it as a causal language model ({error})") from error
    _check_loading_info(info, source, "language model")
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:  # original LLaVA padded with unk; eos where there is none
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    grow_embeddings(llm, len(tokenizer))
    llm.config.pad_token_id = llm.generation_config.pad_token_id = tokenizer.pad_token_id
    return llm.eval(), tokenizer


def grow_embeddings(llm, size: int) -> None:
    """Give the input (and untied output) embeddings `size` rows if they have fewer; new rows = mean of the old."""
    import torch

    old = llm.get_input_embeddings().num_embeddings
    if size <= old:
        return
    llm.resize_token_embeddings(size, mean_resizing=False)
    embeddings = [llm.get_input_embeddings().weight, llm.get_output_embeddings().weight]
    with torch.no_grad():
        for weight in {id(w): w for w in embeddings}.values():  # once if tied
            weight[old:] = weight[:old].float().mean(0).to(weight.dtype)


def choose_chat_template(name: str | None, tokenizer) -> str:
    """A named template, or the tokenizer's own if it has `{% generation %}` markers."""
    from .chat_templates import available_templates, get_chat_template

    if name is not None:
        return get_chat_template(name)
    own = tokenizer.chat_template
    if isinstance(own, str) and "{% generation %}" in own.replace("{%-", "{%").replace("-%}", "%}"):
        return own
    reason = "has no chat template" if not own else "has a chat template without {% generation %} markers"
    raise UserError(
        f"The LLM's tokenizer {reason}, so assistant answers cannot be masked for training. Choose a template with "
        f"--chat-template / chat_template= (one of {', '.join(available_templates())}; 'chatml' for <|im_start|> "
        "tokenizers such as Qwen2 or SmolLM2, 'vicuna_v1' or 'llama2' for Llama/Vicuna)"
    )


def build_llava(
    vision_tower: str,
    llm: str,
    projector_type: str = "mlp2x_gelu",
    chat_template: str | None = None,
    vision_feature_layer: int | list[int] = -2,
    vision_feature_select_strategy: str | None = None,
    pad_to_square: bool = False,
    image_position_embedding_std: float = 0.0,
    dtype="auto",
):
    """Compose an untrained (model, processor) from a vision tower and a causal LM (Hub ids or local paths).

    `vision_feature_select_strategy=None` picks "default" (drop CLS) for CLIP-style towers and "full" for SigLIP.
    """
    import torch
    from transformers.modeling_utils import set_zero3_state

    from . import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor  # also registers the Auto classes
    from .configuration_hf_llava import vision_tower_has_cls
    from .modeling_hf_llava import HfLlavaMultiModalProjector

    tower, image_processor = load_vision_tower(vision_tower, dtype)
    language_model, tokenizer = load_llm(llm, dtype)
    template = choose_chat_template(chat_template, tokenizer)
    if vision_feature_select_strategy is None:
        vision_feature_select_strategy = "default" if vision_tower_has_cls(tower.config) else "full"
    try:
        config = HfLlavaConfig(
            vision_config=tower.config,
            text_config=language_model.config,
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            projector_type=projector_type,
            image_position_embedding_std=image_position_embedding_std,
            tie_word_embeddings=bool(language_model.config.tie_word_embeddings),
        )
    except ValueError as error:  # settings that do not fit these towers (the config names the setting)
        raise UserError(f"{vision_tower} + {llm}: {error}") from error

    # a shell whose tower and LLM are replaced by the loaded ones below; under DeepSpeed ZeRO-3 (which partitioned
    # those as they loaded) the shell's own sub-models must not go through zero.Init on the meta device
    with torch.device("meta"), set_zero3_state():
        model = HfLlavaForConditionalGeneration(config)
    if type(language_model.base_model) is not type(model.model.language_model):
        raise UserError(
            f"{llm}: its base model is a {type(language_model.base_model).__name__}, but its config rebuilds a "
            f"{type(model.model.language_model).__name__}; such an LLM cannot be composed"
        )
    model.model.vision_tower = tower
    model.model.language_model = language_model.base_model
    model.lm_head = language_model.get_output_embeddings()
    projector = HfLlavaMultiModalProjector(config).to(language_model.dtype)
    projector.apply(model._init_weights)
    model.model.multi_modal_projector = projector
    model.generation_config = language_model.generation_config
    meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if meta:
        raise RuntimeError(f"build left tensors uninitialised (on the meta device): {meta[:5]}")

    processor = HfLlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_length=config.image_seq_length,
        pad_to_square=pad_to_square,
    )
    return model.eval(), processor


def save_llava(model, processor, out_dir: str | Path) -> Path:
    """Write weights (safetensors), config, processor, chat template and the remote-code files."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def describe(model) -> str:
    """One line per part: parameter counts and where they came from."""
    parts = {
        "vision tower": model.model.vision_tower,
        "projector (new, untrained)": model.model.multi_modal_projector,
        "language model + lm_head": model.model.language_model,
    }
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    if not model.config.tie_word_embeddings:
        counts["language model + lm_head"] += model.lm_head.weight.numel()
    config = model.config
    lines = [f"  {name:<28} {count / 1e6:9.2f} M parameters" for name, count in counts.items()]
    lines.append(
        f"  image: {config.image_seq_length} tokens (<image> id {config.image_token_id}), vision layer "
        f"{config.vision_feature_layer}, strategy {config.vision_feature_select_strategy!r}, projector "
        f"{config.projector_type!r}"
        + (f" + a learned per-position embedding (init std {config.image_position_embedding_std})"
           if config.image_position_embedding_std else "")
    )
    return "\n".join(lines)


def feature_layer(values: list[int]) -> int | list[int]:
    """A command-line/recipe list of layers as the config stores it: one index as an int, several as a list."""
    return values[0] if len(values) == 1 else values


def layer_list(text: str) -> list[int]:
    """`--vision-feature-layer` values: one flag value, comma-separated, so the flag cannot swallow the OUT argument."""
    try:
        return [int(layer) for layer in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer index or a comma-separated list of them") from None


def run(args: argparse.Namespace) -> int:
    from .checkpoint import staged_output

    with staged_output(args.out, overwrite=args.overwrite, sources=[args.vision_tower, args.llm]) as staging:
        model, processor = build_llava(
            args.vision_tower,
            args.llm,
            projector_type=args.projector_type,
            chat_template=args.chat_template,
            vision_feature_layer=feature_layer(args.vision_feature_layer),
            vision_feature_select_strategy=args.select_strategy,
            pad_to_square=args.pad_to_square,
            image_position_embedding_std=args.image_position_embedding_std,
            dtype=args.dtype,
        )
        save_llava(model, processor, staging)
    print(f"Built an untrained HfLlava model from {args.vision_tower} + {args.llm}:\n{describe(model)}")
    print(f"Saved to {args.out} (load with trust_remote_code=True). Train the projector before expecting image answers.")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build",
        help="compose an untrained LLaVA from a vision tower and an LLM",
        description="Compose an untrained HfLlava checkpoint: pretrained vision tower + new projector + pretrained "
        "LLM (its tokenizer gains <image>, embeddings are resized when needed).",
    )
    parser.add_argument("--vision-tower", required=True, help="CLIP/SigLIP checkpoint (Hub id or path), full or vision-only")
    parser.add_argument("--llm", required=True, help="causal LM (Hub id or path), or 'smollm2' for the bundled SmolLM2-135M-Instruct")
    parser.add_argument("--projector-type", default="mlp2x_gelu", help="linear, mlpNx_gelu (default mlp2x_gelu) or identity")
    parser.add_argument("--chat-template", default=None, help="named template (vicuna_v1, plain, chatml, llama2); default: the LLM tokenizer's own if it has {%% generation %%} markers")
    parser.add_argument("--vision-feature-layer", type=layer_list, default=[-2], metavar="N[,N...]", help="vision hidden-state index, or several separated by commas (features concatenated), e.g. -2 or -5,-2; default -2")
    parser.add_argument("--select-strategy", choices=["default", "full"], default=None, help="'default' drops CLS, 'full' keeps all; default: by tower (CLIP default, SigLIP full)")
    parser.add_argument("--pad-to-square", action="store_true", help="pad images to a square with the mean colour (LLaVA-1.5)")
    parser.add_argument("--image-position-embedding-std", type=float, default=0.0, help="> 0: a learned vector per image token position, added to the projector's output (initialised with this std; not in LLaVA or native llava); default 0: none")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype (default: as stored)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    parser.add_argument("out", metavar="OUT", help="output directory (written only when the build succeeded)")
    # argparse reads "-5,-2" as an unknown option (only "-5" passes as a negative number), so
    # `--vision-feature-layer -5,-2` failed with "expected one argument"; take comma-separated negatives as values
    parser._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$")
    parser.set_defaults(func=run)
