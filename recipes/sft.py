#!/usr/bin/env python
"""Train a LLaVA (hf_llava) model with TRL's SFTTrainer: stage 1 (projector), stage 2 (projector + LLM), LoRA, QLoRA.

    accelerate launch [--config_file recipes/accelerate_configs/ddp.yaml] recipes/sft.py \
        --config recipes/llava-v1.5-7b/pretrain.yaml [--key=value ...]

Every key of the YAML is a flag, and flags override the YAML. Keys: hf_llava.training.LlavaArguments (model parts,
stage, datasets, ...), TRL's SFTConfig (optimisation, saving, logging, max_length, push_to_hub) and ModelConfig
(model_name_or_path, dtype, use_peft, lora_*, load_in_4bit). `python recipes/sft.py --help` lists them all.
A single CPU process also works: add `--use_cpu true --bf16 false` (the shapes-smollm2 recipes do).

The training code is `hf_llava.training.sft` (also `hf-llava train`); this file is what `accelerate launch` runs.
"""

from hf_llava.errors import script_main
from hf_llava.training.sft import main

if __name__ == "__main__":
    script_main("recipes/sft.py", main)  # a user error: one line and exit code 2 (--debug: its traceback)
