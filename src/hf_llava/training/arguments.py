"""`LlavaArguments`: what recipes/sft.py adds to TRL's `SFTConfig` and `ModelConfig`.

Design notes
- Parsed by `TrlParser((LlavaArguments, SFTConfig, ModelConfig))`, so every field is a YAML key and a `--flag`.
  Fields TRL already has are not repeated: the stage-2 checkpoint is `model_name_or_path`, the loading dtype `dtype`
  and LoRA `use_peft`/`lora_*` (ModelConfig); `max_length`, `seed` and all optimisation settings are SFTConfig's
  (`max_length` is handed to the collator).
- A model is either composed from parts (`vision_tower` or `vision_tower_config`, plus `llm`) or loaded from a
  hf_llava checkpoint (`model_name_or_path`), never both.
- `datasets` is a list because HfArgumentParser cannot type a list of mappings: in YAML each item is a mapping
  (see `DatasetSpec`), on the command line a path / Hub id or a JSON object.
"""

import json
from dataclasses import dataclass, field, fields

from ..errors import UserError

STAGES = (1, 2)


def check_at_least(settings, **minimums) -> None:
    """Refuse the first field of `settings` below its minimum (None means unset and passes), naming the key."""
    for name, minimum in minimums.items():
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise UserError(f"{name} must be at least {minimum}, got {value}: fix it in the --config YAML or with "
                            f"--{name}")


def check_training_values(training_args) -> None:
    """SFTConfig values that transformers would take without complaint and then fail on deep inside training (a
    batch size of 0), or silently reinterpret (a negative max_steps means "train by epochs")."""
    check_at_least(training_args, per_device_train_batch_size=1, per_device_eval_batch_size=1,
                   gradient_accumulation_steps=1, learning_rate=0, max_length=1)
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise UserError(f"max_steps must be a number of optimizer steps (>= 1), or -1 to train num_train_epochs, "
                        f"got {training_args.max_steps}")
    if training_args.max_steps == -1 and training_args.num_train_epochs <= 0:
        raise UserError(f"num_train_epochs must be > 0 (or set max_steps), got {training_args.num_train_epochs}")


