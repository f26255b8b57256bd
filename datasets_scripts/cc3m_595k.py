#!/usr/bin/env python
"""CC3M-style (image, caption) pairs -> LLaVA's concept-balanced subset (the CC-595K rule: noun phrases per
caption; phrases in fewer than --min-count captions dropped; rarest phrase first; at most --max-per-phrase
captions per phrase, sampled with --seed) -> stage-1 rows: a brief-description instruction (our own list) + the
image, answered by the caption. Use --no-filter for an already filtered list (LLaVA-CC3M-Pretrain-595K).

Example:
  python datasets_scripts/cc3m_595k.py --pairs cc3m_train.tsv --image-root cc3m_images --output-dir data/cc3m_595k
  python datasets_scripts/cc3m_595k.py --pairs LLaVA-CC3M-Pretrain-595K/metadata.json \\
      --image-root LLaVA-CC3M-Pretrain-595K/images --no-filter --output-dir data/cc3m_595k
"""

import dataclasses
import sys

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.cc3m import SPACY_HELP, concept_balanced_filter, read_pairs, spacy_noun_phrases, stage1_rows


@dataclasses.dataclass
class Cc3mConfig(CanonicalConfig):
    pairs: str = option(None, "TSV (caption<TAB>image per line) or JSON/JSONL ({image, caption} records, or "
                              "LLaVA conversation records)", required=True)
    image_root: str = option(None, "folder the image paths are relative to", required=True)
    no_filter: bool = option(False, "keep every pair (the input is already the filtered subset)")
    spacy_model: str = option("en_core_web_sm", "spaCy pipeline for noun phrases")
    min_count: int = option(3, "drop noun phrases seen in fewer captions than this")
    max_per_phrase: int = option(100, "at most this many captions per noun phrase")
    seed: int = option(0, "seed for the per-phrase sampling and the instruction choice")
    extractor: object = None  # Python API: a function (list of captions -> phrase lists) used instead of spaCy


class Cc3m595k(CanonicalBuilder):
    __doc__ = __doc__
    EPILOG = SPACY_HELP + ". The filter is skipped with --no-filter (no spaCy needed)."
    BUILDER_CONFIG_CLASS = Cc3mConfig
    PRETTY_NAME = "CC3M concept-balanced stage-1 pairs (hf-llava)"
    SOURCE = "Conceptual Captions 3M (https://ai.google.com/research/ConceptualCaptions), filtered by LLaVA's rule."
    LICENSE = "other"
    LICENSE_NOTE = ("Conceptual Captions may be used for any purpose with attribution to Google LLC; the images "
                    "belong to their owners (web-crawled). Check the terms before redistributing images.")

    def generate_rows(self, split, report):
        c = self.config
        pairs = read_pairs(c.pairs, report)
        if not c.no_filter:
            extract = c.extractor or spacy_noun_phrases(c.spacy_model)
            keep = concept_balanced_filter([p.caption for p in pairs], extract, c.min_count, c.max_per_phrase, c.seed)
            print(f"concept-balanced filter kept {len(keep)} of {len(pairs)} pairs", file=sys.stderr)
            pairs = [pairs[i] for i in keep]
        return stage1_rows(pairs, c.image_root, report, source=c.pairs, seed=c.seed)


if __name__ == "__main__":
    main(Cc3m595k)
