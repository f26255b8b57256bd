import itertools
import json
import random

import datasets
import pytest
from data_helpers import builder_module

from hf_llava.data import load_coco, symbolic_context
from hf_llava.data import shapes as S
from hf_llava.data.builder import build_to_disk

SCENES = list(S.generate_scenes(300, seed=3))


def test_scenes_are_deterministic_and_prefix_stable():
    assert list(S.generate_scenes(300, seed=3)) == SCENES
    assert list(S.generate_scenes(10, seed=3)) == SCENES[:10]  # scene i does not depend on N
    assert S.png_bytes(SCENES[5]) == S.png_bytes(next(itertools.islice(S.generate_scenes(6, seed=3), 5, None)))
    assert list(S.generate_scenes(10, seed=4)) != SCENES[:10]
    held_out = list(S.generate_scenes(10, seed=3, held_out=True))
    assert [s.objects for s in held_out] != [s.objects for s in SCENES[:10]]
    assert min(s.image_id for s in held_out) == S.HELD_OUT_ID_OFFSET


def test_scene_layout_is_unambiguous_and_rendered_where_annotated():
    counts = {len(s.objects) for s in SCENES}
    assert counts == {1, 2, 3, 4}
    for scene in SCENES:
        objs = scene.objects
        assert len({o.name for o in objs}) == len(objs)  # colour+shape names one object
        assert len({o.position for o in objs}) == len(objs)  # one object per grid cell
        image = S.render(scene)
        cell = scene.image_size / 3
        for o in objs:
            x, y, w, h = o.bbox
            row, col = divmod(S.POSITIONS.index(o.position), 3)
            assert col * cell <= x and x + w <= (col + 1) * cell and row * cell <= y and y + h <= (row + 1) * cell
            # the centre of the box (inside circle, square and triangle alike) has the object's colour
            px = image.getpixel((int(x + w / 2), int(y + h / 2 + 1)))
            assert max(abs(a - b) for a, b in zip(px, S.COLORS[o.color])) < 30, (scene, o, px)


def _referents(scene, question):
    """Objects a question's words can refer to (an independent reading of the templates)."""
    words = question.lower()
    objs = [o for o in scene.objects if not any(f" {c} " in f" {words} " and o.color != c for c in S.COLORS)]
    objs = [o for o in objs if not any(s in words and o.shape != s for s in S.SHAPES)]
    places = [p for p in S.POSITIONS if S.where(p) in words]
    return [o for o in objs if not places or o.position == places[-1]]


def test_questions_have_one_correct_answer():
    rng = random.Random(0)
    seen = {t: set() for t in S.QUESTION_TYPES}
    for scene in SCENES:
        for qtype in S.QUESTION_TYPES:
            q = S.ask(scene, qtype, rng)
            seen[qtype].add(q.answer)
            if qtype in ("color", "shape", "position"):
                (obj,) = _referents(scene, q.question)  # exactly one object fits the question
                assert q.answer == {"color": obj.color, "shape": obj.shape, "position": obj.position}[qtype]
            elif qtype == "existence":
                assert q.answer == ("yes" if _referents(scene, q.question) else "no")
            else:
                assert q.answer == str(len(_referents(scene, q.question)))
    assert seen["color"] == set(S.COLORS) and seen["shape"] == set(S.SHAPES)
    assert seen["position"] == set(S.POSITIONS) and seen["existence"] == {"yes", "no"}
    assert {"0", "1", "2", "3", "4"} <= seen["count"]


@pytest.mark.parametrize("prediction, gold", [
    ("Red.", "red"), ("The top-left corner", "top left"), ("upper left", "top left"), ("left top", "top left"),
    ("the middle", "center"), ("centre", "center"), ("top center", "top"), ("Three", "3"), ("none", "0"),
    ("Yes", "yes"), ("a circle", "circle"), ("on the right side", "right"),
    ("in the bottom right corner", "bottom right"),
])
def test_normalize_answer_matches_equivalent_forms(prediction, gold):
    assert S.exact_match(prediction, gold)


@pytest.mark.parametrize("prediction, gold", [("top", "top left"), ("2", "3"), ("no", "yes"), ("square", "circle"),
                                              ("left", "right"), ("red circle", "red"), ("in", "")])
def test_normalize_answer_keeps_different_answers_apart(prediction, gold):
    assert not S.exact_match(prediction, gold)


