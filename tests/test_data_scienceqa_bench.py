import pytest
from data_helpers import builder_module, pixels, write_image, write_json

from hf_llava.data.builder import build
from hf_llava.data.errors import BadRecordError
from hf_llava.data.scienceqa import parse_format, prompt

PROBLEMS = {
    "11": {"question": "Which animal is a mammal?", "choices": ["trout", "cat", "frog"], "answer": 1, "hint": "",
           "image": "image.png", "grade": "grade3", "subject": "natural science", "lecture": "Mammals have fur.",
           "solution": "A cat has fur.", "split": "train"},
    "12": {"question": "Which word is a noun?", "choices": ["run", "table"], "answer": 1,
           "hint": "Nouns name things.", "image": None, "grade": "grade8", "subject": "language science",
           "lecture": "", "solution": "Table names a thing.", "split": "train"},
    "13": {"question": "Which state is farthest north?", "choices": ["Maine", "Texas"], "answer": 0,
           "hint": "Look at the map.", "image": "image.png", "grade": "grade12", "subject": "social science",
           "lecture": "Maps show places.", "solution": "Maine is farthest north.", "split": "test"},
    "14": {"question": "Broken", "choices": ["a", "b"], "answer": 5, "hint": "", "image": None, "grade": "grade1",
           "subject": "natural science", "lecture": "", "solution": "", "split": "test"},
}
SPLITS = {"train": ["11", "12"], "test": ["13", "14"], "val": []}


def test_prompt_formats():
    p = PROBLEMS["11"]
    user = "Question: Which animal is a mammal?\nContext: N/A\nOptions: (A) trout (B) cat (C) frog"
    assert prompt(p, "QCM-A") == (user, "The answer is B.")
    assert prompt(p, "QCM-LEA") == (user, "Mammals have fur. A cat has fur. The answer is B.")
    assert prompt(p, "QCM-AEL") == (user, "The answer is B. BECAUSE: A cat has fur. Mammals have fur.")
    assert prompt(PROBLEMS["12"], "CQM-LEA")[1] == "Table names a thing. The answer is B."  # empty lecture dropped
    assert prompt(PROBLEMS["12"], "CQM-A")[0].startswith("Context: Nouns name things.\nQuestion:")
    for bad in ("QCM", "QQM-A", "CM-A", "QCM-LAE", "QCM-X"):
        with pytest.raises(ValueError, match="unknown ScienceQA format"):
            parse_format(bad)


def sqa_files(tmp_path):
    write_image(tmp_path / "images" / "train" / "11" / "image.png", (0, 255, 0), size=(4, 4))
    write_image(tmp_path / "images" / "test" / "13" / "image.png", (0, 0, 255), size=(4, 4))
    return dict(problems=write_json(tmp_path / "problems.json", PROBLEMS),
                splits=write_json(tmp_path / "pid_splits.json", SPLITS), image_root=str(tmp_path / "images"))


