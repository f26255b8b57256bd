"""Common user errors at every fixed entry point, run as a user would (a subprocess): exit code 2, no traceback, and
a message that names the offending path, flag or key. `--debug` brings the traceback back.

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

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HF_LLAVA = [sys.executable, "-m", "hf_llava.cli"]


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
        [sys.executable, str(REPO / "datasets_scripts" / "llava_instruct.py"), "--json", "{empty_json}",
         "--output-dir", "{root}/dataset"],
        ["--json {empty_json}: the input has no records"]),
}


def fill(text: str, files: dict) -> str:
    return text.format(**{key: str(value) for key, value in files.items()})


def run(command: list[str], files: dict) -> subprocess.CompletedProcess:
    return subprocess.run([fill(part, files) for part in command], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENAI_API_KEY": "sk-unused", "HF_LLAVA_DEBUG": ""})


def test_user_errors_exit_2_with_one_clear_line(files):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CASES, pool.map(lambda case: run(case[0], files), CASES.values())))
    for name, (_, expected) in CASES.items():
        result = results[name]
        assert result.returncode == 2, f"{name}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr[-2000:]}"
        for text in expected:
            assert fill(text, files) in result.stderr, f"{name}: {fill(text, files)!r} not in\n{result.stderr}"
    assert not (files["root"] / "out-a").exists() and not list(files["root"].glob("*.partial-*"))  # nothing left


def test_debug_shows_the_traceback_of_a_user_error(files):
    command, _ = CASES["convert: output is the input"]
    result = run([*HF_LLAVA, "--debug", *command[len(HF_LLAVA):]], files)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert f"hf_llava.errors.UserError: OUT {files['hf_llava']}: is (or contains) the input" in result.stderr
