"""Every shipped recipe parses against the training entry point's parser (hf_llava.training.sft), carries the
paper's settings and names its own launch command; accelerate configs load. (Model and data ids are only parsed,
never fetched.)"""

import re
from pathlib import Path

import pytest

from hf_llava.training.arguments import DatasetSpec
from hf_llava.training.sft import make_parser

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TOWER_RECIPE = RECIPES / "shapes-smollm2" / "tower.yaml"  # hf_llava.training.contrastive, not recipes/sft.py
MODEL_RECIPES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate_configs"
                       and p != TOWER_RECIPE)
ACCELERATE_CONFIGS = sorted((RECIPES / "accelerate_configs").glob("*.yaml"))
GPUS = 8  # the paper's 8xA100; the accelerate configs launch 8 processes

# the papers' training settings (LLaVA v1, arXiv 2304.08485; LLaVA-1.5, arXiv 2310.03744, and its scripts), as tabled
# in docs/training.md: (stage, learning rate, global batch, epochs)
PAPER = {
    "llava-v1-vicuna-13b/pretrain": (1, 2e-3, 128, 1),
    "llava-v1-vicuna-13b/finetune": (2, 2e-5, 32, 3),
    "llava-v1-vicuna-13b/scienceqa": (2, 2e-5, 32, 12),
    "llava-v1.5-7b/pretrain": (1, 1e-3, 256, 1),
    "llava-v1.5-7b/finetune": (2, 2e-5, 128, 1),
    "llava-v1.5-7b/finetune_lora": (2, 2e-4, 128, 1),
    "llava-v1.5-7b/finetune_qlora": (2, 2e-4, 128, 1),
}


def parse(path: Path, *overrides: str):
    # use_cpu: bf16 recipes only validate on a GPU machine otherwise (hardware, not recipe content)
    return make_parser().parse_args_and_config(["--config", str(path), "--use_cpu", "true", *overrides])


def recipe_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_recipe_family_is_shipped():
    assert {recipe_id(p) for p in MODEL_RECIPES} == set(PAPER) | {"shapes-smollm2/pretrain",
                                                                   "shapes-smollm2/finetune"}
    assert {p.stem for p in ACCELERATE_CONFIGS} == {"ddp", "zero2", "zero3", "fsdp"}


@pytest.mark.parametrize("path", MODEL_RECIPES, ids=recipe_id)
def test_recipe_parses_and_names_its_launch_command(path):
    args, training_args, model_args = parse(path)
    assert args.datasets and all(isinstance(spec, DatasetSpec) for spec in args.datasets)
    assert bool(model_args.model_name_or_path) != bool(args.llm)  # a checkpoint, or parts
    assert bool(args.vision_tower or args.vision_tower_config) == bool(args.llm)
    assert training_args.output_dir and training_args.max_length
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    launch = re.search(r"accelerate launch (--config_file (\S+) )?recipes/sft\.py --config (\S+)", header)
    assert launch, f"{path} must start with its launch command"
    assert launch.group(3) == f"recipes/{recipe_id(path)}.yaml"
    assert launch.group(2) is None or (ROOT / launch.group(2)).is_file()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_llava_recipes_carry_the_paper_settings(name):
    args, training_args, model_args = parse(RECIPES / f"{name}.yaml")
    stage, lr, global_batch, epochs = PAPER[name]
    assert args.stage == stage and training_args.learning_rate == lr and training_args.num_train_epochs == epochs
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * GPUS == \
        global_batch
    # all runs: cosine, 3% warmup, no weight decay, max length 2048, bf16, activation checkpointing
    assert training_args.lr_scheduler_type.value == "cosine" and training_args.warmup_steps == 0.03
    assert training_args.weight_decay == 0 and training_args.max_length == 2048 and training_args.bf16
    assert training_args.activation_checkpointing and not args.tune_vision_tower
    assert args.chat_template == ("plain" if stage == 1 else "vicuna_v1")
    if stage == 1:
        version = "v1.5" if "v1.5" in name else "v1"
        assert (args.vision_tower, args.projector_type) == {
            "v1": ("openai/clip-vit-large-patch14", "linear"),
            "v1.5": ("openai/clip-vit-large-patch14-336", "mlp2x_gelu")}[version]
        assert args.llm in ("lmsys/vicuna-13b-v1.3", "lmsys/vicuna-7b-v1.5")
    if "lora" in name:
        assert model_args.use_peft and (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == \
            (128, 256, 0.05)
        assert args.projector_lr == 2e-5 and model_args.lora_target_modules is None  # all LLM linears
    if "qlora" in name:
        assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and \
            model_args.use_bnb_nested_quant


def test_command_line_overrides_the_yaml():
    args, training_args, _ = parse(RECIPES / "shapes-smollm2" / "pretrain.yaml", "--learning_rate", "5e-4",
                                   "--datasets", "data/other", '{"llava_json": "x.json", "weight": 0.5}',
                                   '{"path": "d", "where": {"question_type": ["existence", "position"]}}',
                                   "--vision_tower", "other/tower", "--vision_feature_layer", "0", "-2")
    assert training_args.learning_rate == 5e-4 and args.vision_feature_layer == [0, -2]
    assert args.datasets == [DatasetSpec(path="data/other"), DatasetSpec(llava_json="x.json", weight=0.5),
                             DatasetSpec(path="d", where={"question_type": ["existence", "position"]})]
    assert args.vision_tower == "other/tower"
    assert parse(RECIPES / "shapes-smollm2" / "pretrain.yaml")[0].vision_feature_layer == [-2]  # LLaVA's default


def parse_tower(*overrides: str):
    from hf_llava.training.contrastive import make_parser as tower_parser

    return tower_parser().parse_args_and_config(["--config", str(TOWER_RECIPE), *overrides])


def test_tower_recipe_parses_and_feeds_stage_1():
    args, settings = parse_tower("--steps", "7")
    assert settings.steps == 7 and settings.batch_size == 128  # flags override the YAML, the YAML the defaults
    assert args.vision_tower_config["image_size"] // args.vision_tower_config["patch_size"] == 3  # the 3x3 grid
    assert settings.sincos_positions is True  # YAML booleans reach the settings (off by default)
    assert parse_tower("--sincos_positions", "false")[1].sincos_positions is False
    assert "python -m hf_llava.training.contrastive --config recipes/shapes-smollm2/tower.yaml" in \
        TOWER_RECIPE.read_text()
    stage1, _, _ = parse(RECIPES / "shapes-smollm2" / "pretrain.yaml")
    assert stage1.vision_tower == args.output_dir and not stage1.tune_vision_tower
    assert args.datasets == stage1.datasets  # the same caption rows, through the same DatasetSpec
    with pytest.raises(SystemExit):
        parse_tower("--steps", "x")


@pytest.mark.parametrize("item, message", [
    ({"path": "a", "llava_json": "b"}, "exactly one of"),
    ({"path": "a", "weights": 2}, "unknown dataset key"),
    ({"path": "a", "weight": 0}, "must be > 0"),
])
def test_bad_dataset_specs_are_clear_errors(item, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec.parse(item)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_configs_load_and_name_their_launch_command(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[path.stem]
    assert config.distributed_type.value == expected and config.num_processes == GPUS
    if path.stem.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
    assert f"accelerate launch --config_file recipes/accelerate_configs/{path.name} recipes/sft.py" in \
        path.read_text()
