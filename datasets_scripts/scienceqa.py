#!/usr/bin/env python
"""ScienceQA (problems.json + pid_splits.json + the image folder) -> canonical rows in one of the paper's prompt
formats (QCM-A answer only, QCM-LEA reasoning first ending "The answer is X.", QCM-AEL answer first), with the
evaluation breakdown kept as columns: answer letter, subject (NAT/SOC/LAN), context_modality (TXT/IMG/NO),
grade and grade_band (G1-6/G7-12). Images are read from IMAGE_ROOT/<split>/<pid>/image.png.

Example:
  python datasets_scripts/scienceqa.py --problems ScienceQA/data/scienceqa/problems.json \\
      --splits ScienceQA/data/scienceqa/pid_splits.json --image-root ScienceQA/images --format QCM-LEA \\
      --output-dir data/scienceqa
"""

import dataclasses

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.scienceqa import load_problems, parse_format, scienceqa_features, scienceqa_rows


@dataclasses.dataclass
class ScienceQAConfig(CanonicalConfig):
    problems: str = option(None, "ScienceQA problems.json", required=True)
    splits: str = option(None, "ScienceQA pid_splits.json", required=True)
    image_root: str = option(None, "folder with <split>/<pid>/image.png", required=True)
    format: str = option("QCM-LEA", "prompt format INPUT-OUTPUT, e.g. QCM-A, QCM-LEA, QCM-AEL")
    split_names: str = option("train,val,test", "comma-separated splits of pid_splits.json to build")

    def __post_init__(self):
        super().__post_init__()
        parse_format(self.format)  # fail before any work


class ScienceQA(CanonicalBuilder):
    __doc__ = __doc__
    BUILDER_CONFIG_CLASS = ScienceQAConfig
    PRETTY_NAME = "ScienceQA (hf-llava prompt formats)"
    SOURCE = "ScienceQA (Lu et al., 2022; https://scienceqa.github.io)."
    LICENSE = "cc-by-nc-sa-4.0"
    LICENSE_NOTE = "ScienceQA is released under CC BY-NC-SA 4.0."

    def split_names(self):
        return [s.strip() for s in self.config.split_names.split(",") if s.strip()]

    def extra_features(self):
        return scienceqa_features()

    def generate_rows(self, split, report):
        problems, splits = load_problems(self.config.problems, self.config.splits)
        if split not in splits:
            raise ValueError(f"{self.config.splits}: no split {split!r} (has {sorted(splits)})")
        return scienceqa_rows(problems, splits[split], split, self.config.image_root, report, self.config.format,
                              source=self.config.problems)


if __name__ == "__main__":
    main(ScienceQA)
