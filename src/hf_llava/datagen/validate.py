"""Validation of parsed teacher outputs: every failure is a named reason, never a silent drop.

Design notes
- `check(kind, text, finish_reason, instruction)` returns `(turns, None)` or `(None, reason)`. A reason reads
  `kind: detail`; `reason_kind` (the stable part before the colon) is what stats.json counts, the full reason
  goes to rejects.jsonl.
- Leak patterns target what the teacher was told never to say: captions, bounding boxes, coordinates, the
  "given description/context". Ordinary words stay legal ("a box of donuts", "the description of a menu").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parsing import ParseError, parse_output

LEAKS = (
    ("mentions captions", re.compile(r"\bcaptions?\b|\bcaptioned\b", re.IGNORECASE)),
    ("mentions bounding boxes", re.compile(r"\bbounding[\s-]*box(?:es)?\b|\bbox(?:es)? coordinates\b", re.IGNORECASE)),
    ("mentions coordinates", re.compile(r"\bcoordinates?\b", re.IGNORECASE)),
    ("contains box numbers", re.compile(r"\[\s*[01]?\.\d+\s*,\s*[01]?\.\d+")),
    (
        "mentions the text context",
        re.compile(
            r"\b(?:given|provided|above|these|those|the)\s+(?:sentences|annotations?|object list|descriptions provided)\b",
            re.IGNORECASE,
        ),
    ),
)


@dataclass(frozen=True)
class Rules:
    min_turns: dict
    max_turns: dict
    min_answer_words: dict


DEFAULT_RULES = Rules(
    min_turns={"conversation": 2, "detail": 1, "complex": 1},
    max_turns={"conversation": 12, "detail": 1, "complex": 1},
    min_answer_words={"conversation": 1, "detail": 40, "complex": 20},
)


def check(kind: str, text: str | None, finish_reason: str | None = None, instruction: str | None = None,
          rules: Rules = DEFAULT_RULES):
    """Parse and validate one output. Returns (turns, None) when valid, else (None, reason)."""
    if not text or not text.strip():
        return None, "empty output"
    if finish_reason == "length":
        return None, "truncated: finish_reason=length"
    for reason, pattern in LEAKS:
        match = pattern.search(text)
        if match:
            return None, f"{reason}: {match.group(0)!r}"
    try:
        turns = parse_output(kind, text, instruction)
    except ParseError as err:
        return None, f"unparseable: {err}"
    if not rules.min_turns[kind] <= len(turns) <= rules.max_turns[kind]:
        return None, (f"wrong number of turns: expected {rules.min_turns[kind]}-{rules.max_turns[kind]} "
                      f"question/answer pairs, got {len(turns)}")
    for question, answer in turns:
        if len(answer.split()) < rules.min_answer_words[kind]:
            return None, f"too short: answer to {question[:40]!r} has fewer than {rules.min_answer_words[kind]} words"
    return turns, None


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]
