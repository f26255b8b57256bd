"""Small synthetic COCO annotation files (captions_*.json + instances_*.json) for data-engine tests, benchmarks
and smoke runs. Deterministic per seed; image ids start at 1; every image has 5 captions and 1-4 boxes."""

from __future__ import annotations

import json
import random
from pathlib import Path

_ANIMALS = ["dog", "cat", "horse", "sheep", "bird"]
_THINGS = ["bicycle", "bench", "umbrella", "kite", "boat"]
_PLACES = ["a park", "a beach", "a city street", "a farm", "a kitchen"]


def write_coco(directory: str | Path, n_images: int, seed: int = 0, with_images: bool = False) -> tuple[Path, Path]:
    """Write `captions.json` and `instances.json` into `directory` (and with `with_images`, a small JPEG per image
    into `directory/images/`); returns the two annotation paths."""
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"}
                  for i, name in enumerate(["person", *_ANIMALS, *_THINGS])]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, captions, instances = [], [], []
    for image_id in range(1, n_images + 1):
        width, height = 640, 480
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        animal, thing, place = rng.choice(_ANIMALS), rng.choice(_THINGS), rng.choice(_PLACES)
        for k, template in enumerate([
            "A person with a {a} next to a {t} in {p}.", "A {a} and its owner in {p}.",
            "Someone standing near a {t} while a {a} waits.", "A {t} and a {a} in {p} on a sunny day.",
            "A person and a {a} spend time in {p}.",
        ]):
            captions.append({"id": image_id * 10 + k, "image_id": image_id,
                             "caption": template.format(a=animal, t=thing, p=place)})
        for k, name in enumerate(["person", animal, thing, animal][: rng.randint(1, 4)]):
            w, h = rng.randint(40, 200), rng.randint(40, 200)
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            instances.append({"id": image_id * 10 + k, "image_id": image_id, "category_id": cat_id[name],
                              "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    if with_images:
        from PIL import Image

        (directory / "images").mkdir(exist_ok=True)
        for entry in images:
            color = tuple(rng.randint(0, 255) for _ in range(3))
            Image.new("RGB", (32, 24), color).save(directory / "images" / entry["file_name"], quality=80)
    info = {"description": "hf-llava synthetic COCO"}
    captions_path, instances_path = directory / "captions.json", directory / "instances.json"
    captions_path.write_text(json.dumps({"info": info, "images": images, "annotations": captions}))
    instances_path.write_text(json.dumps({"info": info, "images": images, "annotations": instances,
                                          "categories": categories}))
    return captions_path, instances_path
