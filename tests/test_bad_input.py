"""Common user errors at every fixed entry point, run as a user would (a subprocess): exit code 2, no traceback, and
a message that names the offending path, flag or key. `--debug` brings the traceback back. Then, in-process, the
checks behind them: nonsense values refused where parsed, dataset config names, bad rows in a training batch, and
what a failed training run leaves behind.

The cases run concurrently: each is a fresh Python process whose imports dominate its time.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers.coco_files import write_coco
from tiny_checkpoints import save_clip_vision, save_llama

REPO = Path(__file__).resolve().parents[1]
HF_LLAVA = [sys.executable, "-m", "hf_llava.cli"]
SFT = [sys.executable, str(REPO / "recipes" / "sft.py")]
ON_CPU = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none"]  # else TrainingArguments asks for a GPU
CONTRASTIVE = [sys.executable, "-m", "hf_llava.training.contrastive"]
BUILDER = [sys.executable, str(REPO / "datasets_scripts" / "llava_instruct.py")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")

    def folder_with_config(name, config):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
        return root / name

    captions, instances = write_coco(root / "coco", 3)
    disjoint = json.loads(instances.read_text())
    for entry in disjoint["images"]:
        entry["id"] += 100
    for annotation in disjoint["annotations"]:
        annotation["image_id"] += 100
    (root / "other_instances.json").write_text(json.dumps(disjoint))
    (root / "full").mkdir()
    (root / "full" / "model.safetensors").write_text("a trained model")
    (root / "empty.json").write_text("")
    return {
        "tiny_tower": save_clip_vision(root / "tiny_tower"), "tiny_llm": save_llama(root / "tiny_llm"),
        "root": root,
        "tower": folder_with_config("tower", {"model_type": "clip_vision_model", "image_size": 28, "patch_size": 7}),
        "native": folder_with_config("native", {"model_type": "llava", "text_config": {}, "vision_config": {}}),
        "hf_llava": folder_with_config("hf_llava", {"model_type": "hf_llava"}),
        "captions": captions, "other_instances": root / "other_instances.json", "full": root / "full",
        "empty_json": root / "empty.json",
    }


# name: (command, the substrings the message must contain); {key} is a path from `files`
CASES = {
    "build: missing vision tower": (
        [*HF_LLAVA, "build", "--vision-tower", "{root}/no-tower", "--llm", "smollm2", "{root}/out-a"],
        ["{root}/no-tower: no such folder"]),
    "build: non-empty output": (
        [*HF_LLAVA, "build", "--vision-tower", "{tower}", "--llm", "smollm2", "{full}"],
        ["{full}: exists and is not empty; pass --overwrite"]),
    "build: bad --vision-feature-layer": (
        [*HF_LLAVA, "build", "--vision-tower", "{tower}", "--llm", "smollm2", "--vision-feature-layer", "last",
         "{root}/out-b"],
        ["--vision-feature-layer", "'last'"]),
    "convert: output is the input": (
        [*HF_LLAVA, "convert", "--to", "llava-hf", "{hf_llava}", "{hf_llava}"],
        ["{hf_llava}: is (or contains) the input"]),
    "convert: wrong folder kind": (
        [*HF_LLAVA, "convert", "--to", "llava-hf", "{native}", "{root}/out-c"],
        ["{native}/config.json: expected an hf_llava checkpoint", "--from llava-hf"]),
    "eval: a vision tower as the model": (
        [*HF_LLAVA, "eval", "shapes", "--model", "{tower}", "--num-images", "1", "--output-dir", "{root}/eval"],
        ["model {tower}: expected a hf_llava checkpoint", "hf-llava build --vision-tower {tower}"]),
    "eval: missing model": (
        [*HF_LLAVA, "eval", "shapes", "--model", "{root}/no-model", "--num-images", "1", "--output-dir",
         "{root}/eval"],
        ["{root}/no-model: no such folder"]),
    "generate-data: captions and instances share no image": (
        [*HF_LLAVA, "generate-data", "--captions", "{captions}", "--instances", "{other_instances}",
         "--output-dir", "{root}/gen"],
        ["--instances {other_instances} share no image id"]),
    "generate-data: missing captions file": (
        [*HF_LLAVA, "generate-data", "--captions", "{root}/no-captions.json", "--output-dir", "{root}/gen"],
        ["{root}/no-captions.json"]),
    "train: a vision tower as model_name_or_path": (
        [*HF_LLAVA, "train", "--model_name_or_path", "{tower}", "--stage", "2", "--datasets", "{root}/no-data",
         "--output_dir", "{root}/train-a", "--use_cpu", "true", "--report_to", "none"],
        ["model_name_or_path {tower}: expected a hf_llava checkpoint", "hf-llava build --vision-tower {tower}"]),
    "train: QLoRA without LoRA": (
        [*HF_LLAVA, "train", "--model_name_or_path", "{hf_llava}", "--stage", "2", "--load_in_4bit", "true",
         "--datasets", "{root}/no-data", "--output_dir", "{root}/train-b", "--use_cpu", "true", "--report_to",
         "none"],
        ["load_in_4bit (QLoRA) trains a LoRA adapter", "set use_peft true"]),
    "builder script: empty input": (
        [*BUILDER, "--json", "{empty_json}", "--output-dir", "{root}/dataset"],
        ["--json {empty_json}: the input has no records"]),
    "builder script: missing input file": (
        [*BUILDER, "--json", "{root}/no.json", "--output-dir", "{root}/dataset-b"],
        ["--json {root}/no.json: No such file or directory"]),
    "builder script: non-empty output": (
        [*BUILDER, "--json", "{empty_json}", "--output-dir", "{full}"],
        ["--output-dir {full}: exists and is not empty; pass --overwrite"]),
    "builder script: bad value": (
        [sys.executable, str(REPO / "datasets_scripts" / "synthetic_shapes.py"), "--image-size", "0",
         "--output-dir", "{root}/dataset-c"],
        ["argument --image-size: must be at least 1, got 0"]),
    "recipes/sft.py: missing dataset path": (
        [*SFT, "--vision_tower", "{tiny_tower}", "--llm", "{tiny_llm}", "--chat_template", "plain",
         "--datasets", "{root}/no-data",
         "--output_dir", "{root}/sft-a", *ON_CPU],
        ["recipes/sft.py: error: dataset path {root}/no-data: no such folder"]),
    "recipes/sft.py: missing --config file": (
        [*SFT, "--config", "{root}/no.yaml"],
        ["--config {root}/no.yaml: No such file or directory"]),
    "recipes/sft.py: unknown key": (
        [*SFT, "--datasets", "{root}/no-data", "--output_dir", "{root}/sft-b", *ON_CPU, "--no_such_key", "3"],
        ["['--no_such_key', '3']"]),
    "recipes/sft.py: batch size 0": (
        [*SFT, "--datasets", "{root}/no-data", "--output_dir", "{root}/sft-c", *ON_CPU,
         "--per_device_train_batch_size", "0"],
        ["per_device_train_batch_size must be at least 1, got 0"]),
    "contrastive tower: non-empty output_dir": (
        [*CONTRASTIVE, "--datasets", "{root}/no-data", "--vision_tower_config", '{{"image_size": 28}}',
         "--output_dir", "{full}"],
        ["output_dir {full}: exists and is not empty"]),
    "contrastive tower: batch_size 1": (
        [*CONTRASTIVE, "--datasets", "{root}/no-data", "--vision_tower_config", '{{"image_size": 28}}',
         "--output_dir", "{root}/tower-out", "--batch_size", "1"],
        ["batch_size must be at least 2, got 1"]),
}


def fill(text: str, files: dict) -> str:
    return text.format(**{key: str(value) for key, value in files.items()})


def run(command: list[str], files: dict) -> subprocess.CompletedProcess:
    return subprocess.run([fill(part, files) for part in command], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENAI_API_KEY": "sk-unused", "HF_LLAVA_DEBUG": ""})


@pytest.mark.slow
def test_user_errors_exit_2_with_one_clear_line(files):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CASES, pool.map(lambda case: run(case[0], files), CASES.values())))
    for name, (_, expected) in CASES.items():
        result = results[name]
        assert result.returncode == 2, f"{name}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr[-2000:]}"
        for text in expected:
            assert fill(text, files) in result.stderr, f"{name}: {fill(text, files)!r} not in\n{result.stderr}"
    leftovers = [files["root"] / name for name in ("out-a", "sft-a", "tower-out", "dataset-b", "dataset-c")]
    assert not [path for path in leftovers if path.exists()] and not list(files["root"].glob("*.partial-*"))


@pytest.mark.slow
def test_debug_shows_the_traceback_of_a_user_error(files):
    command, _ = CASES["convert: output is the input"]
    result = run([*HF_LLAVA, "--debug", *command[len(HF_LLAVA):]], files)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert f"hf_llava.errors.UserError: OUT {files['hf_llava']}: is (or contains) the input" in result.stderr
    command, _ = CASES["recipes/sft.py: batch size 0"]  # a script: --debug anywhere among its flags
    result = run([*command, "--debug"], files)
    assert result.returncode == 1 and "hf_llava.errors.UserError: per_device_train_batch_size" in result.stderr


def test_take_debug_flag_leaves_transformers_debug_options_alone():
    from hf_llava.errors import take_debug_flag

    assert take_debug_flag(["--max_steps", "3", "--debug"]) == (["--max_steps", "3"], True)
    assert take_debug_flag(["--debug", "--max_steps", "3"]) == (["--max_steps", "3"], True)
    # TrainingArguments' own --debug always takes a value (e.g. underflow_overflow): not ours
    assert take_debug_flag(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)


def test_vision_feature_layer_does_not_swallow_out():
    from hf_llava.cli import build_parser

    for value, layers in [("-2", [-2]), ("-5,-2", [-5, -2])]:
        args = build_parser().parse_args(["build", "--vision-tower", "t", "--llm", "l", "--vision-feature-layer",
                                          value, "OUT"])
        assert (args.out, args.vision_feature_layer) == ("OUT", layers)


def recipe(*extra: str):
    from hf_llava.training.arguments import check_training_values, parse_recipe
    from hf_llava.training.sft import make_parser

    args, training_args, model_args = parse_recipe(make_parser(), ["--datasets", "d", "--output_dir", "o",
                                                                   "--use_cpu", "true", *extra])
    check_training_values(training_args)
    return args


@pytest.mark.parametrize(("extra", "message"), [
    (["--max_steps", "-5"], "max_steps must be a number of optimizer steps (>= 1), or -1"),  # -5 meant "by epochs"
    (["--max_steps", "0"], "max_steps must be"),
    (["--num_train_epochs", "0"], "num_train_epochs must be > 0"),
    (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be at least 1"),
    (["--learning_rate", "-0.001"], "learning_rate must be at least 0"),
    (["--max_length", "0"], "max_length must be at least 1"),
    (["--length_grouping_megabatches", "0"], "length_grouping_megabatches must be at least 1"),
    (["--datasets", '{"path": "d", "weight": -1}'], "dataset weight must be > 0, got -1"),
])
def test_nonsense_training_values_are_refused_where_parsed(extra, message):
    from hf_llava.errors import UserError

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recipe(*extra)
    assert recipe("--max_steps", "-1").datasets[0].path == "d"  # the default (train by epochs) stays allowed


@pytest.mark.parametrize(("key", "value"), [("steps", "0"), ("batch_size", "1"), ("warmup_ratio", "2"),
                                            ("heldout", "-1")])
def test_nonsense_contrastive_values_are_refused_where_parsed(key, value):
    from hf_llava.errors import UserError
    from hf_llava.training.arguments import parse_recipe
    from hf_llava.training.contrastive import make_parser

    with pytest.raises(UserError, match=key):
        parse_recipe(make_parser(), ["--datasets", "d", "--vision_tower_config", "{}", "--output_dir", "o",
                                     f"--{key}", value])


@pytest.fixture(scope="module")
def multi_config(tmp_path_factory):
    """A two-config save_to_disk build (as the synthetic-shapes builder writes): OUT/caption, OUT/vqa."""
    import datasets

    from hf_llava.data.schema import assistant_message, features, user_message

    root = tmp_path_factory.mktemp("multi")
    rows = [{"id": "0", "images": [], "messages": [user_message("q"), assistant_message("a")]}]
    for name in ("caption", "vqa"):
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features())}).save_to_disk(
            str(root / name))
    return root


def test_a_dataset_config_name_typo_names_the_configs_that_exist(multi_config, tmp_path):
    from hf_llava.errors import UserError
    from hf_llava.training.arguments import DatasetSpec
    from hf_llava.training.data import load_source

    with pytest.raises(UserError, match=r"has no config 'vqaa'; its configs: \['caption', 'vqa'\]"):
        load_source(DatasetSpec(path=str(multi_config), name="vqaa"))
    # without a name, datasets would read both configs' files as one dataset
    with pytest.raises(UserError, match=r"holds the configs \['caption', 'vqa'\] .*set `name`"):
        load_source(DatasetSpec(path=str(multi_config)))
    assert load_source(DatasetSpec(path=str(multi_config), name="vqa"))["id"] == ["0"]
    (tmp_path / "plain").mkdir()  # a data folder: datasets calls its one config 'default'
    (tmp_path / "plain" / "rows.jsonl").write_text('{"id": "0"}\n')
    with pytest.raises(UserError, match=r"plain has no config 'vqa'; its configs: \['default'\]"):
        load_source(DatasetSpec(path=str(tmp_path / "plain"), name="vqa"))
    with pytest.raises(UserError, match="rows.jsonl: is a file; use `llava_json`"):
        load_source(DatasetSpec(path=str(tmp_path / "plain" / "rows.jsonl")))
    with pytest.raises(UserError, match="llava_json .*none.json: no such file"):
        load_source(DatasetSpec(llava_json=str(tmp_path / "none.json")))


def test_bad_rows_in_a_training_batch_are_counted_or_a_clear_error():
    from hf_llava import MultimodalCollator
    from hf_llava.data.errors import BadRecordError
    from hf_llava.data.schema import assistant_message, user_message
    from hf_llava.errors import UserError
    from hf_llava.testing import random_image, tiny_config, tiny_processor

    processor = tiny_processor(tiny_config())
    row = {"id": "good", "images": [random_image(0)],
           "messages": [user_message("Which colour?", with_image=True), assistant_message("Red.")]}
    no_image = {**row, "id": "none-image", "images": [None]}  # was an AttributeError that skipping did not catch
    with pytest.raises(BadRecordError, match="record none-image: image 0 is NoneType, not an image"):
        MultimodalCollator(processor)([no_image, row])
    skipping = MultimodalCollator(processor, skip_bad_samples=True)
    assert skipping([no_image, row])["input_ids"].shape[0] == 1
    assert skipping.skips.counts == {"missing image": 1}
    # a batch in which every row is skipped cannot be trained on: said with the count and the reason
    with pytest.raises(UserError, match=r"every sample of this batch was bad \(all 2\) .*3 record\(s\) skipped "
                                        r"\(3 missing image\).*none-image"):
        skipping([no_image, {**no_image, "id": "none-image-2"}])


def test_remove_empty_folders_never_removes_a_file(tmp_path):
    from hf_llava.training.sft import remove_empty_folders

    (tmp_path / "out" / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint-2").mkdir()
    (tmp_path / "out" / "checkpoint-2" / "model.safetensors").write_text("trained")
    remove_empty_folders(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-2"]
    (tmp_path / "out" / "checkpoint-2" / "model.safetensors").unlink()
    remove_empty_folders(tmp_path / "out")
    assert not (tmp_path / "out").exists()
