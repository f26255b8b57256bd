"""`hf-llava convert`: move checkpoints between hf_llava, transformers' native llava and the original LLaVA layout.

Design notes
- hf_llava's module tree is transformers' `LlavaForConditionalGeneration`'s, so llava-hf <-> hf_llava renames nothing:
  the source is loaded with its own class (transformers then reads every historical key layout of it), its state dict
  goes unchanged into the target class (`from_pretrained(None, config=..., state_dict=...)`, strict: a missing,
  unexpected or mis-shaped weight is an error) and the target is written with `save_pretrained` (safetensors; the
  hf_llava remote-code files are copied because its classes set `_auto_class`).
- Native llava has exactly one projector (Linear, act, Linear): only `mlp2x_gelu` exports; anything else is an error,
  never a silently different model. Exports carry no `auto_map`, so they load without remote code (vLLM, SGLang...).
- Original LLaVA (`LlavaLlamaForCausalLM`) needs real renames (`model.layers` -> `model.language_model.layers`,
  `model.mm_projector.{0,2}` -> `model.multi_modal_projector.linear_{1,2}`), an `<image>` token (it spliced image
  features at the sentinel id -200 instead) with embedding rows set to the mean of the existing rows, and a vision
  tower: its own `model.vision_tower.vision_tower.*` keys if present, else the weights of `--vision-tower` or of the
  checkpoint's `mm_vision_tower` (a local CLIP directory, or a Hub id for users with network).
- Foreign weights are read from safetensors first; `.bin` only through `torch.load(weights_only=True)`.
- Every expected failure is a `ConversionError` (a `UserError`) naming the file and what is wrong; `hf-llava` prints
  it and exits with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .checkpoint import checkpoint_kind, save_checkpoint
from .errors import UserError

LLAVA_HF = "llava-hf"
ORIGINAL = "llava"
NATIVE_PROJECTOR = "mlp2x_gelu"
IMAGE_TOKEN = "<image>"
DEFAULT_ORIGINAL_TEMPLATE = "vicuna_v1"
# Original LLaVA `model_type` -> the transformers model_type of its language model.
ORIGINAL_TEXT_TYPES = {"llava": "llama", "llava_llama": "llama"}
# Original LLaVA config fields that are not the language model's (the `mm_*` fields are dropped too).
ORIGINAL_ONLY_FIELDS = {
    "architectures", "model_type", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
    "image_aspect_ratio", "image_grid_pinpoints", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
    "tune_mm_vision_resampler", "unfreeze_mm_vision_tower", "use_mm_proj", "tokenizer_padding_side",
    "tokenizer_model_max_length",
}
SELECT_FEATURE_STRATEGIES = {"patch": "default", "cls_patch": "full"}
ORIGINAL_TOWER_PREFIX = "model.vision_tower.vision_tower."
ORIGINAL_PROJECTOR_KEY = re.compile(r"^model\.mm_projector\.(?:(\d+)\.)?(weight|bias)$")
# (index file, single file) per format, safetensors first.
WEIGHT_FILES = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]


class ConversionError(UserError):
    """A checkpoint that cannot be converted as asked; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------------- helpers
def read_config(src: str | Path) -> dict:
    path = Path(src) / "config.json"
    if not Path(src).is_dir():
        raise ConversionError(f"{src}: no such folder")
    if not path.is_file():
        raise ConversionError(f"{src}: no config.json, so this is not a checkpoint directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: not valid JSON ({error})") from error


LAYOUT_HINTS = {
    "hf_llava": "an hf_llava checkpoint (export it with --to llava-hf)",
    "original_llava": "an original LLaVA checkpoint (use --from llava)",
    "native_llava": "a transformers-native llava checkpoint (use --from llava-hf)",
}


def _describe_layout(config: dict) -> str:
    """Which flag a checkpoint's config.json calls for, to point users at it."""
    kind = checkpoint_kind(config)
    if kind in LAYOUT_HINTS:
        return LAYOUT_HINTS[kind]
    return f"model_type {config.get('model_type')!r}, none of hf_llava, native llava or original LLaVA"


def _require_layout(src, config: dict, wanted: str, matches: bool) -> None:
    if not matches:
        raise ConversionError(f"{Path(src) / 'config.json'}: expected {wanted}, found {_describe_layout(config)}")


