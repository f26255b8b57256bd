#!/usr/bin/env python
"""LLaVA JSON (LLaVA-Instruct-158K, the v1.5 665K mix, the data engine's output, any custom file) + image root
-> canonical rows. Text-only rows (no `image`) are kept; several images per row (`image` as a list) are supported.

Example:
  python datasets_scripts/llava_instruct.py --json llava_instruct_150k.json --image-root coco/train2017 \\
      --output-dir data/llava_instruct --skip-bad
"""

import dataclasses

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.llava_json import iter_llava_json


@dataclasses.dataclass
class LlavaInstructConfig(CanonicalConfig):
    json: str = option(None, "LLaVA JSON array or JSONL file (streamed, never loaded whole)", required=True)
    image_root: str = option(None, "folder the records' `image` paths are relative to (needed unless text-only)")
    split: str = option("train", "split name to write")


class LlavaInstruct(CanonicalBuilder):
    __doc__ = __doc__
    BUILDER_CONFIG_CLASS = LlavaInstructConfig
    PRETTY_NAME = "LLaVA instruction data (canonical schema)"
    SOURCE = "Converted from a LLaVA-format JSON file with hf-llava's datasets_scripts/llava_instruct.py."
    LICENSE = "cc-by-4.0"
    LICENSE_NOTE = ("LLaVA-Instruct-158K is CC BY 4.0 and must follow OpenAI's terms of use; images keep their "
                    "own licences (COCO: Flickr terms). Check the licence of your source file.")

    def split_names(self):
        return [self.config.split]

    def generate_rows(self, split, report):
        return iter_llava_json(self.config.json, self.config.image_root, report)


if __name__ == "__main__":
    main(LlavaInstruct)
