"""Evaluation (`hf-llava eval ...`), one concern per module:

generate  `generate_answers`: batched greedy generation with left padding, shared by every benchmark;
          `blank_image`: the mean-grey stand-in that shows whether answers depend on the picture
answers   answer files in the original LLaVA format: generated resumably, or read from any source
judge     judge-model calls through the data engine (client, retries, durable cache, cost cap, Batch API)
results   results.json (with hub_results, the model card's entries) and results.md
llava_bench  LLaVA-Bench (COCO, In-the-Wild): judged relative score per category, the original's arithmetic
shapes    the held-out synthetic-shapes VQA: exact-match accuracy per question type, with and without the image,
          against the majority-answer chance level of each type
probe     linear probes at the answer position: information a model has but does not say
report    report.md (tables, chance levels, sample Q/A) and a PNG grid of images with questions and answers
cli       the `hf-llava eval` subcommands
"""