def load_weights(src: str | Path) -> dict:
    """All tensors of a checkpoint directory: safetensors (single or sharded) first, else `.bin` (weights_only)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    src = Path(src)
    for index_name, single_name in WEIGHT_FILES:
        if (src / index_name).is_file():
            weight_map = json.loads((src / index_name).read_text())["weight_map"]
            files = [src / name for name in dict.fromkeys(weight_map.values())]
        elif (src / single_name).is_file():
            files = [src / single_name]
        else:
            continue
        state_dict = {}
        for file in files:
            if not file.is_file():
                raise ConversionError(f"{src / index_name}: lists {file.name}, which is missing")
            if file.suffix == ".safetensors":
                try:
                    state_dict.update(load_file(file))
                except SafetensorError as error:  # e.g. a truncated download
                    raise ConversionError(f"{file}: not a readable safetensors file ({error})") from error
                continue
            try:
                state_dict.update(torch.load(file, map_location="cpu", weights_only=True))
            except Exception as error:  # UnpicklingError and friends: report which file, never retry unsafely
                raise ConversionError(
                    f"{file}: cannot be read as plain tensors with torch.load(weights_only=True) ({error}); "
                    "arbitrary pickled objects are never loaded"
                ) from error
        return state_dict
    expected = ", ".join(name for pair in WEIGHT_FILES for name in pair)
    raise ConversionError(f"{src}: no weights found (looked for {expected})")


def _build(model_class, config, state_dict: dict, dtype, source: str):
    """`model_class` with exactly `state_dict` as its weights (no random init; any key mismatch is an error)."""
    model, info = model_class.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=dtype, output_loading_info=True
    )
    problems = [f"{kind}: {sorted(map(str, keys))[:5]}" for kind, keys in info.items() if keys]
    if problems:
        raise ConversionError(f"{source}: the weights do not fit {model_class.__name__} ({'; '.join(problems)})")
    return model.eval()


def _chat_template(name: str | None, fallback: str | None) -> str | None:
    if name is None:
        return fallback
    from .chat_templates import get_chat_template

    try:
        return get_chat_template(name)
    except ValueError as error:
        raise ConversionError(str(error)) from error


def _save_native(model, processor, out: str | Path) -> Path:
    """Plain transformers files for the native export (no remote code, no hf_llava model card)."""
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------ llava-hf -> hf_llava
def from_llava_hf(src: str | Path, out: str | Path, chat_template: str | None = None) -> Path:
    """Convert a transformers-native llava checkpoint (model + LlavaProcessor) to hf_llava; returns `out`.

    `chat_template` names one of hf_llava's templates; by default the source processor's template is kept.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from . import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor

    raw = read_config(src)
    _require_layout(src, raw, "a transformers-native llava checkpoint", checkpoint_kind(raw) == "native_llava")
    native = LlavaForConditionalGeneration.from_pretrained(src, dtype="auto")
    source = native.config
    config = HfLlavaConfig(
        vision_config=source.vision_config,
        text_config=source.text_config,
        image_token_id=source.image_token_id,
        vision_feature_layer=source.vision_feature_layer,
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        projector_type=NATIVE_PROJECTOR,
        projector_bias=source.multimodal_projector_bias,
        projector_hidden_act=source.projector_hidden_act,
        tie_word_embeddings=source.tie_word_embeddings,
    )
    model = _build(HfLlavaForConditionalGeneration, config, native.state_dict(), native.dtype, str(src))
    model.generation_config = native.generation_config
    try:
        native_processor = AutoProcessor.from_pretrained(src)
    except OSError as error:
        raise ConversionError(f"{src}: cannot load its processor (tokenizer + image processor): {error}") from error
    processor = HfLlavaProcessor(
        image_processor=native_processor.image_processor,
        tokenizer=native_processor.tokenizer,
        chat_template=_chat_template(chat_template, native_processor.chat_template),
        image_token=native_processor.image_token,
        image_seq_length=config.image_seq_length,
    )
    description = f"Converted from the transformers-native llava checkpoint `{src}` with `hf-llava convert --from llava-hf`."
    return save_checkpoint(model, processor, out, description=description)


