"""Evaluation (`hf-llava eval ...`), one concern per module:

generate  `generate_answers`: batched greedy generation with left padding, shared by every benchmark;
          `blank_image`: the mean-grey stand-in that shows whether answers depend on the picture
shapes    the held-out synthetic-shapes VQA: exact-match accuracy per question type, with and without the image,
          against the majority-answer chance level of each type
probe     linear probes at the answer position: information a model has but does not say
report    report.md (tables, chance levels, sample Q/A) and a PNG grid of images with questions and answers
cli       the `hf-llava eval` subcommands
"""
