#!/usr/bin/env python
"""COCO captions + instances annotation files and the image folder -> one row per image with the image, its
captions, its boxes (category name + pixel [x, y, w, h]) and the data engine's symbolic context (captions one
per line, then `category: [x1, y1, x2, y2]` normalised to [0, 1]). Messages hold a stage-1 pair: a
brief-description instruction and the first caption.

Example:
  python datasets_scripts/coco_captions_boxes.py --captions annotations/captions_train2017.json \\
      --instances annotations/instances_train2017.json --image-root train2017 --output-dir data/coco_train2017
"""

import dataclasses

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.coco import coco_features, coco_rows, load_coco


@dataclasses.dataclass
class CocoConfig(CanonicalConfig):
    captions: str = option(None, "COCO captions_*.json", required=True)
    instances: str = option(None, "COCO instances_*.json (boxes); omit for captions only")
    image_root: str = option(None, "folder with the images named by `file_name`", required=True)
    split: str = option("train", "split name to write")
    seed: int = option(0, "seed for choosing each row's instruction phrasing")


class CocoCaptionsBoxes(CanonicalBuilder):
    __doc__ = __doc__
    BUILDER_CONFIG_CLASS = CocoConfig
    PRETTY_NAME = "COCO captions and boxes (hf-llava)"
    SOURCE = "COCO (https://cocodataset.org) caption and instance annotations with their images."
    LICENSE = "cc-by-4.0"
    LICENSE_NOTE = "COCO annotations are CC BY 4.0; the images are subject to the Flickr terms of use."

    def extra_features(self):
        return coco_features()

    def split_names(self):
        return [self.config.split]

    def generate_rows(self, split, report):
        images = load_coco(self.config.captions, self.config.instances, report=report)
        return coco_rows(images, self.config.image_root, report, source=self.config.captions, seed=self.config.seed)


if __name__ == "__main__":
    main(CocoCaptionsBoxes)
