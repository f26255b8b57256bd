"""The main job (`hf-llava demo`) end to end in --quick mode (tiny random LLM, 2 steps per stage): every stage's
artefacts, the report, and resuming (finished stages reused, an unfinished one redone, other settings refused)."""

import json
import shutil

import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file

from hf_llava import demo
from hf_llava.cli import main as cli_main
from hf_llava.data.shapes import HELD_OUT_ID_OFFSET, QUESTION_TYPES, SHORT_ANSWER_SUFFIX

STAGE_FILES = {
    "data": ["caption/dataset_dict.json", "instruct/dataset_dict.json", "vqa/dataset_dict.json",
             "text/dataset_dict.json", "build_report.json"],
    "tower": ["model.safetensors", "config.json", "preprocessor_config.json", "contrastive_training.json"],
    "stage1-pretrain": ["model.safetensors", "config.json", "processor_config.json", "modeling_hf_llava.py"],
    "stage2-finetune": ["model.safetensors", "config.json", "chat_template.jinja", "README.md"],
    "eval": ["predictions.jsonl", "results.json", "results.md"],
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli_main(["demo", "--quick", "--output-dir", str(out)])
    return out, code, stdout.getvalue()


@pytest.fixture
def quick_run_copy(quick_run, tmp_path):
    """A copy of the quick run's output folder, for a test that runs the demo on it again: the shared run stays as
    it was made, so every test sees the same folder in any order."""
    out = tmp_path / "demo"
    shutil.copytree(quick_run[0], out)
    return out


def markers(out):
    return {name: json.loads((out / name / demo.MARKER).read_text()) for name in demo.STAGES}


def test_quick_demo_runs_every_stage_and_writes_the_report(quick_run):
    out, code, stdout = quick_run
    assert code == 0
    for stage, files in STAGE_FILES.items():
        for name in files:
            assert (out / stage / name).is_file(), f"{stage}/{name}"
    info = markers(out)
    assert info["stage1-pretrain"]["steps"] == 2 and info["stage2-finetune"]["steps"] == 2
    assert info["stage1-pretrain"]["settings"]["quick"] is True and info["tower"]["steps"] == 2
    # stage 1 composed its model from the demo's own contrastive tower, and kept it frozen
    tower = load_file(out / "tower" / "model.safetensors")["embeddings.patch_embedding.weight"]
    stage1 = load_file(out / "stage1-pretrain" / "model.safetensors")
    stage1_patches = next(v for k, v in stage1.items() if k.endswith("vision_tower.embeddings.patch_embedding.weight"))
    assert torch.equal(stage1_patches, tower)
    records = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(QUESTION_TYPES) and all("blank_prediction" in r for r in records)
    report = (out / "report.md").read_text()
    for qtype in [*QUESTION_TYPES, "**overall**"]:
        assert f"| {qtype} | " in report
    for heading in ("## Accuracy per question type", "## Sample chat", "## Timings", "## Grid"):
        assert heading in report
    assert (out / "grid.png").stat().st_size > 1000
    assert "ASSISTANT:" in stdout and "[5/5] eval: done" in stdout


def test_stage2_trains_the_recipes_mixture_on_the_demos_training_scenes(quick_run):
    out, _, _ = quick_run
    vqa = load_from_disk(str(out / "data" / "vqa"))
    assert len(vqa["train"]) == 16 * len(QUESTION_TYPES) and len(vqa["test"]) == 2 * len(QUESTION_TYPES)
    assert all(int(row["id"].split("-")[1]) < HELD_OUT_ID_OFFSET for row in vqa["train"])  # never held-out scenes
    for row in vqa["train"]:  # one short-answer question per row (packing leaked answers through the text)
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"][-1]["text"].endswith(SHORT_ANSWER_SUFFIX)
    card = (out / "stage2-finetune" / "README.md").read_text()
    for spec in demo.recipe_datasets(demo.RECIPES / "finetune.yaml", out / "data"):
        assert spec["path"] == str(out / "data") and spec["name"] in card  # the recipe's sources, demo's data


def test_rerun_reuses_finished_stages_and_redoes_an_unfinished_one(quick_run_copy, monkeypatch, capsys):
    out = quick_run_copy
    before = markers(out)
    (out / "eval" / demo.MARKER).unlink()  # as if the eval stage had been interrupted
    monkeypatch.setattr(demo, "train", lambda *args: pytest.fail("a finished training stage ran again"))
    assert cli_main(["demo", "--quick", "--output-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    for name in ("data", "tower", "stage1-pretrain", "stage2-finetune"):
        assert f"{name}: finished earlier, reusing" in stdout
    assert "eval: clearing an unfinished earlier attempt" in stdout and "[5/5] eval: done" in stdout
    after = markers(out)
    assert {k: after[k] for k in STAGE_FILES if k != "eval"} == {k: before[k] for k in STAGE_FILES if k != "eval"}


def test_an_edited_recipe_redoes_its_stage_and_every_later_one(quick_run_copy, monkeypatch, capsys, tmp_path):
    out = quick_run_copy
    before = markers(out)
    edit = tmp_path / "finetune-edit.yaml"  # stands for a changed finetune.yaml (the real one stays untouched)
    edit.write_text("max_steps: 3\n")
    sources = demo.stage_sources
    monkeypatch.setattr(demo, "stage_sources", lambda: {**sources(), "stage2-finetune": [
        *sources()["stage2-finetune"], edit]})
    assert cli_main(["demo", "--quick", "--output-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    for name in ("data", "tower", "stage1-pretrain"):
        assert f"{name}: finished earlier, reusing" in stdout
    assert "stage2-finetune: made from another recipe, data builder or earlier stage; redoing it" in stdout
    after = markers(out)
    assert after["stage2-finetune"]["inputs"] != before["stage2-finetune"]["inputs"]
    assert after["eval"]["inputs"] != before["eval"]["inputs"]  # its input, stage 2, was redone: so was the eval
    assert "[5/5] eval: done" in stdout


def test_a_recipe_counts_by_its_settings_not_its_comments(tmp_path):
    recipe = tmp_path / "finetune.yaml"
    recipe.write_text("max_steps: 600  # ~14.5 min\nseed: 0\n")
    original = demo.fingerprint([recipe], None)
    recipe.write_text("# a new note\nmax_steps: 600  # measured again: 14.2 min\nseed: 0\n")
    assert demo.fingerprint([recipe], None) == original
    recipe.write_text("max_steps: 720\nseed: 0\n")
    assert demo.fingerprint([recipe], None) != original


def test_finished_stages_made_with_other_settings_are_refused(quick_run, capsys):
    out, _, _ = quick_run
    assert cli_main(["demo", "--quick", "--num-images", "8", "--output-dir", str(out)]) == 2
    assert "was made with other settings" in capsys.readouterr().err



@pytest.mark.parametrize("chosen, turned_off", [("fp32", True), ("bf16", False)])
def test_the_precision_choice_reaches_the_training_stages(monkeypatch, tmp_path, capsys, chosen, turned_off):
    """fp32 (auto on a CPU that would emulate bf16) overrides the recipes' bf16 autocast; bf16 keeps their settings.
    The training stages are faked: only the arguments the demo hands them matter here."""
    from hf_llava.training import precision

    class Stop(Exception):
        pass

    extras = {}

    def fake_stage(out):
        out.mkdir(parents=True, exist_ok=True)
        return {}

    def fake_train(recipe, out, data, extra, callbacks=None):
        extras[recipe.name] = extra
        assert callbacks, "each training stage gets the clock's step-estimate callback"
        if recipe.name == "finetune.yaml":
            raise Stop
        return fake_stage(out)

    monkeypatch.setattr(demo, "build_data", lambda out, settings: fake_stage(out))
    monkeypatch.setattr(demo, "train_tower", lambda recipe, out, data, extra, step_callback=None: fake_stage(out))
    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(precision, "choose_precision",
                        lambda requested: precision.Precision(chosen, "bf16 would be emulated here"))
    with pytest.raises(Stop):
        cli_main(["demo", "--output-dir", str(tmp_path)])
    for recipe in ("pretrain.yaml", "finetune.yaml"):
        assert (extras[recipe][-2:] == ["--bf16", "false"]) is turned_off
    assert json.loads((tmp_path / "data" / demo.MARKER).read_text())["settings"]["precision"] == chosen
    assert f"precision: {chosen} (bf16 would be emulated here)" in capsys.readouterr().out
