"""The final folder of a training run, and its push to the Hub.

Design notes
- Intermediate `checkpoint-N` folders are the Trainer's: full weights (+ config, remote code, processor), or for
  LoRA the adapter with the projector (`modules_to_save`) and the processor. Each reloads and resumes on its own.
- The final `output_dir` is always a plain, merged hf_llava checkpoint written by `save_checkpoint` (weights,
  processor, chat template, remote code, model card), so it loads with `AutoModelForImageTextToText` and converts
  to native llava like any other. A LoRA run also keeps its adapter + projector in `output_dir/adapter`.
- Merging is done on the main process from the saved adapter onto a freshly loaded base (same arguments as the
  run, never partitioned by ZeRO-3's zero.Init), which works the same whether the trained copy was sharded (ZeRO-3,
  FSDP) or not. Full weights are
  gathered with `accelerator.get_state_dict` on every rank, then written by the main process.
- QLoRA: the adapter is merged onto the full-precision base (the same checkpoint loaded without `load_in_4bit`),
  so the final folder is an ordinary unquantised checkpoint; its outputs differ from the 4-bit training model by the
  NF4 rounding of the LLM. `output_dir/adapter` reloads onto a 4-bit base for the training model's exact outputs.
- The push uploads the final folder through `hf_llava.hub.push_checkpoint` to the repo the Trainer created
  (`hub_model_id`): `Trainer.push_to_hub` would re-save the unmerged model and replace our model card.
- A run started from a checkpoint (`model_name_or_path`, e.g. stage 2 from stage 1) inherits that checkpoint's
  parts (tower, LLM, data) and training history in its card inputs, so the final card names everything.
"""

import logging
from dataclasses import replace
from pathlib import Path

from ..checkpoint import save_checkpoint
from ..hub import push_checkpoint, read_card_inputs
from .arguments import LlavaArguments
from .model import load_model_and_processor

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"


def card_info(args: LlavaArguments, model_args, training_args, trainer) -> dict:
    """Model-card fields describing this run."""
    adapter = "QLoRA adapter on the 4-bit NF4 LLM" if model_args.load_in_4bit else "LoRA adapter on the LLM"
    trained = {1: "projector", 2: f"{adapter} + projector" if model_args.use_peft else "projector + LLM"}[args.stage]
    if args.tune_vision_tower:
        trained += " + vision tower"
    sources = [spec.describe() for spec in args.datasets]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    schedule = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    global_batch = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                    * training_args.world_size)
    projector_lr = f" (projector {args.projector_lr:g})" if args.projector_lr is not None else ""
    lines = [
        f"Trained with hf-llava's `recipes/sft.py` (TRL SFTTrainer), stage {args.stage}: {trained}.",
        "",
        f"- data: {', '.join(sources)}",
        f"- {trainer.state.global_step} steps ({trainer.state.epoch or 0:.2f} epochs), learning rate "
        f"{training_args.learning_rate:g}{projector_lr}, {schedule} schedule, global batch {global_batch}",
    ]
    if losses:
        lines.append(f"- training loss: {losses[0]:.4f} (first log) -> {losses[-1]:.4f} (last log)")
    if model_args.use_peft:
        base = " (full-precision base)" if model_args.load_in_4bit else ""
        lines.append(f"- LoRA r={model_args.lora_r}, alpha={model_args.lora_alpha}, merged into these weights{base} "
                     f"(adapter + projector in `{ADAPTER_DIR}/`)")
    training = "\n".join(lines)
    parts = []
    start = model_args.model_name_or_path
    if start and (Path(start) / "config.json").is_file():  # a later stage: the parts and history of the one before
        previous = read_card_inputs(start)
        parts = previous["parts"]
        if previous.get("training"):
            training = f"{previous['training']}\n\n{training}"
    elif args.vision_tower_config:
        parts = [{"kind": "model", "role": "vision tower", "name": "CLIP vision tower trained from scratch in this run",
                  "hub": False, "license": None}]
    return dict(
        model_name=Path(training_args.output_dir).name,
        repo_id=getattr(trainer, "hub_model_id", None) or training_args.hub_model_id,
        vision_tower=args.vision_tower,
        llm=args.llm,
        chat_template=args.chat_template or "see chat_template.jinja",
        training=training,
        parts=parts,
        datasets=[spec.path or spec.llava_json for spec in args.datasets],
    )


def _merged_model(args: LlavaArguments, model_args, adapter_dir: Path, seed: int):
    from peft import PeftModel
    from transformers.modeling_utils import set_zero3_state

    # only the main process loads this copy: under ZeRO-3 it must not be partitioned (zero.Init is a collective that
    # would wait for the other ranks forever); set_zero3_state tells transformers zero.Init is already handled
    with set_zero3_state():
        base, _ = load_model_and_processor(args, replace(model_args, load_in_4bit=False), seed)  # full precision
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def save_final(trainer, processor, args: LlavaArguments, model_args, training_args) -> Path:
    """Write the final merged checkpoint into output_dir (all ranks must call this) and push it if asked."""
    from peft import PeftModel

    accelerator = trainer.accelerator
    out = Path(training_args.output_dir)
    info = card_info(args, model_args, training_args, trainer)
    if isinstance(accelerator.unwrap_model(trainer.model), PeftModel):
        adapter_dir = out / ADAPTER_DIR
        trainer.save_model(str(adapter_dir))  # gathers shards; adapter + projector + processor
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = _merged_model(args, model_args, adapter_dir, training_args.seed)
            save_checkpoint(model, processor, out, **info)
    else:
        state_dict = accelerator.get_state_dict(trainer.model_wrapped)
        if accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(trainer.model), processor, out, state_dict=state_dict, **info)
    if accelerator.is_main_process:
        logger.info("final checkpoint saved to %s", out)
        if training_args.push_to_hub:
            _push(trainer, out, training_args)
    accelerator.wait_for_everyone()
    return out


def _push(trainer, folder: Path, training_args) -> None:
    # hf_llava.hub leaves out intermediate checkpoints, logs and the feature cache; no licence is demanded at the end
    # of a run (the card states the parts' licences; hub/push_model.py --license sets one later)
    outcome = push_checkpoint(folder, trainer.hub_model_id, token=training_args.hub_token,
                              revision=training_args.hub_revision, private=bool(training_args.hub_private_repo),
                              require_license=False, commit_message="End of training (hf-llava recipes/sft.py)")
    logger.info("pushed %s to %s", folder, outcome["url"])