# ------------------------------------------------------------------------------------------------ hf_llava -> llava-hf
def to_llava_hf(src: str | Path, out: str | Path, chat_template: str | None = None) -> Path:
    """Export an hf_llava checkpoint to transformers' native llava (loads without remote code); returns `out`."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaImageProcessorPil, LlavaProcessor

    from . import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor
    from .configuration_hf_llava import vision_tower_has_cls

    raw = read_config(src)
    _require_layout(src, raw, "an hf_llava checkpoint", checkpoint_kind(raw) == "hf_llava")
    config = HfLlavaConfig.from_pretrained(src)
    if config.projector_type != NATIVE_PROJECTOR:
        raise ConversionError(
            f"{Path(src) / 'config.json'}: projector_type {config.projector_type!r} has no native llava equivalent "
            f"(LlavaForConditionalGeneration only has the {NATIVE_PROJECTOR!r} projector: Linear, "
            f"{config.projector_hidden_act}, Linear); keep this checkpoint in the hf_llava format"
        )
    if config.image_position_embedding_std > 0:
        raise ConversionError(
            f"{Path(src) / 'config.json'}: image_position_embedding_std={config.image_position_embedding_std} means "
            "its projector adds a learned vector per image token position, which native llava's projector does not "
            "have; keep this checkpoint in the hf_llava format"
        )
    model = HfLlavaForConditionalGeneration.from_pretrained(src, dtype="auto")
    native_config = LlavaConfig(
        vision_config=config.vision_config,
        text_config=config.text_config,
        image_token_index=config.image_token_id,
        image_seq_length=config.image_seq_length,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.projector_bias,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    native = _build(LlavaForConditionalGeneration, native_config, model.state_dict(), model.dtype, str(src))
    native.generation_config = model.generation_config

    processor = HfLlavaProcessor.from_pretrained(src)
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    # Loaded components remember hf_llava's auto_map, which would send AutoProcessor looking for remote code.
    vars(image_processor).pop("auto_map", None)
    tokenizer.init_kwargs.pop("auto_map", None)
    if processor.pad_to_square:  # native llava pads (with the image-mean colour) in its own image processor
        settings = {key: value for key, value in image_processor.to_dict().items() if key != "image_processor_type"}
        image_processor = LlavaImageProcessorPil(**settings, do_pad=True)
    native_processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=_chat_template(chat_template, processor.chat_template),
        image_token=processor.image_token,
        num_additional_image_tokens=int(vision_tower_has_cls(config.vision_config)),
    )
    return _save_native(native, native_processor, out)


# ------------------------------------------------------------------------------------------- original LLaVA -> hf_llava
def _vision_tower_config(name: str, origin: str):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"cannot load the vision tower {name!r} ({origin}): {error}. Pass --vision-tower with a local CLIP "
            "directory (config.json, weights, preprocessor_config.json) or a Hub id reachable from this machine"
        ) from error
    return getattr(config, "vision_config", config)  # a full CLIP config: its vision half


def _vision_tower_weights(vision_config, name: str, embedded: dict, origin: str, dtype) -> dict:
    """Vision tower state dict (runtime key names) from the checkpoint's own keys, else from `name`."""
    from transformers import MODEL_MAPPING

    tower_class = MODEL_MAPPING[type(vision_config)]  # e.g. CLIPVisionModel
    if embedded:
        tower = _build(tower_class, vision_config, embedded, dtype, f"{origin}: its {ORIGINAL_TOWER_PREFIX}* weights")
    else:
        tower, info = tower_class.from_pretrained(name, config=vision_config, dtype=dtype, output_loading_info=True)
        if info["missing_keys"] or info["mismatched_keys"]:
            raise ConversionError(
                f"vision tower {name!r}: weights missing or mis-shaped for {type(tower).__name__}: "
                f"{sorted(map(str, info['missing_keys'] | set(info['mismatched_keys'])))[:5]}"
            )
    return tower.state_dict()


def _image_processor(name: str, vision_config):
    """The tower's own image processor (what original LLaVA used); CLIP defaults at the tower's size if it has none."""
    from transformers import AutoImageProcessor, CLIPImageProcessorPil

    try:
        return AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        size = vision_config.image_size
        print(f"note: {name!r} has no image processor; using CLIP's defaults at {size}px", file=sys.stderr)
        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _split_original_weights(weights: dict, config_path: Path) -> tuple[dict, dict, dict]:
    """(language model, projector, vision tower) state dicts of an original checkpoint, in hf_llava key names
    (the tower's keys are relative to the tower, for its own class to read)."""
    text, projector, tower = {}, {}, {}
    for key, tensor in weights.items():
        if key.endswith("rotary_emb.inv_freq"):  # a buffer old transformers versions saved; recomputed at load
            continue
        if key.startswith(ORIGINAL_TOWER_PREFIX):
            tower[key.removeprefix(ORIGINAL_TOWER_PREFIX)] = tensor
        elif match := ORIGINAL_PROJECTOR_KEY.match(key):
            index = int(match.group(1) or 0)  # Sequential(Linear, GELU, Linear, ...): Linears at even indices
            projector[f"model.multi_modal_projector.linear_{index // 2 + 1}.{match.group(2)}"] = tensor
        elif key.startswith("model."):
            text["model.language_model." + key.removeprefix("model.")] = tensor
        elif key == "lm_head.weight":
            text[key] = tensor
        else:
            raise ConversionError(f"{config_path.parent}: unexpected weight {key!r} for an original LLaVA checkpoint")
    return text, projector, tower