def test_scienceqa_builder_rows(tmp_path):
    cls = builder_module("scienceqa").ScienceQA
    files = sqa_files(tmp_path)
    with pytest.raises(BadRecordError, match="pid 14: malformed problem.*not an index into 2 choices"):
        build(cls, **files)
    dd, reports = build(cls, skip_bad=True, format="QCM-A", **files)
    assert sorted(dd) == ["test", "train", "val"] and len(dd["val"]) == 0
    assert reports["test"].counts == {"malformed record": 1}
    r11, r12 = dd["train"]
    assert r11["id"] == "11" and pixels(r11["images"][0]) == [(0, 255, 0)] * 16
    assert r11["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert r11["messages"][1]["content"][0]["text"] == "The answer is B."
    assert (r11["answer"], r11["num_choices"], r11["subject"], r11["context_modality"], r11["grade"],
            r11["grade_band"]) == ("B", 3, "NAT", ["IMG"], "grade3", "G1-6")
    assert r12["images"] == [] and len(r12["messages"][0]["content"]) == 1
    assert (r12["subject"], r12["context_modality"], r12["grade_band"]) == ("LAN", ["TXT"], "G7-12")
    (r13,) = dd["test"]
    assert (r13["subject"], r13["context_modality"], r13["grade_band"]) == ("SOC", ["TXT", "IMG"], "G7-12")
    with pytest.raises(ValueError, match="unknown ScienceQA format"):
        build(cls, format="QCM-Z", **files)



def test_a_built_folder_with_an_empty_split_opens(tmp_path):
    # datasets cannot load_from_disk a saved split with no rows: the builder leaves the empty split out of the data
    # and keeps it in the report (here ScienceQA's val, given no problems)
    import json

    from datasets import load_from_disk
    from hf_llava.data.builder import build_to_disk

    out = tmp_path / "sqa"
    report = build_to_disk(builder_module("scienceqa").ScienceQA, str(out), skip_bad=True, **sqa_files(tmp_path))
    assert sorted(load_from_disk(str(out))) == ["test", "train"]
    assert report["configs"]["default"]["splits"]["val"]["rows"] == 0
    assert json.loads((out / "build_report.json").read_text()) == report

def bench_files(tmp_path, coco: bool):
    write_image(tmp_path / "img" / "001.jpg", (9, 9, 9), size=(2, 2), fmt="PNG")
    questions = [{"question_id": 0, "image": "001.jpg", "text": "What is shown?", "category": "conv"},
                 {"question_id": 1, "image": "001.jpg", "text": "Describe it.", "category": "detail"}]
    answers = [{"question_id": 0, "answer_id": "a", "model_id": "gpt-4-0314", "text": "A grey square."},
               {"question_id": 1, "text": "A small grey square fills the frame."}]
    context = ([{"id": "001", "image": "001.jpg", "captions": ["A square.", "Grey block."],
                 "instances": [{"category": "block", "bbox": [0.1, 0.25, 0.9, 1.0]}]}] if coco
               else [{"id": "001", "image": "001.jpg", "caption": "A grey square on grey."}])
    return dict(questions=write_json(tmp_path / "q.jsonl", questions, jsonl=True),
                answers=write_json(tmp_path / "a.jsonl", answers, jsonl=True),
                context=write_json(tmp_path / "c.jsonl", context, jsonl=True), image_root=str(tmp_path / "img"))


@pytest.mark.parametrize("coco, context", [
    (True, "A square.\nGrey block.\nblock: [0.100, 0.250, 0.900, 1.000]"), (False, "A grey square on grey.")])
def test_llava_bench_rows(tmp_path, coco, context):
    dd, _ = build(builder_module("llava_bench").LlavaBench, **bench_files(tmp_path, coco))
    r0, r1 = dd["test"]
    assert (r0["id"], r0["question_id"], r0["category"], r0["image_file"]) == ("0", "0", "conv", "001.jpg")
    assert (r0["question"], r0["reference_answer"], r0["context"]) == ("What is shown?", "A grey square.", context)
    assert r0["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]
    assert r0["messages"][1]["content"][0]["text"] == "A grey square."
    assert r1["category"] == "detail" and pixels(r1["images"][0]) == [(9, 9, 9)] * 4


def test_llava_bench_bad_inputs(tmp_path):
    files = bench_files(tmp_path, coco=False)
    write_json(files["questions"], [{"question_id": 0, "image": "001.jpg", "text": "q", "category": "conv"},
                                    {"question_id": 5, "image": "001.jpg", "text": "q", "category": "conv"},
                                    {"question_id": 1, "image": "001.jpg", "text": "q", "category": "poetry"}],
               jsonl=True)
    cls = builder_module("llava_bench").LlavaBench
    with pytest.raises(BadRecordError, match="a.jsonl: record question_id 5: no reference answer"):
        build(cls, **files)
    dd, reports = build(cls, skip_bad=True, **files)
    assert dd["test"]["id"] == ["0"] and reports["test"].counts == {"missing answer": 1, "unknown category": 1}
