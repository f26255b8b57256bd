"""Teacher output -> question/answer turns.

Design notes
- The prompts ask for blocks `Question:` / `Answer:` separated by lines `===` (conversation: several pairs,
  complex: one pair) and for plain prose (detail). Teachers drift, so the parser also accepts `Q:`/`A:`,
  `User:`/`Assistant:`/`Human:`/`GPT:`, numbered labels (`Question 2:`), markdown decoration (`**Answer:**`,
  `### Question`), text on the label line or below it, and `---`/`***` or no separators at all.
- Parsing never guesses: anything it cannot pair up raises `ParseError` with a reason, which the validator
  turns into a recorded reject.
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"^\s*(?:={3,}|-{3,}|\*{3,}|_{3,})\s*$")
# `Label:` (text may follow), or a bare `Question`/`Answer` heading line without a colon.
_LABEL = re.compile(
    r"^\s*[#>*_\s]*(?:(?P<label>question|answer|user|human|assistant|gpt|q|a)\s*\d*\s*[*_]*\s*:\s*[*_]*\s*(?P<rest>.*)"
    r"|(?P<heading>question|answer)\s*\d*\s*[*_:]*\s*)$",
    re.IGNORECASE,
)
_ASK = {"question", "user", "human", "q"}
_DESCRIPTION_LABEL = re.compile(r"^\s*[#*_\s]*(?:detailed\s+)?description\s*[*_]*\s*:\s*[*_]*\s*", re.IGNORECASE)


class ParseError(ValueError):
    """The teacher output could not be read as the expected format."""


def parse_turns(text: str) -> list[tuple[str, str]]:
    """`Question:`/`Answer:` blocks -> [(question, answer), ...] in order."""
    segments: list[list] = []  # [role, lines]
    for line in text.splitlines():
        if _SEPARATOR.match(line):
            continue
        match = _LABEL.match(line)
        if match:
            label = (match["label"] or match["heading"]).lower()
            rest = match["rest"] or ""
            segments.append(["user" if label in _ASK else "assistant", [rest] if rest.strip() else []])
        elif segments:  # text before the first label ("Sure! Here is ...") is dropped
            segments[-1][1].append(line)
    if not segments:
        raise ParseError("no Question:/Answer: blocks found")
    turns = []
    expect = "user"
    for role, lines in segments:
        body = "\n".join(lines).strip()
        if not body:
            raise ParseError(f"empty {'question' if role == 'user' else 'answer'} block")
        if role != expect:
            if role == "user":
                raise ParseError(f"question {body[:40]!r} follows a question without an answer")
            raise ParseError(f"answer {body[:40]!r} without a question")
        if role == "user":
            question = body
        else:
            turns.append((question, body))
        expect = "assistant" if role == "user" else "user"
    if expect == "assistant":
        raise ParseError("last question has no answer")
    return turns


def parse_description(text: str) -> str:
    """Detail output: the prose itself, minus an optional leading `Description:` label and separators."""
    lines = [line for line in text.strip().splitlines() if not _SEPARATOR.match(line)]
    body = _DESCRIPTION_LABEL.sub("", "\n".join(lines), count=1).strip()
    if _LABEL.match(body.splitlines()[0] if body else ""):
        raise ParseError("detailed description came back as question/answer blocks")
    return body


def parse_output(kind: str, text: str, instruction: str | None = None) -> list[tuple[str, str]]:
    """Turns for any prompt type; `instruction` is the user turn used for detail rows."""
    if kind == "detail":
        if instruction is None:
            raise ValueError("detail outputs need the instruction that becomes their question")
        return [(instruction, parse_description(text))]
    return parse_turns(text)
