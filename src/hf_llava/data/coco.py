"""COCO annotations (captions_*.json + instances_*.json) -> per-image records and the data engine's context.

Design notes
- `load_coco` reads each annotation file once with `json.load` (the COCO files are single JSON objects whose
  `categories` come after `annotations`, so the whole object is needed anyway) and joins by image id.
- The symbolic context is LLaVA's: captions one per line, then one line per instance
  `category: [x1, y1, x2, y2]` with corners normalised to [0, 1] and 3 decimals.
- COCO boxes are pixel `[x, y, w, h]`. Boxes that stick out of the image by <= `BOX_TOLERANCE_PX` (float rounding
  in the real annotations) are clipped; anything further out is a bad record, as are unknown category ids and
  annotations for unknown images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import BadRecordError, SkipReport

BOX_TOLERANCE_PX = 1.0


@dataclass
class CocoImage:
    image_id: int
    file_name: str
    width: int
    height: int
    captions: list[str] = field(default_factory=list)
    # (category_name, [x, y, w, h] in pixels), in annotation-file order
    boxes: list[tuple[str, list[float]]] = field(default_factory=list)
    # listed in the instances file's `images` (an image there may have no boxes; one missing from it has unknown boxes)
    in_instances: bool = False


def _read_json(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO annotation file (expected an object with an 'images' list)")
    return data


def _check_box(source: str, ann: dict, image: CocoImage) -> list[float]:
    record = f"annotation {ann.get('id')} (image {image.image_id})"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise BadRecordError(source, record, f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}", "malformed box")
    x, y, w, h = (float(v) for v in bbox)
    tol = BOX_TOLERANCE_PX
    if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol:
        raise BadRecordError(
            source, record, f"box {bbox} lies outside the {image.width}x{image.height} image", "box outside image"
        )
    x1, y1 = max(x, 0.0), max(y, 0.0)
    return [x1, y1, min(x + w, image.width) - x1, min(y + h, image.height) - y1]


def load_coco(
    captions_json: str | os.PathLike | None,
    instances_json: str | os.PathLike | None,
    *,
    report: SkipReport | None = None,
) -> list[CocoImage]:
    """Join COCO captions and instances by image id; images in the order of the first file's `images` list.

    Either file may be None (captions only / boxes only). Bad annotations raise `BadRecordError`, or are counted
    in `report` when it was created with `skip_bad=True`.
    """
    report = report or SkipReport()
    if captions_json is None and instances_json is None:
        raise ValueError("load_coco needs a captions file, an instances file, or both")
    images: dict[int, CocoImage] = {}
    for path, is_instances in ((captions_json, False), (instances_json, True)):
        if path is None:
            continue
        data = _read_json(path)
        for entry in data["images"]:
            try:
                image_id = entry["id"]
                if image_id not in images:
                    images[image_id] = CocoImage(image_id, entry["file_name"], int(entry["width"]),
                                                 int(entry["height"]))
                images[image_id].in_instances |= is_instances
            except (KeyError, TypeError, ValueError) as e:
                report.bad(BadRecordError(path, f"image {entry.get('id')!r}", f"malformed image entry ({e!r})"))
    if captions_json is not None:
        for ann in _read_json(captions_json).get("annotations", []):
            image = images.get(ann.get("image_id"))
            if image is None:
                report.bad(BadRecordError(captions_json, f"annotation {ann.get('id')}",
                                          f"unknown image id {ann.get('image_id')!r}", "unknown image id"))
            elif not isinstance(ann.get("caption"), str) or not ann["caption"].strip():
                report.bad(BadRecordError(captions_json, f"annotation {ann.get('id')}", "missing or empty caption"))
            else:
                image.captions.append(ann["caption"].strip())
    if instances_json is not None:
        data = _read_json(instances_json)
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        for ann in data.get("annotations", []):
            image = images.get(ann.get("image_id"))
            try:
                if image is None:
                    raise BadRecordError(instances_json, f"annotation {ann.get('id')}",
                                         f"unknown image id {ann.get('image_id')!r}", "unknown image id")
                if ann.get("category_id") not in categories:
                    raise BadRecordError(instances_json, f"annotation {ann.get('id')} (image {image.image_id})",
                                         f"unknown category id {ann.get('category_id')!r}", "unknown category id")
                image.boxes.append((categories[ann["category_id"]], _check_box(str(instances_json), ann, image)))
            except BadRecordError as e:
                report.bad(e)
    return list(images.values())


def normalized_box(box: list[float], width: int, height: int) -> list[float]:
    """Pixel [x, y, w, h] -> [x1, y1, x2, y2] in [0, 1], rounded to 3 decimals."""
    x, y, w, h = box
    return [round(v, 3) for v in (x / width, y / height, (x + w) / width, (y + h) / height)]


def symbolic_context(image: CocoImage, with_boxes: bool = True) -> str:
    """LLaVA's text-only view of an image: captions one per line, then `category: [x1, y1, x2, y2]` lines."""
    lines = list(image.captions)
    if with_boxes:
        for name, box in image.boxes:
            coords = ", ".join(f"{v:.3f}" for v in normalized_box(box, image.width, image.height))
            lines.append(f"{name}: [{coords}]")
    return "\n".join(lines)


def coco_row(image: CocoImage, img, instruction: str) -> dict:
    """Canonical row for one COCO image (`img`: its `datasets.Image` value): a stage-1 pair (instruction ->
    first caption) plus the columns the data engine reads (captions, pixel boxes, symbolic context)."""
    from .schema import assistant_message, user_message

    return {
        "id": str(image.image_id),
        "images": [img],
        "messages": [user_message(instruction, with_image=True), assistant_message(image.captions[0])],
        "image_id": image.image_id, "file_name": image.file_name, "width": image.width, "height": image.height,
        "captions": image.captions,
        "boxes": [{"category": name, "bbox": box} for name, box in image.boxes],
        "context": symbolic_context(image),
    }


def coco_rows(images: list[CocoImage], image_root: str | os.PathLike | None, report: SkipReport,
              source: str = "<coco>", seed: int = 0):
    """`coco_row` for each image, reading and verifying its file; bad images raise or go to `report`."""
    from .images import read_image
    from .instructions import BRIEF_DESCRIPTION, pick

    for image in images:
        try:
            if not image.captions:
                raise BadRecordError(source, f"image {image.image_id}", "no captions", "no captions")
            img = read_image(image_root, image.file_name, source, f"image {image.image_id}")
        except BadRecordError as e:
            report.bad(e)
            continue
        yield coco_row(image, img, pick(BRIEF_DESCRIPTION, image.image_id, seed))


def coco_features() -> dict:
    """The extra columns of `coco_rows` (datasets features)."""
    from datasets import List, Value

    return {"image_id": Value("int64"), "file_name": Value("string"), "width": Value("int32"),
            "height": Value("int32"), "captions": List(Value("string")),
            "boxes": List({"category": Value("string"), "bbox": List(Value("float32"), length=4)}),
            "context": Value("string")}
