"""POPE: the original's yes/no rule and metrics on its own files, the builder, bad inputs, and an end-to-end run on
a tiny model."""

import itertools
import json

import pytest
from data_helpers import builder_module, pixels, write_image, write_json

from hf_llava.data.builder import build
from hf_llava.data.errors import BadRecordError
from hf_llava.errors import UserError
from hf_llava.eval import pope


# The original's rule on each text (checked by running eval_pope.py's logic on them).
@pytest.mark.parametrize("text, expected", [
    ("Yes, there is a cat.", "yes"),
    ("No", "no"),
    ("no.", "no"),
    ("There is not a dog.", "no"),
    ("Nope, no dog", "no"),  # the comma is dropped, then "no" is a word
    ("I see a dog. No wait.", "yes"),  # only the first sentence counts
    ("", "yes"),  # an empty answer is "yes"
    ("Not really", "yes"),  # "Not" is not among No/not/no
    ("NO", "yes"),
    ("No\nthere is none", "yes"),  # words are split on spaces only: "No\nthere" is one word
])
def test_yes_no_rule(text, expected):
    assert pope.yes_no(text) == expected


# label, image, answer text; answers are paired with labels in order within a category (the original's way)
RANDOM = [("yes", "a.jpg", "Yes, there is a cat."), ("no", "a.jpg", "No"), ("yes", "b.jpg", "Not really"),
          ("no", "b.jpg", "There is not a dog."), ("yes", "c.jpg", "I see a dog. No wait."), ("no", "c.jpg", "NO")]
POPULAR = [("yes", "a.jpg", "no."), ("yes", "b.jpg", "No\nthere is none"), ("no", "b.jpg", ""),
           ("no", "c.jpg", "Nope, no dog")]
ADVERSARIAL = [("no", "a.jpg", "no"), ("no", "b.jpg", "yes"), ("yes", "c.jpg", "Yes")]
CATEGORIES = {"random": RANDOM, "popular": POPULAR, "adversarial": ADVERSARIAL}


def original_files(tmp_path, categories=CATEGORIES):
    """LLaVA's layout: coco_pope_<category>.json label files (ids restart at 1), one question file with unique ids
    and the category, and an answer file whose categories are interleaved."""
    questions, answers = [], {}
    for category, items in categories.items():
        write_json(tmp_path / "ann" / f"coco_pope_{category}.json",
                   [{"question_id": i + 1, "image": image, "text": f"Is there a thing {i}?", "label": label}
                    for i, (label, image, _) in enumerate(items)], jsonl=True)
        for i, (_, image, text) in enumerate(items):
            qid = len(questions) + 100
            questions.append({"question_id": qid, "image": image, "text": f"Is there a thing {i}?",
                              "category": category})
            answers.setdefault(category, []).append({"question_id": qid, "prompt": "q", "text": text,
                                                     "answer_id": "x", "model_id": "m", "metadata": {}})
    # round robin over the categories: interleaved in the file, in label order within each category
    merged = [a for group in itertools.zip_longest(*answers.values()) for a in group if a is not None]
    return (write_json(tmp_path / "answers.jsonl", merged, jsonl=True),
            write_json(tmp_path / "llava_pope_test.jsonl", questions, jsonl=True), tmp_path / "ann")


def test_original_files_give_the_original_numbers(tmp_path):
    splits, records = pope.score_original_files(*original_files(tmp_path))
    assert list(splits) == ["random", "popular", "adversarial"]
    # eval_pope.py's logic run on these files printed (TP FP TN FN, acc, precision, recall, F1, yes-ratio):
    # random 3 1 2 0, 0.8333, 0.75, 1.0, 0.8571, 0.6667; popular 1 1 1 1, 0.5 x4; adversarial 1 1 1 0,
    # 0.6667, 0.5, 1.0, 0.6667, 0.6667
    r, p, a = splits["random"], splits["popular"], splits["adversarial"]
    assert (r["TP"], r["FP"], r["TN"], r["FN"], r["count"]) == (3, 1, 2, 0, 6)
    assert r["accuracy"] == pytest.approx(5 / 6) and r["precision"] == 0.75 and r["recall"] == 1.0
    assert r["f1"] == pytest.approx(6 / 7) and r["yes_ratio"] == pytest.approx(4 / 6)
    assert (p["TP"], p["FP"], p["TN"], p["FN"]) == (1, 1, 1, 1)
    assert p["accuracy"] == p["precision"] == p["recall"] == p["f1"] == p["yes_ratio"] == 0.5
    assert a["f1"] == pytest.approx(2 / 3) and a["precision"] == 0.5 and a["recall"] == 1.0
    assert pope.average(splits)["f1"] == pytest.approx((6 / 7 + 0.5 + 2 / 3) / 3)
    assert len(records) == 13 and sum(r["correct"] for r in records) == 5 + 2 + 2


