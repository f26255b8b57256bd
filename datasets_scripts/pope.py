#!/usr/bin/env python
"""POPE (object hallucination: "Is there a <object> in the image?") question files + COCO val2014 images ->
evaluation rows, one split per category (random, popular, adversarial), with the gold yes/no label, the category and
the question as columns. Score with `hf-llava eval pope --model M --data OUT`.

Example:
  python datasets_scripts/pope.py --questions POPE/output/coco --image-root coco/val2014 --output-dir data/pope
"""

import dataclasses

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.pope import SHORT_ANSWER, pope_features, pope_rows, question_files


@dataclasses.dataclass
class PopeConfig(CanonicalConfig):
    questions: str = option(None, "a folder with POPE's <dataset>_pope_<category>.json files (JSON Lines: "
                                  "question_id, image, text, label), or comma-separated files", required=True)
    image_root: str = option(None, "folder with the images (COCO val2014 for coco_pope_*)", required=True)
    instruction: str = option(SHORT_ANSWER, "line appended to every question ('' for none); LLaVA-1.5 was "
                                            "evaluated with this one")

    def __post_init__(self):
        super().__post_init__()
        if self.questions is not None:
            question_files(self.questions)  # fail before any work


class Pope(CanonicalBuilder):
    __doc__ = __doc__
    BUILDER_CONFIG_CLASS = PopeConfig
    PRETTY_NAME = "POPE (hf-llava evaluation rows)"
    SOURCE = ("POPE (Li et al., Evaluating Object Hallucination in Large Vision-Language Models, 2023; "
              "https://github.com/RUCAIBox/POPE) on COCO val2014 images.")
    LICENSE = "mit"
    LICENSE_NOTE = "POPE's questions are MIT-licensed; COCO images keep their own (Flickr) licences."

    def split_names(self):
        return list(question_files(self.config.questions))

    def extra_features(self):
        return pope_features()

    def generate_rows(self, split, report):
        c = self.config
        return pope_rows(question_files(c.questions), split, c.image_root, report, c.instruction)


if __name__ == "__main__":
    main(Pope)
