"""Model assembly for training: compose or load, choose what trains, and the LoRA config.

Design notes
- From parts (`vision_tower` + `llm`) the model is composed by `hf_llava.build.build_llava`; `vision_tower_config`
  first writes a randomly initialised CLIP tower (seeded) and composes from it, so the tower "trained from
  scratch" goes through the same path as a pretrained one. From a checkpoint (`model_name_or_path`) the model and
  processor load as saved; `chat_template` and `pad_to_square`, when set, replace the processor's either way
  (stage 1 trains with `plain`, stage 2 with a conversation template).
- What trains is set by `requires_grad` only: stage 1 the projector, stage 2 projector + LLM (+ lm_head), the
  vision tower only with `tune_vision_tower`. The optimizer sees exactly the trainable parameters.
- LoRA targets are a regex anchored on `model.language_model.`: CLIP/SigLIP towers also have `q_proj`/`v_proj`,
  and a bare name list would put adapters into the vision tower. The default targets are every `nn.Linear` of
  the LLM (LLaVA's "all linears", lm_head excluded). The projector (and a tuned vision tower) go to
  `modules_to_save`, so they are fully trained and stored in every adapter checkpoint.
- QLoRA (`load_in_4bit`, stage 2 from a checkpoint): TRL's `get_quantization_config` (NF4, `use_bnb_nested_quant`
  for double quantisation, compute dtype = `dtype`) plus `llm_int8_skip_modules` with FULL module prefixes, so only
  the LLM's linears become `Linear4bit` (bitsandbytes matches prefixes: a bare `vision_tower` would not match);
  the vision tower, projector and lm_head stay unquantised. `prepare_model_for_kbit_training` freezes everything
  and upcasts the unquantised weights to fp32; the LoRA config then trains the adapter + `modules_to_save`.
"""

import logging
import re
import tempfile
from pathlib import Path

from ..errors import UserError
from .arguments import LlavaArguments

logger = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"
LANGUAGE_MODEL_PREFIX = "model.language_model."
# never quantised: everything but the LLM body (full prefixes, see the notes above)
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def load_model_and_processor(args: LlavaArguments, model_args, seed: int = 0):
    """(model, processor) from parts or from `model_args.model_name_or_path`."""
    from ..chat_templates import get_chat_template

    if model_args.model_name_or_path:
        if args.vision_tower or args.vision_tower_config or args.llm:
            raise UserError("give either model_name_or_path (a checkpoint) or vision_tower/llm (parts), not both")
        model, processor = _load_checkpoint(model_args, args.image_position_embedding_std)
    else:
        if model_args.load_in_4bit:
            raise UserError("QLoRA (load_in_4bit) loads a checkpoint in 4-bit: set model_name_or_path (e.g. stage "
                             "1's output) instead of composing from vision_tower/llm")
        if not (args.vision_tower or args.vision_tower_config) or not args.llm:
            raise UserError(
                "no model: set model_name_or_path (a hf_llava checkpoint, e.g. stage 1's output) or compose one "
                "from vision_tower (or vision_tower_config) and llm"
            )
        model, processor = _compose(args, model_args.dtype, seed)
    if args.chat_template:
        processor.chat_template = get_chat_template(args.chat_template)
    if args.pad_to_square is not None:
        processor.pad_to_square = args.pad_to_square
    return model, processor


def quantization_config(model_args):
    """BitsAndBytesConfig for `load_in_4bit` (LLM only), or None; a clear error where bitsandbytes cannot run."""
    from dataclasses import replace

    from trl import get_quantization_config

    if model_args.load_in_8bit:
        raise UserError("load_in_8bit is not supported: QLoRA here is 4-bit NF4 (load_in_4bit: true)")
    if not model_args.load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # ImportError, or a native library that fails to load
        raise RuntimeError(
            f"QLoRA (load_in_4bit) needs bitsandbytes, which cannot be used here ({type(error).__name__}: {error}); "
            'install it with `pip install -e ".[qlora]"`, or train with LoRA on unquantised weights (use_peft only)'
        ) from error
    compute_dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "bfloat16"
    config = get_quantization_config(replace(model_args, dtype=compute_dtype))
    config.llm_int8_skip_modules = list(QUANTIZATION_SKIP_MODULES)
    return config