def test_metrics_without_yes_answers_or_labels_are_none():
    m = pope.metrics(["no", "no"], ["yes", "no"])  # the original divides by zero here
    assert (m["TP"], m["FN"], m["TN"]) == (0, 1, 1) and m["precision"] is None and m["f1"] is None
    assert m["recall"] == 0.0 and m["accuracy"] == 0.5 and m["yes_ratio"] == 0.0
    m = pope.metrics(["no", "yes"], ["no", "no"])
    assert m["recall"] is None and m["precision"] == 0.0 and m["f1"] is None
    assert pope.metrics(["no", "yes"], ["yes", "no"])["f1"] == 0.0  # both defined, both zero


def test_original_files_bad_inputs(tmp_path):
    answers, questions, ann = original_files(tmp_path)
    lines = open(answers).read().splitlines()
    # the first and third random-category answers (lines 1 and 7) swapped: a.jpg and b.jpg trade places
    lines[0], lines[6] = lines[6], lines[0]
    (tmp_path / "swapped.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"coco_pope_random.json: line 1 is about a.jpg but 'random' answer #1 in "
                                        ".* is about b.jpg"):
        pope.score_original_files(tmp_path / "swapped.jsonl", questions, ann)
    (tmp_path / "short.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(UserError, match="5 answers to 'random' questions but .*coco_pope_random.json has 6 labels"):
        pope.score_original_files(tmp_path / "short.jsonl", questions, ann)
    (tmp_path / "stranger.jsonl").write_text(json.dumps({"question_id": 9999, "text": "yes"}) + "\n")
    with pytest.raises(UserError, match="stranger.jsonl: the answer to question_id 9999 names a question "
                                        ".*llava_pope_test.jsonl does not"):
        pope.score_original_files(tmp_path / "stranger.jsonl", questions, ann)
    (tmp_path / "ann" / "coco_pope_random.json").write_text('{"question_id": 1, "label": "maybe"}\n')
    with pytest.raises(UserError, match=r"coco_pope_random.json: record #0 \(line 1\) needs \"label\""):
        pope.score_original_files(answers, questions, ann)
    with pytest.raises(UserError, match="--annotation-dir .*nowhere: no such folder"):
        pope.score_original_files(answers, questions, tmp_path / "nowhere")


def pope_inputs(tmp_path):
    for name, color in (("a.jpg", (255, 0, 0)), ("b.jpg", (0, 255, 0)), ("c.jpg", (0, 0, 255))):
        write_image(tmp_path / "val2014" / name, color, size=(4, 4))
    for category, items in CATEGORIES.items():
        write_json(tmp_path / "POPE" / f"coco_pope_{category}.json",
                   [{"question_id": i + 1, "image": image, "text": f"Is there a thing {i}?", "label": label}
                    for i, (label, image, _) in enumerate(items)], jsonl=True)
    return dict(questions=str(tmp_path / "POPE"), image_root=str(tmp_path / "val2014"))


def test_builder_rows_and_scoring_by_question_id(tmp_path):
    dd, _ = build(builder_module("pope").Pope, **pope_inputs(tmp_path))
    assert list(dd) == ["random", "popular", "adversarial"] and len(dd["random"]) == 6
    row = dd["popular"][1]
    assert (row["question_id"], row["pope_question_id"], row["category"], row["label"], row["image_file"]) == \
        ("popular-2", "2", "popular", "yes", "b.jpg")
    assert row["messages"][0]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "Is there a thing 1?\nAnswer the question using a single word or phrase."}]
    assert row["messages"][1]["content"][0]["text"] == "yes" and pixels(row["images"][0])[0] == (0, 255, 0)
    rows = [r for split in dd.values() for r in split.remove_columns("images")]
    answers = {f"{c}-{i + 1}": text for c, items in CATEGORIES.items() for i, (_, _, text) in enumerate(items)}
    splits, _ = pope.score_rows(rows, answers)
    expected, _ = pope.score_original_files(*original_files(tmp_path))
    assert splits == expected
    del answers["random-3"]
    with pytest.raises(UserError, match="no answer for question_id random-3"):
        pope.score_rows(rows, answers)


