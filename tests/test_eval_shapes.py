"""Shapes VQA evaluation: scoring, chance levels, blank-image mode, batched generation, CLI outputs and report."""

import json

import pytest
from PIL import Image

from hf_llava.cli import main as cli_main
from hf_llava.data.shapes import QUESTION_TYPES
from hf_llava.data.schema import assistant_message, user_message
from hf_llava.eval.generate import blank_image, generate_answers, prompt_messages
from hf_llava.eval.shapes import chance_levels, load_rows, markdown_table, objects_table, score, score_by_objects
from hf_llava.testing import random_image, tiny_llava


def vqa_row(qtype, answer, question="q?", image=None):
    return {"id": f"{qtype}-{answer}", "question_type": qtype, "question": question, "answer": answer,
            "images": [image or random_image(0)],
            "messages": [user_message(question, with_image=True), assistant_message(answer)]}


@pytest.fixture(scope="module")
def tiny():
    return tiny_llava(seed=3, chat_template="chatml")


def test_score_uses_normalised_exact_match_per_type_and_overall():
    rows = [vqa_row("color", "red"), vqa_row("color", "blue"), vqa_row("position", "top left"),
            vqa_row("count", "2"), vqa_row("existence", "no")]
    predictions = ["Red.", "red", "In the upper-left corner", "two", "no, there is none"]
    table = score(rows, predictions)
    assert list(table) == ["color", "count", "position", "existence", "overall"]  # QUESTION_TYPES order
    assert table["color"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert table["position"]["correct"] == 1 and table["count"]["correct"] == 1
    assert table["existence"]["correct"] == 0  # a sentence is not the short answer
    assert table["overall"] == {"correct": 3, "total": 5, "accuracy": 0.6}
    with pytest.raises(ValueError, match="2 predictions for 5 rows"):
        score(rows, predictions[:2])


def test_chance_is_the_majority_answer_of_each_type():
    rows = [vqa_row("existence", a) for a in ("yes", "no", "No", "no")] + [
        vqa_row("count", a) for a in ("1", "one", "2")]
    chance = chance_levels(rows)
    assert chance["existence"] == {"correct": 3, "total": 4, "accuracy": 0.75, "answer": "no"}
    assert chance["count"]["answer"] == "1" and chance["count"]["correct"] == 2  # "one" normalises to "1"
    assert chance["overall"]["correct"] == 5 and chance["overall"]["total"] == 7


def test_score_by_objects_splits_each_type_by_the_scene_object_count():
    rows = [{**vqa_row("color", "red"), "num_objects": 1}, {**vqa_row("color", "blue"), "num_objects": 3},
            {**vqa_row("color", "green"), "num_objects": 3}, {**vqa_row("existence", "no"), "num_objects": 1}]
    table = score_by_objects(rows, ["red", "blue", "red", "yes"])
    assert table["color"] == {1: {"correct": 1, "total": 1, "accuracy": 1.0},
                              3: {"correct": 1, "total": 2, "accuracy": 0.5}}
    assert table["existence"] == {1: {"correct": 0, "total": 1, "accuracy": 0.0}}
    assert table["overall"][1] == {"correct": 1, "total": 2, "accuracy": 0.5}
    markdown = objects_table({"by_num_objects": table})
    assert markdown.splitlines()[0] == "| question type | 1 object | 3 objects |"
    assert "| color | 100.0% (1/1) | 50.0% (1/2) |" in markdown and "| existence | 0.0% (0/1) |  |" in markdown
    assert score_by_objects([vqa_row("color", "red")], ["red"]) == {}  # rows without the column: no breakdown
    assert objects_table({"by_num_objects": {}}) == ""


def test_markdown_table_has_every_type_overall_blank_and_chance_columns():
    rows = load_rows(num_images=4)
    result = {"accuracy": score(rows, [r["answer"] for r in rows]), "blank_accuracy": score(rows, [""] * len(rows)),
              "chance": chance_levels(rows)}
    table = markdown_table(result)
    assert table.splitlines()[0] == ("| question type | questions | accuracy | blank image | chance (majority answer) "
                                     "|")
    for qtype in QUESTION_TYPES:
        assert f"| {qtype} | 4 | 100.0% (4/4) | 0.0% (0/4) |" in table
    assert "| **overall** | 20 | 100.0% (20/20) | 0.0% (0/20) |" in table
    assert "blank image" not in markdown_table({**result, "blank_accuracy": None})


def test_prompt_drops_the_gold_answer_and_blank_image_is_the_normalisation_mean(tiny):
    _, processor = tiny
    row = vqa_row("color", "red")
    assert prompt_messages(row["messages"]) == row["messages"][:1]
    with pytest.raises(ValueError, match="at least one user turn"):
        prompt_messages([assistant_message("hi")])
    blank = blank_image(Image.new("RGB", (40, 30), "red"), processor)
    assert blank.size == (40, 30) and len(blank.getcolors()) == 1
    pixels = processor.image_processor(blank, return_tensors="pt")["pixel_values"]
    assert pixels.abs().max() < 0.01  # the normalisation mean: the model sees zeros


def test_batched_left_padded_generation_equals_one_by_one(tiny):
    model, processor = tiny
    rows = [vqa_row("color", "red", q, random_image(k)) for k, q in enumerate(
        ["What color?", "Look closely at the picture: what colour is the shape in the upper left corner?",
         "How many shapes are there in the image? Answer with one number.", "Where?", "Is there a red circle?"])]
    batched = generate_answers(model, processor, rows, batch_size=3, max_new_tokens=6)
    alone = generate_answers(model, processor, rows, batch_size=1, max_new_tokens=6)
    assert batched == alone and len(batched) == 5 and any(batched)


def test_blank_image_mode_replaces_every_image(tiny):
    model, processor = tiny
    rows = [vqa_row("color", "red", "What is in the image?", random_image(seed)) for seed in (11, 12)]
    real = generate_answers(model, processor, rows, max_new_tokens=8)
    blank = generate_answers(model, processor, rows, max_new_tokens=8, blank_images=True)
    assert real[0] != real[1]  # this random model's answer depends on the picture...
    assert blank[0] == blank[1]  # ...and with blank images the two rows are the same question
    grey = [{**row, "images": [blank_image(row["images"][0], processor)]} for row in rows]
    assert generate_answers(model, processor, grey, max_new_tokens=8) == blank


def test_rows_from_a_built_folder_equal_generated_rows(tmp_path):
    from hf_llava.data.builder import build_to_disk, load_builder_script

    builder = load_builder_script("datasets_scripts/synthetic_shapes.py").SyntheticShapes
    build_to_disk(builder, str(tmp_path / "shapes"), configs=["vqa"], num_eval_images=3)
    built, generated = load_rows(tmp_path / "shapes"), load_rows(num_images=3)
    fields = ("id", "question", "answer", "question_type", "messages")
    assert [{k: r[k] for k in fields} for r in built] == [{k: r[k] for k in fields} for r in generated]
    assert list(built[0]["images"][0].getdata()) == list(generated[0]["images"][0].getdata())
    with pytest.raises(FileNotFoundError, match="holds no saved dataset"):
        load_rows(tmp_path)
    with pytest.raises(ValueError, match="exactly one of"):
        load_rows()


def test_eval_shapes_cli_writes_predictions_tables_report_and_grid(tiny, tmp_path, capsys):
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "eval"
    assert cli_main(["eval", "shapes", "--model", str(tmp_path / "model"), "--num-images", "3", "--blank-image",
                     "--output-dir", str(out), "--max-new-tokens", "4"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 15 and {r["question_type"] for r in records} == set(QUESTION_TYPES)
    assert all({"prediction", "correct", "blank_prediction", "blank_correct"} <= set(r) for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["num_questions"] == 15 and results["model"] == str(tmp_path / "model")
    assert set(results["blank_accuracy"]) == {*QUESTION_TYPES, "overall"}
    report = (out / "report.md").read_text()
    for qtype in QUESTION_TYPES:
        assert f"| {qtype} | 3 |" in report
    assert "![images, questions and answers](grid.png)" in report and "majority-answer baseline" in report
    assert "## Accuracy by objects in the scene" in report  # generated rows carry num_objects
    assert sum(t["total"] for t in results["by_num_objects"]["overall"].values()) == 15
    with Image.open(out / "grid.png") as grid:
        assert grid.width == 5 * 176 and grid.height > 3 * 176  # 5 question types per row, 3 scenes
    assert "| **overall** | 15 |" in capsys.readouterr().out