def _add_image_token(tokenizer, text: dict) -> int:
    """Give the tokenizer `<image>` (and pad = unk, as original LLaVA did) and the embeddings a row for it."""
    import torch

    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None and tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in text and text[key].shape[0] < len(tokenizer):
            rows = text[key]
            mean = rows.float().mean(0, keepdim=True).to(rows.dtype)
            text[key] = torch.cat([rows, mean.expand(len(tokenizer) - rows.shape[0], -1)])
    return text["model.language_model.embed_tokens.weight"].shape[0]


def from_llava(
    src: str | Path,
    out: str | Path,
    vision_tower: str | None = None,
    chat_template: str = DEFAULT_ORIGINAL_TEMPLATE,
) -> Path:
    """Convert an original LLaVA checkpoint (`LlavaLlamaForCausalLM`, `mm_*` config fields) to hf_llava.

    `vision_tower` (local CLIP directory or Hub id) overrides the checkpoint's `mm_vision_tower`; its weights are used
    only when the checkpoint has no vision tower weights of its own. Returns `out`.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from . import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor

    src = Path(src)
    raw = read_config(src)
    config_path = src / "config.json"
    _require_layout(src, raw, "an original LLaVA checkpoint", checkpoint_kind(raw) == "original_llava")
    text_type = ORIGINAL_TEXT_TYPES.get(raw.get("model_type"))
    if text_type is None:
        raise ConversionError(
            f"{config_path}: model_type {raw.get('model_type')!r} is not supported; "
            f"supported: {', '.join(ORIGINAL_TEXT_TYPES)} (LLaVA with a Llama/Vicuna language model)"
        )
    if raw.get("mm_use_im_start_end"):
        raise ConversionError(f"{config_path}: mm_use_im_start_end=true (<im_start>/<im_end> image markers) "
                              "is not supported")
    aspect = raw.get("image_aspect_ratio") or "square"
    if "anyres" in aspect:
        raise ConversionError(f"{config_path}: image_aspect_ratio {aspect!r} is LLaVA-NeXT tiling, not supported")
    select_feature = raw.get("mm_vision_select_feature", "patch")
    if select_feature not in SELECT_FEATURE_STRATEGIES:
        raise ConversionError(f"{config_path}: mm_vision_select_feature {select_feature!r} is not one of "
                              f"{', '.join(SELECT_FEATURE_STRATEGIES)}")
    if "mm_vision_select_layer" not in raw:
        raise ConversionError(f"{config_path}: no mm_vision_select_layer (which CLIP layer feeds the projector)")

    tower_name = vision_tower or raw["mm_vision_tower"]
    origin = "given with --vision-tower" if vision_tower else f"named by mm_vision_tower in {config_path}"
    vision_config = _vision_tower_config(tower_name, origin)

    text, projector, embedded_tower = _split_original_weights(load_weights(src), config_path)
    if "model.language_model.embed_tokens.weight" not in text:
        raise ConversionError(f"{src}: no model.embed_tokens.weight, so not an original LLaVA language model")
    dtype = text["model.language_model.embed_tokens.weight"].dtype
    tower = _vision_tower_weights(vision_config, tower_name, embedded_tower, str(src), dtype)
    tokenizer = AutoTokenizer.from_pretrained(src)
    vocab_size = _add_image_token(tokenizer, text)

    text_fields = {k: v for k, v in raw.items() if k not in ORIGINAL_ONLY_FIELDS and not k.startswith("mm_")}
    try:
        config = HfLlavaConfig(
            vision_config=vision_config,
            text_config=AutoConfig.for_model(text_type, **{**text_fields, "vocab_size": vocab_size}),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            vision_feature_layer=raw["mm_vision_select_layer"],
            vision_feature_select_strategy=SELECT_FEATURE_STRATEGIES[select_feature],
            projector_type=raw.get("mm_projector_type", "linear"),  # original LLaVA's default
            projector_bias=True,
        )
    except ValueError as error:
        raise ConversionError(f"{config_path}: {error}") from error
    if raw.get("mm_hidden_size", config.projector_input_size) != config.projector_input_size:
        raise ConversionError(
            f"{config_path}: mm_hidden_size={raw['mm_hidden_size']} but the vision tower {tower_name!r} gives "
            f"{config.projector_input_size}-d features: wrong --vision-tower?"
        )
    state_dict = {**text, **projector, **{f"model.vision_tower.{k}": v for k, v in tower.items()}}
    model = _build(HfLlavaForConditionalGeneration, config, state_dict, dtype, str(src))
    if (src / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(src)
    processor = HfLlavaProcessor(
        image_processor=_image_processor(tower_name, vision_config),
        tokenizer=tokenizer,
        chat_template=_chat_template(chat_template, None),
        image_token=IMAGE_TOKEN,
        image_seq_length=config.image_seq_length,
        pad_to_square=aspect == "pad",
    )
    description = f"Converted from the original LLaVA checkpoint `{src}` with `hf-llava convert --from llava`."
    return save_checkpoint(model, processor, out, description=description)


# ----------------------------------------------------------------------------------------------------------------- CLI
EXAMPLES = """\
examples:
  # transformers-native llava (e.g. llava-hf/llava-1.5-7b-hf downloaded to a folder) -> hf_llava
  hf-llava convert --from llava-hf ./llava-1.5-7b-hf ./llava-1.5-7b-hf_llava

  # hf_llava -> native llava: loads with LlavaForConditionalGeneration / vLLM / SGLang, no remote code
  # (only for projector_type mlp2x_gelu)
  hf-llava convert --to llava-hf ./my-hf_llava ./my-llava-hf

  # original LLaVA (haotian-liu/LLaVA, LlavaLlamaForCausalLM) -> hf_llava; the vision tower comes from the
  # checkpoint's own weights if present, else from --vision-tower (default: its mm_vision_tower)
  hf-llava convert --from llava ./llava-v1.5-7b ./llava-v1.5-7b-hf_llava \\
      --vision-tower ./clip-vit-large-patch14-336 --chat-template vicuna_v1
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert checkpoints between hf_llava, transformers' native llava and original LLaVA",
        description="Convert a checkpoint directory SRC into OUT. Logits of the result equal the source's; weights "
        "are written as safetensors with save_pretrained.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source_format", choices=[LLAVA_HF, ORIGINAL],
                           help="convert FROM this layout to hf_llava: llava-hf (transformers' LlavaForConditional"
                           "Generation + LlavaProcessor) or llava (original LlavaLlamaForCausalLM)")
    direction.add_argument("--to", dest="target_format", choices=[LLAVA_HF],
                           help="convert an hf_llava checkpoint TO this layout")
    parser.add_argument("src", metavar="SRC", help="source checkpoint directory")
    parser.add_argument("out", metavar="OUT", help="output directory (written only when the conversion succeeded)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    parser.add_argument("--vision-tower", metavar="PATH_OR_ID",
                        help="--from llava only: CLIP vision tower (config, image processor and, when the checkpoint "
                        "has no vision weights, weights); default: the checkpoint's mm_vision_tower")
    parser.add_argument("--chat-template", metavar="NAME",
                        help=f"chat template by name (hf_llava.chat_templates); default: the source's own, "
                        f"{DEFAULT_ORIGINAL_TEMPLATE} for original LLaVA checkpoints (they ship none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .checkpoint import staged_output

    if args.vision_tower and args.source_format != ORIGINAL:
        raise ConversionError("--vision-tower only applies to --from llava")
    sources = [args.src, *([args.vision_tower] if args.vision_tower else [])]
    with staged_output(args.out, overwrite=args.overwrite, sources=sources) as staging:
        if args.source_format == LLAVA_HF:
            from_llava_hf(args.src, staging, chat_template=args.chat_template)
        elif args.source_format == ORIGINAL:
            from_llava(args.src, staging, vision_tower=args.vision_tower,
                       chat_template=args.chat_template or DEFAULT_ORIGINAL_TEMPLATE)
        else:
            to_llava_hf(args.src, staging, chat_template=args.chat_template)
    print(f"wrote {args.out}")
    return 0


__all__ = ["ConversionError", "add_parser", "from_llava", "from_llava_hf", "load_weights", "to_llava_hf"]
