"""The training entry point: a LLaVA (hf_llava) model trained with TRL's SFTTrainer: stage 1 (projector), stage 2
(projector + LLM), LoRA, QLoRA.

    hf-llava train --config recipes/llava-v1.5-7b/pretrain.yaml [--key=value ...]
    accelerate launch [--config_file recipes/accelerate_configs/ddp.yaml] recipes/sft.py \
        --config recipes/llava-v1.5-7b/pretrain.yaml [--key=value ...]

Every key of the YAML is a flag, and flags override the YAML. Keys: hf_llava.training.LlavaArguments (model parts,
stage, datasets, ...), TRL's SFTConfig (optimisation, saving, logging, max_length, push_to_hub) and ModelConfig
(model_name_or_path, dtype, use_peft, lora_*, load_in_4bit). `hf-llava train --help` lists them all.
A single CPU process also works: add `--use_cpu true --bf16 false` (the shapes-smollm2 recipes do).

Design notes
- It lives in the package (not only in recipes/) so an installed wheel can train: `hf-llava train` and
  `hf-llava demo` call `main`; recipes/sft.py is the file `accelerate launch` runs, one process per device.
"""

import logging
import sys
from pathlib import Path

import datasets
import transformers
from trl import ModelConfig, SFTConfig, TrlParser

from ..collator import MultimodalCollator
from ..errors import UserError
from .arguments import LlavaArguments, check_training_values, parse_recipe
from .data import load_mixture, require_images
from .feature_cache import cache_image_features
from .model import load_model_and_processor, lora_config, prepare_quantized, set_trainable
from .save import save_final
from .trainer import LlavaSFTTrainer

logger = logging.getLogger(__name__)


def make_parser(**parser_kwargs) -> TrlParser:
    """The recipes' parser; `parser_kwargs` go to argparse (the `hf-llava train` front end names itself there)."""
    return TrlParser((LlavaArguments, SFTConfig, ModelConfig), **parser_kwargs)


def resume_target(value: str | None):
    """`resume_from_checkpoint`: a checkpoint folder, or true/last for the newest one in output_dir."""
    return True if value is not None and value.lower() in ("true", "last") else value


def setup_logging(training_args: SFTConfig) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    for name in ("hf_llava", "trl"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)


def remove_empty_folders(root: Path) -> None:
    """Remove `root` and the folders under it, bottom up, if they hold no file (only empty folders are touched)."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def main(argv: list[str] | None = None, callbacks: list | None = None):
    """Parse `argv` (default sys.argv[1:]), train, save the final checkpoint; returns the trainer."""
    args, training_args, model_args = parse_recipe(make_parser(), argv)
    check_training_values(training_args)
    setup_logging(training_args)
    output_dir = Path(training_args.output_dir)
    created = not output_dir.exists()
    try:
        return train(args, training_args, model_args, callbacks)
    except BaseException:
        # a run that failed (or was interrupted) leaves no empty output_dir that looks like a result; a folder that
        # was there before, and any file written (checkpoints, cached features), stay
        if created and output_dir.is_dir() and training_args.process_index == 0:
            remove_empty_folders(output_dir)
        raise


def train(args: LlavaArguments, training_args: SFTConfig, model_args: ModelConfig, callbacks: list | None = None):
    """Build the model, load the data, train and save (main's work after parsing); returns the trainer."""
    if model_args.load_in_4bit and not model_args.use_peft:
        raise UserError("load_in_4bit (QLoRA) trains a LoRA adapter on the 4-bit LLM: set use_peft true")
    if model_args.use_peft and args.stage == 1:
        raise UserError("use_peft trains a LoRA adapter on the LLM, which stage 1 keeps frozen: use stage 2")
    # the collator tokenises, masks and pads; the trainer must not prepare or prune the canonical rows
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    transformers.set_seed(training_args.seed)  # the composed projector (and a from-scratch tower) are seeded

    model, processor = load_model_and_processor(args, model_args, training_args.seed)
    if model_args.load_in_4bit:
        prepare_quantized(model)  # all frozen; the LoRA config trains the adapter, projector (and tuned tower)
    else:
        set_trainable(model, args.stage, args.tune_vision_tower)
    with training_args.main_process_first(desc="loading datasets"):
        train_dataset = load_mixture(args.datasets, training_args.seed, args.skip_bad_samples)
        if args.stage == 1:
            train_dataset = require_images(train_dataset, args.skip_bad_samples)
        eval_dataset = (load_mixture(args.eval_datasets, training_args.seed, args.skip_bad_samples)
                        if args.eval_datasets else None)
    feature_cache = None
    if args.cache_image_features:
        with training_args.main_process_first(desc="caching image features"):
            train_dataset, feature_cache = cache_image_features(model, processor, train_dataset, training_args)
    collator = MultimodalCollator(
        processor, max_length=training_args.max_length, random_image_placement=args.random_image_placement,
        skip_bad_samples=args.skip_bad_samples, seed=training_args.seed, feature_cache=feature_cache,
    )
    trainer = LlavaSFTTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collator, processing_class=processor, callbacks=callbacks, projector_lr=args.projector_lr,
        group_by_modality_length=args.group_by_modality_length,
        length_grouping_megabatches=args.length_grouping_megabatches,
        peft_config=lora_config(model, model_args, args.tune_vision_tower) if model_args.use_peft else None,
    )
    trainer.train(resume_from_checkpoint=resume_target(training_args.resume_from_checkpoint))
    if collator.skips.total:
        logger.warning("collator: %s", collator.skips.summary())
    save_final(trainer, processor, args, model_args, training_args)
    trainer.end()
    return trainer


if __name__ == "__main__":
    from ..errors import script_main

    script_main("python -m hf_llava.training.sft", main)
