#!/usr/bin/env python
"""LLaVA-Bench (COCO: qa90_questions.jsonl, qa90_gpt4_answer.jsonl, caps_boxes_coco2014_val_80.jsonl; or
In-the-Wild: questions.jsonl, answers_gpt4.jsonl, context.jsonl) + images -> evaluation rows with category
(conv/detail/complex), the judge's context text, the question and GPT-4's reference answer.

Example:
  python datasets_scripts/llava_bench.py --questions llava-bench-in-the-wild/questions.jsonl \\
      --context llava-bench-in-the-wild/context.jsonl --answers llava-bench-in-the-wild/answers_gpt4.jsonl \\
      --image-root llava-bench-in-the-wild/images --output-dir data/llava_bench_wild
"""

import dataclasses

from hf_llava.data.builder import CanonicalBuilder, CanonicalConfig, main, option
from hf_llava.data.llava_bench import llava_bench_features, llava_bench_rows


@dataclasses.dataclass
class LlavaBenchConfig(CanonicalConfig):
    questions: str = option(None, "questions jsonl (question_id, image, text, category)", required=True)
    context: str = option(None, "context jsonl (COCO captions+instances, or In-the-Wild caption)", required=True)
    answers: str = option(None, "reference answers jsonl (question_id, text)", required=True)
    image_root: str = option(None, "folder with the images", required=True)
    split: str = option("test", "split name to write")


class LlavaBench(CanonicalBuilder):
    __doc__ = __doc__
    BUILDER_CONFIG_CLASS = LlavaBenchConfig
    PRETTY_NAME = "LLaVA-Bench (hf-llava evaluation rows)"
    SOURCE = "LLaVA-Bench (Liu et al., Visual Instruction Tuning, 2023): COCO val2014 or In-the-Wild images."
    LICENSE = "other"
    LICENSE_NOTE = ("Questions and GPT-4 answers from the LLaVA release (follow OpenAI's terms of use); images keep "
                    "their own licences.")

    def split_names(self):
        return [self.config.split]

    def extra_features(self):
        return llava_bench_features()

    def generate_rows(self, split, report):
        c = self.config
        return llava_bench_rows(c.questions, c.context, c.answers, c.image_root, report)


if __name__ == "__main__":
    main(LlavaBench)
