import pytest
from data_helpers import builder_module, pixels, write_image, write_json

from hf_llava.data import BadRecordError, SkipReport, load_coco, symbolic_context
from hf_llava.data.builder import build

IMAGES = [{"id": 42, "file_name": "000042.jpg", "width": 200, "height": 100},
          {"id": 7, "file_name": "000007.jpg", "width": 50, "height": 50}]
CATS = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog", "supercategory": "animal"}]


def coco_files(tmp_path, instances=None, captions=None):
    caps = captions or [{"id": 1, "image_id": 42, "caption": "A man walks a dog."},
                        {"id": 2, "image_id": 7, "caption": " An empty street. "},
                        {"id": 3, "image_id": 42, "caption": "Someone with a pet outside."}]
    insts = instances or [{"id": 10, "image_id": 42, "category_id": 1, "bbox": [20, 10, 40, 80]},
                          {"id": 11, "image_id": 42, "category_id": 18, "bbox": [100.5, 50, 99.9, 50.4]}]
    return (write_json(tmp_path / "captions.json", {"images": IMAGES, "annotations": caps}),
            write_json(tmp_path / "instances.json", {"images": IMAGES, "annotations": insts, "categories": CATS}))


def test_load_coco_and_symbolic_context(tmp_path):
    images = load_coco(*coco_files(tmp_path))
    assert [(i.image_id, i.file_name, i.width, i.height) for i in images] == [(42, "000042.jpg", 200, 100),
                                                                             (7, "000007.jpg", 50, 50)]
    man = images[0]
    assert man.captions == ["A man walks a dog.", "Someone with a pet outside."]
    # the dog box sticks out by < 1 px (COCO float rounding): clipped to the image, not rejected
    assert man.boxes == [("person", [20.0, 10.0, 40.0, 80.0]), ("dog", [100.5, 50.0, 99.5, 50.0])]
    # person: x1 = 20/200, y1 = 10/100, x2 = 60/200, y2 = 90/100; dog: 100.5/200 = 0.5025 -> 0.502 (3 decimals)
    assert symbolic_context(man) == ("A man walks a dog.\nSomeone with a pet outside.\n"
                                     "person: [0.100, 0.100, 0.300, 0.900]\ndog: [0.502, 0.500, 1.000, 1.000]")
    assert symbolic_context(man, with_boxes=False) == "A man walks a dog.\nSomeone with a pet outside."
    assert images[1].captions == ["An empty street."] and images[1].boxes == []


@pytest.mark.parametrize("ann, problem, kind", [
    ({"id": 12, "image_id": 42, "category_id": 99, "bbox": [0, 0, 1, 1]}, "unknown category id 99",
     "unknown category id"),
    ({"id": 12, "image_id": 42, "category_id": 1, "bbox": [150, 0, 60, 10]}, "outside the 200x100 image",
     "box outside image"),
    ({"id": 12, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1]}, "unknown image id 5", "unknown image id"),
    ({"id": 12, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1]}, "bbox must be 4 numbers", "malformed box"),
])
def test_bad_annotations_raise_or_are_counted(tmp_path, ann, problem, kind):
    files = coco_files(tmp_path, instances=[{"id": 10, "image_id": 42, "category_id": 1, "bbox": [0, 0, 5, 5]}, ann])
    with pytest.raises(BadRecordError, match=f"instances.json: record annotation 12.*{problem}"):
        load_coco(*files)
    report = SkipReport(skip_bad=True)
    images = load_coco(*files, report=report)
    assert report.counts == {kind: 1} and images[0].boxes == [("person", [0.0, 0.0, 5.0, 5.0])]


def test_malformed_and_missing_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json: malformed JSON"):
        load_coco(tmp_path / "broken.json", None)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco(tmp_path / "nope.json", None)


def test_builder_rows(tmp_path):
    caps, insts = coco_files(tmp_path)
    write_image(tmp_path / "img" / "000042.jpg", (10, 200, 10), size=(20, 10))
    write_image(tmp_path / "img" / "000007.jpg", size=(5, 5))
    cls = builder_module("coco_captions_boxes").CocoCaptionsBoxes
    dd, reports = build(cls, captions=caps, instances=insts, image_root=str(tmp_path / "img"))
    rows = list(dd["train"])
    assert [r["id"] for r in rows] == ["42", "7"] and reports["train"].total == 0
    r = rows[0]
    assert pixels(r["images"][0]) == [(10, 200, 10)] * 200
    assert r["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert r["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "A man walks a dog."}]}
    assert r["captions"] == ["A man walks a dog.", "Someone with a pet outside."]
    assert [b["category"] for b in r["boxes"]] == ["person", "dog"] and r["boxes"][0]["bbox"] == [20, 10, 40, 80]
    assert r["context"].endswith("dog: [0.502, 0.500, 1.000, 1.000]")
    assert (r["image_id"], r["file_name"], r["width"], r["height"]) == (42, "000042.jpg", 200, 100)
    # a missing image file: error naming the image, or a counted skip
    (tmp_path / "img" / "000007.jpg").unlink()
    with pytest.raises(BadRecordError, match="image 7: image file not found"):
        build(cls, captions=caps, instances=insts, image_root=str(tmp_path / "img"))
    dd, reports = build(cls, captions=caps, instances=insts, image_root=str(tmp_path / "img"), skip_bad=True)
    assert dd["train"]["id"] == ["42"] and reports["train"].counts == {"missing image": 1}