def test_builder_bad_inputs(tmp_path):
    files = pope_inputs(tmp_path)
    cls = builder_module("pope").Pope
    write_json(tmp_path / "POPE" / "coco_pope_random.json",
               [{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"},
                {"question_id": 2, "image": "zzz.jpg", "text": "Is there a dog?", "label": "no"},
                {"question_id": 3, "image": "a.jpg", "text": "Is there a cow?", "label": "perhaps"}], jsonl=True)
    with pytest.raises(BadRecordError, match="coco_pope_random.json: record question_id 2: image file not found"):
        build(cls, **files)
    dd, reports = build(cls, skip_bad=True, **files)
    assert len(dd["random"]) == 1 and reports["random"].counts == {"missing image": 1, "bad label": 1}
    (tmp_path / "questions.json").write_text("{}")
    with pytest.raises(UserError, match="questions.json: not a POPE question/label file name"):
        build(cls, questions=f"{files['questions']}/coco_pope_popular.json,{tmp_path}/questions.json",
              image_root=files["image_root"])
    with pytest.raises(UserError, match="nowhere: no such POPE file or folder"):
        build(cls, questions=str(tmp_path / "nowhere"), image_root=files["image_root"])


def test_end_to_end_on_a_tiny_model_and_the_cli_modes(tmp_path, capsys):
    from inference_helpers import save_tiny_checkpoint

    from hf_llava.cli import main as cli_main
    from hf_llava.data.builder import build_to_disk

    build_to_disk(builder_module("pope").Pope, str(tmp_path / "data"), **pope_inputs(tmp_path))
    model = save_tiny_checkpoint(tmp_path / "model")
    out = tmp_path / "out"
    assert cli_main(["eval", "pope", "--model", str(model), "--data", str(tmp_path / "data"), "--output-dir", str(out),
                     "--max-new-tokens", "3", "--limit", "2"]) == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    # --limit is per category
    assert [a["question_id"] for a in answers] == ["random-1", "random-2", "popular-1", "popular-2",
                                                   "adversarial-1", "adversarial-2"]
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "pope" and list(results["splits"]) == ["random", "popular", "adversarial"]
    assert all(s["count"] == 2 for s in results["splits"].values())
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == [pope.yes_no(a["text"]) for a in answers]
    assert "| random |" in (out / "results.md").read_text()

    # an answer file scored against the built rows, and the original's files: the same numbers
    answers_file, questions, ann = original_files(tmp_path)
    by_row = {f"{c}-{i + 1}": text for c, items in CATEGORIES.items() for i, (_, _, text) in enumerate(items)}
    write_json(tmp_path / "row_answers.jsonl", [{"question_id": q, "text": t} for q, t in by_row.items()], jsonl=True)
    assert cli_main(["eval", "pope", "--answers", str(tmp_path / "row_answers.jsonl"), "--data",
                     str(tmp_path / "data"), "--output-dir", str(tmp_path / "a")]) == 0
    assert cli_main(["eval", "pope", "--answers", answers_file, "--questions", questions, "--annotation-dir", str(ann),
                     "--output-dir", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b"))
    assert a["splits"] == b["splits"] and a["average"]["f1"] == pytest.approx((6 / 7 + 0.5 + 2 / 3) / 3)
    from huggingface_hub import EvalResult

    hub = [EvalResult(**entry) for entry in b["hub_results"]]
    assert (hub[0].metric_name, hub[0].metric_value) == ("F1 (average of categories)", 67.46)
    assert [(h.dataset_config, h.metric_type) for h in hub[1:3]] == [("random", "f1"), ("random", "accuracy")]
    capsys.readouterr()
    assert cli_main(["eval", "pope", "--answers", answers_file, "--output-dir", str(tmp_path / "c")]) == 2
    assert "give --data" in capsys.readouterr().err
