"""`hf-llava train --config X.yaml [--key=value ...]`: the recipes' training entry point (hf_llava.training.sft) as a
subcommand of the installed package.

TRL's parser owns every flag (LlavaArguments, SFTConfig, ModelConfig, plus `--config`), so this subcommand forwards
its arguments untouched; the import of TRL and torch waits until the command runs, so `hf-llava --help` stays fast.
"""

import argparse

DESCRIPTION = (
    "Train a LLaVA model with TRL's SFTTrainer from a YAML recipe: stage 1 (projector), stage 2 (projector + LLM), "
    "LoRA or QLoRA. Every key of the YAML is a flag, and flags override the YAML (e.g. --max_steps 10). One process "
    "here; for several devices run `accelerate launch [--config_file recipes/accelerate_configs/ddp.yaml] "
    "recipes/sft.py --config X.yaml` instead."
)
USAGE = "hf-llava train --config X.yaml [--key=value ...]"


def run(args: argparse.Namespace) -> int:
    import os

    from ..errors import DEBUG_ENV, take_debug_flag
    from .sft import main, make_parser

    recipe_args, debug = take_debug_flag(args.recipe_args)
    if debug:  # `hf-llava train ... --debug`: the flag reaches us among the recipe's, after the top-level parse
        os.environ[DEBUG_ENV] = "1"
    if not recipe_args or {"-h", "--help"} & set(recipe_args):
        make_parser(prog="hf-llava train", usage=USAGE, description=DESCRIPTION).print_help()
        return 0 if recipe_args else 2
    main(recipe_args)
    return 0


def add_parser(subparsers) -> None:
    # prefix_chars without "-": argparse must not read (and reject) the recipe's flags; TrlParser parses them
    parser = subparsers.add_parser("train", help="train a LLaVA model from a YAML recipe (TRL SFTTrainer)",
                                   usage=USAGE, description=DESCRIPTION, add_help=False, prefix_chars="+")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="--config X.yaml and any --key=value")
    parser.set_defaults(func=run)