def prepare_quantized(model):
    """Freeze the 4-bit model and upcast its unquantised weights to fp32 (PEFT's kbit preparation); the trainer's
    activation checkpointing and the LoRA config (adapter + `modules_to_save`) then apply as without quantisation."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _load_checkpoint(model_args, image_position_embedding_std: float = 0.0):
    """The checkpoint; with `image_position_embedding_std` > 0 and a checkpoint without a per-position embedding, one
    is added (initialised with that std; e.g. at stage 2: added at stage 1 it did not help, see docs/demo-log.md)."""
    from .. import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor
    from ..checkpoint import check_hf_llava_checkpoint

    path, revision = model_args.model_name_or_path, model_args.model_revision
    quantization = quantization_config(model_args)  # settings errors first
    # before anything is built: another kind of folder would otherwise fill in a default (7B-sized) text config
    check_hf_llava_checkpoint(path, revision=revision, what="model_name_or_path")
    overrides = {}
    if image_position_embedding_std:
        config = HfLlavaConfig.from_pretrained(path, revision=revision)
        if not config.image_position_embedding_std:  # a checkpoint that has one keeps its trained vectors
            config.image_position_embedding_std = image_position_embedding_std
            overrides["config"] = config
            logger.info("adding a learned per-position image embedding (init std %s) to %s: the load report lists it "
                        "as missing, newly initialised", image_position_embedding_std, path)
    model = HfLlavaForConditionalGeneration.from_pretrained(
        path, revision=revision, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation,
        quantization_config=quantization, **overrides)
    processor = HfLlavaProcessor.from_pretrained(path, revision=revision)
    return model, processor


def _compose(args: LlavaArguments, dtype: str, seed: int):
    from ..build import build_llava, feature_layer

    def build(vision_tower: str):
        return build_llava(vision_tower, args.llm, projector_type=args.projector_type,
                           vision_feature_layer=feature_layer(args.vision_feature_layer),
                           image_position_embedding_std=args.image_position_embedding_std,
                           chat_template=args.chat_template, dtype=dtype)

    if args.vision_tower:
        return build(args.vision_tower)
    with tempfile.TemporaryDirectory(prefix="hf_llava_tower_") as tower_dir:
        save_random_clip_tower(tower_dir, seed=seed, **args.vision_tower_config)
        return build(tower_dir)


def save_random_clip_tower(out_dir: str | Path, seed: int = 0, **config) -> Path:
    """A randomly initialised CLIP vision tower (`config`: CLIPVisionConfig fields) plus its image processor, saved
    like a pretrained one, so a tower trained from scratch is composed through the same path."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    vision_config = CLIPVisionConfig(**config)
    torch.manual_seed(seed)
    CLIPVisionModel(vision_config).save_pretrained(out_dir)
    size = vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        out_dir
    )
    return Path(out_dir)


def set_trainable(model, stage: int, tune_vision_tower: bool = False) -> dict[str, int]:
    """Freeze everything, then unfreeze the parts `stage` trains. Returns trainable parameter counts per part."""
    model.requires_grad_(False)
    parts = {"projector": model.model.multi_modal_projector}
    if stage == 2:
        parts["language model"] = model.model.language_model
        parts["lm_head"] = model.lm_head
    if tune_vision_tower:
        parts["vision tower"] = model.model.vision_tower
    for module in parts.values():
        module.requires_grad_(True)
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    logger.info("trainable: %s", ", ".join(f"{name} {n / 1e6:.2f} M" for name, n in counts.items()))
    return counts


def llm_linear_names(model) -> list[str]:
    """Leaf names of every nn.Linear inside the language model (q_proj, ..., down_proj for Llama)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.model.language_model.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def lora_config(model, model_args, tune_vision_tower: bool = False):
    """A peft LoraConfig from TRL's ModelConfig fields, with targets restricted to the language model."""
    from peft import LoraConfig

    names = model_args.lora_target_modules
    if isinstance(names, str):  # ModelConfig turns a one-item list into a string
        names = [names]
    if not names or names == ["all-linear"]:
        names = llm_linear_names(model)
    target = re.escape(LANGUAGE_MODEL_PREFIX) + r".*\.(" + "|".join(map(re.escape, names)) + ")"
    modules_to_save = [PROJECTOR, *(["vision_tower"] if tune_vision_tower else []),
                       *(model_args.lora_modules_to_save or [])]
    return LoraConfig(
        task_type=model_args.lora_task_type, r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout, target_modules=target, modules_to_save=modules_to_save, bias="none",
        use_rslora=model_args.use_rslora, use_dora=model_args.use_dora,
    )
