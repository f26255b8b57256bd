"""Instruction phrasings written for this project (the paper's lists are not reused): brief-description prompts
for stage-1 caption rows (CC3M, COCO, shapes) and detailed-description prompts for description turns.
`pick` chooses one deterministically from a key, so rebuilding a dataset gives the same rows."""

from __future__ import annotations

import random

BRIEF_DESCRIPTION = [
    "Describe the image briefly.",
    "Give a short caption for this picture.",
    "Summarize what you see in one sentence.",
    "What does this image show? Keep it short.",
    "Write a concise description of the photo.",
    "Caption this image.",
    "In a few words, what is in the picture?",
    "Provide a one-line summary of the image.",
    "Briefly say what this picture depicts.",
    "Give a quick description of the scene.",
    "Sum up the image in a short sentence.",
]

DETAILED_DESCRIPTION = [
    "Describe the image in detail.",
    "Give a thorough description of everything in this picture.",
    "Walk me through what this image shows, element by element.",
    "Write a detailed account of the scene.",
    "What is going on in this image? Please be detailed.",
    "Describe every object you can see and where it is.",
    "Provide an elaborate description of the picture.",
    "Explain the contents of the image as completely as you can.",
    "Paint a full picture in words of what the image contains.",
    "Tell me about this image in as much detail as possible.",
    "Give a comprehensive description of the visual content.",
    "Describe the layout of the scene and the things in it.",
    "Narrate what you observe in this image, including positions.",
    "List and describe the contents of the picture in depth.",
    "Offer a detailed analysis of what the image depicts.",
    "Describe this picture closely, leaving nothing out.",
]


def pick(options: list[str], key, seed: int = 0) -> str:
    """Deterministic choice from `options` for a record key (independent of record order)."""
    return random.Random(f"{seed}:{key}").choice(options)