def parse_recipe(parser, argv: list[str] | None):
    """`parser.parse_args_and_config(argv)` (a TrlParser), with what it reports of bad input as UserErrors: a
    --config file that cannot be read or is not YAML, keys no dataclass has, values a dataclass refuses."""
    import yaml

    try:
        return parser.parse_args_and_config(argv)
    except UserError:
        raise
    except OSError as error:  # only the --config file is opened while parsing
        raise UserError(f"--config {error.filename}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise UserError(f"--config: not valid YAML ({error})") from error
    except ValueError as error:  # unknown keys (named in the message), refused values (TrainingArguments checks)
        raise UserError(str(error)) from error


@dataclass
class DatasetSpec:
    """One source of a training mixture (canonical rows: `id`, `images`, `messages`).

    Exactly one of `path` (a Hub dataset id, a local data folder, or a `save_to_disk` folder; `name` is the Hub
    config, or the sub-folder of a multi-config `save_to_disk` build such as `data/shapes` + `caption`) and
    `llava_json` (a LLaVA JSON/JSONL file whose image paths are relative to `image_root`).
    `weight` scales the source's share: round(weight * rows) rows are used per epoch (1: all; 0.5: a seeded random
    half; 2: every row twice). `where` keeps only the rows whose column value is one of those listed, e.g.
    `{"question_type": ["existence", "position"]}` (applied before `weight`; the column need not be canonical).
    """

    path: str | None = None
    name: str | None = None
    split: str = "train"
    llava_json: str | None = None
    image_root: str | None = None
    weight: float = 1.0
    where: dict[str, list] | None = None

    def __post_init__(self):
        if (self.path is None) == (self.llava_json is None):
            raise UserError(f"a dataset needs exactly one of `path` and `llava_json`, got {self}")
        if self.weight <= 0:
            raise UserError(f"dataset weight must be > 0, got {self.weight} for {self.describe()}")
        if self.where is not None:
            if not isinstance(self.where, dict) or not self.where:
                raise UserError(f"`where` maps column names to the values to keep, got {self.where!r} for "
                                 f"{self.describe()}")
            self.where = {column: list(v) if isinstance(v, (list, tuple)) else [v] for column, v in self.where.items()}

    def describe(self) -> str:
        source = self.llava_json or "/".join(filter(None, [self.path, self.name]))
        return f"{source}[{self.split}]"

    @classmethod
    def parse(cls, item) -> "DatasetSpec":
        """A mapping (YAML), a JSON object string, or a bare path / Hub id (command line)."""
        if isinstance(item, cls):
            return item
        if isinstance(item, str):
            item = json.loads(item) if item.lstrip().startswith("{") else {"path": item}
        if not isinstance(item, dict):
            raise UserError(f"a dataset is a mapping or a path, got {item!r}")
        unknown = set(item) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(f"unknown dataset key(s) {sorted(unknown)} in {item}; allowed: "
                             f"{[f.name for f in fields(cls)]}")
        return cls(**item)


@dataclass
class LlavaArguments:
    # model from parts (stage 1); a checkpoint goes in ModelConfig's `model_name_or_path`
    vision_tower: str | None = field(
        default=None, metadata={"help": "CLIP/SigLIP checkpoint (Hub id or path) to compose the model from"})
    vision_tower_config: dict | str | None = field(
        default=None,
        metadata={"help": "train a CLIP vision tower from scratch: its CLIPVisionConfig fields (YAML mapping or "
                          "JSON), instead of `vision_tower`"})
    llm: str | None = field(
        default=None, metadata={"help": "causal LM (Hub id or path), or 'smollm2' for the bundled SmolLM2-135M"})
    projector_type: str = field(
        default="mlp2x_gelu", metadata={"help": "linear, mlpNx_gelu or identity (model from parts only)"})
    vision_feature_layer: list[int] = field(
        default_factory=lambda: [-2],
        metadata={"help": "vision hidden-state index whose patch features feed the projector (LLaVA's "
                          "mm_vision_select_layer, -2), or several, concatenated (model from parts only)"})
    image_position_embedding_std: float = field(
        default=0.0,
        metadata={"help": "> 0: the projector also learns a vector per image token position, added to its output "
                          "and initialised with this std, for towers whose features keep little of where a patch "
                          "is (not in LLaVA; such a model does not export to native llava): built with a model from "
                          "parts, or added to a checkpoint that has none (the shapes demo adds it at stage 2)"})
    chat_template: str | None = field(
        default=None,
        metadata={"help": "named template (plain, vicuna_v1, chatml, llama2); replaces a checkpoint's template "
                          "(stage 1 trains with 'plain', stage 2 with a conversation template)"})
    pad_to_square: bool | None = field(
        default=None,
        metadata={"help": "pad images to squares with the mean colour (LLaVA-1.5's image_aspect_ratio=pad); unset: "
                          "as the checkpoint's processor says (composed models: no padding)"})
    # what trains
    stage: int = field(
        default=1, metadata={"help": "1: only the projector trains; 2: projector + LLM (or its LoRA adapter)"})
    tune_vision_tower: bool = field(default=False, metadata={"help": "train the vision tower too"})
    projector_lr: float | None = field(
        default=None, metadata={"help": "learning rate of the projector (default: learning_rate)"})
    # data
    datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "training mixture: YAML list of {path|llava_json, name, split, image_root, weight}; on "
                          "the command line paths/Hub ids or JSON objects"})
    eval_datasets: list[str] = field(default_factory=list, metadata={"help": "evaluation mixture, same format"})
    random_image_placement: bool = field(
        default=False, metadata={"help": "put the first turn's image before or after the question at random"})
    cache_image_features: bool = field(
        default=False,
        metadata={"help": "frozen vision tower: compute each training image's features once (cached in "
                          "output_dir/image_features) and train on them instead of running the tower every step"})
    group_by_modality_length: bool = field(
        default=False,
        metadata={"help": "batches of only image rows or only text-only rows, of similar lengths (as LLaVA); every "
                          "row still once per epoch"})
    length_grouping_megabatches: int = field(
        default=1,
        metadata={"help": "with group_by_modality_length: how many optimizer steps' worth of rows are sorted by "
                          "length together (1: LLaVA's pool). Raise it (e.g. 50) when a few long rows are mixed into "
                          "many short ones, so they share batches instead of padding short rows to their length"})
    skip_bad_samples: bool = field(
        default=False,
        metadata={"help": "skip (and count) samples whose image tokens would be truncated or that have nothing "
                          "to supervise, and bad LLaVA JSON records, instead of stopping with an error"})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise UserError(f"stage must be 1 or 2, got {self.stage}")
        check_at_least(self, length_grouping_megabatches=1, projector_lr=0, image_position_embedding_std=0)
        if isinstance(self.vision_feature_layer, int):  # YAML `vision_feature_layer: -2`
            self.vision_feature_layer = [self.vision_feature_layer]
        if isinstance(self.vision_tower_config, str):
            self.vision_tower_config = json.loads(self.vision_tower_config)
        if self.cache_image_features and self.tune_vision_tower:
            raise UserError("cache_image_features needs a frozen vision tower: it cannot be used with "
                             "tune_vision_tower")
        if self.vision_tower and self.vision_tower_config:
            raise UserError("give either vision_tower (pretrained) or vision_tower_config (from scratch), not both")
        self.datasets = [DatasetSpec.parse(item) for item in self.datasets]
        self.eval_datasets = [DatasetSpec.parse(item) for item in self.eval_datasets]