def test_rows_of_each_config():
    scene = SCENES[7]
    img = S.png_bytes(scene)
    cap = S.caption_row(scene, img)
    assert cap["messages"][1]["content"][0]["text"] in S.captions(scene) and len(S.captions(scene)) == 5
    assert cap["messages"][0]["content"][1]["text"] in S.BRIEF_DESCRIPTION
    inst = S.instruct_row(scene, img)
    roles = [m["role"] for m in inst["messages"]]
    assert roles == ["user", "assistant"] * (len(roles) // 2) and 2 <= len(roles) // 2 <= 5
    assert sum(b["type"] == "image" for m in inst["messages"] for b in m["content"]) == 1
    assert sum(b["type"] == "image" for b in inst["messages"][0]["content"]) == 1
    vqa = list(S.vqa_rows(scene, img))
    assert [r["question_type"] for r in vqa] == list(S.QUESTION_TYPES)
    for r in vqa:
        assert r["num_objects"] == len(scene.objects)
        assert r["messages"][0]["content"][1]["text"] == f"{r['question']}\n{S.SHORT_ANSWER_SUFFIX}"
        assert r["messages"][1]["content"][0]["text"] == r["answer"]
    # text config: the same questions, the scene in words instead of the image
    text = list(S.vqa_rows(scene, None))
    assert [r["question_type"] for r in text] == list(S.QUESTION_TYPES)
    assert all(r["images"] == [] and r["id"].startswith("text-") for r in text)
    for r in text:
        (block,) = r["messages"][0]["content"]
        assert block == {"type": "text", "text": f"The image shows {S.layout(scene)}.\n{r['question']}\n"
                                                 f"{S.SHORT_ANSWER_SUFFIX}"}
        assert r["messages"][1]["content"][0]["text"] == r["answer"]


def test_text_rows_answer_from_the_described_layout():
    """Every text row's answer follows from its description alone (what the LLM learns to match)."""
    for scene in SCENES:
        described = S.layout(scene)
        for r in S.vqa_rows(scene, None):
            if r["question_type"] == "color":  # the object named in the question has the answered colour
                assert any(o.color == r["answer"] and f"{o.color} {o.shape}" in described for o in scene.objects)
            if r["question_type"] == "existence":
                name = r["question"].removeprefix("Is there a ").removesuffix(" in the image?")
                assert (name in described) == (r["answer"] == "yes"), r["question"]
            if r["question_type"] == "position":
                name = r["question"].removeprefix("Where is the ").removesuffix("?")
                assert f"{name} {S.where(r['answer'])}" in described


def test_builder_writes_every_config_and_coco_files(tmp_path):
    cls = builder_module("synthetic_shapes").SyntheticShapes
    coco = tmp_path / "coco"
    report = build_to_disk(cls, str(tmp_path / "out"), num_images=12, num_eval_images=4, image_size=48, seed=1,
                           coco_dir=str(coco))
    rows = {f"{c}/{s}": v["rows"] for c, cfg in report["configs"].items() for s, v in cfg["splits"].items()}
    assert rows == {"caption/train": 12, "instruct/train": 12, "vqa/train": 60, "vqa/test": 20, "text/train": 60,
                    "scenes/train": 12, "scenes/test": 4}
    vqa = datasets.load_from_disk(str(tmp_path / "out" / "vqa"))["test"]
    assert vqa.column_names == ["id", "images", "messages", "question", "answer", "question_type", "num_objects"]
    assert vqa[0]["images"][0].size == (48, 48)
    text = datasets.load_from_disk(str(tmp_path / "out" / "text"))["train"]
    assert text.column_names == vqa.column_names and text[0]["images"] == []
    assert min(int(i.split("-")[1]) for i in vqa["id"]) == S.HELD_OUT_ID_OFFSET  # held-out scenes only
    train_ids = {int(i.split("-")[1]) for i in datasets.load_from_disk(str(tmp_path / "out" / "vqa"))["train"]["id"]}
    assert train_ids == set(range(12))  # the training scenes, never held-out ones
    scenes = datasets.load_from_disk(str(tmp_path / "out" / "scenes"))["train"]
    # the COCO files the data engine reads describe the same scenes as the scenes config
    coco_images = load_coco(coco / "captions_train.json", coco / "instances_train.json")
    assert [symbolic_context(i) for i in coco_images] == scenes["context"]
    assert (coco / "images" / coco_images[0].file_name).exists()
    first = json.loads((coco / "instances_train.json").read_text())["annotations"][0]
    assert first["attributes"]["color"] in S.COLORS
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| vqa | test | 20 | 0 |" in card and "`question_type`" in card
