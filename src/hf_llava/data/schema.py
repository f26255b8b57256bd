"""The canonical row every importer produces and every trainer/evaluator reads.

    id:       string (LLaVA's mixed int/str ids all become strings)
    images:   list of datasets.Image (may be empty: text-only rows)
    messages: list of {role: "system"|"user"|"assistant",
                       content: list of {type: "image"|"text", text: string|null}}

Arrow stores a list of structs with one fixed set of fields, so a content block is always the pair
{type, text}: an image block is `{"type": "image", "text": None}`, a text block `{"type": "text", "text": "..."}`.
This is the shape `processor.apply_chat_template` and TRL's vision SFT read (templates test `type`), and the one
rows have after a Hub round trip anyway. The i-th image block refers to `images[i]`; their counts must match.
Builders may add columns next to these three (captions, boxes, answer, question_type, ...).
"""

from __future__ import annotations

from .errors import BadRecordError

ROLES = ("system", "user", "assistant")
CANONICAL_COLUMNS = ("id", "images", "messages")


def features(extra: dict | None = None):
    """Canonical `datasets.Features` plus builder-specific columns (a dict of name -> datasets feature).
    (`datasets` is imported here, not at module import: it reads HF_DATASETS_CACHE when imported.)"""
    from datasets import Features, Image, List, Value

    overlap = set(extra or {}) & set(CANONICAL_COLUMNS)
    if overlap:
        raise ValueError(f"extra columns may not redefine canonical ones: {sorted(overlap)}")
    content_block = {"type": Value("string"), "text": Value("string")}
    message = {"role": Value("string"), "content": List(content_block)}
    return Features({"id": Value("string"), "images": List(Image()), "messages": List(message), **(extra or {})})


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def image_block() -> dict:
    return {"type": "image", "text": None}


def message(role: str, *blocks: dict) -> dict:
    return {"role": role, "content": list(blocks)}


def user_message(text: str, with_image: bool = False, image_first: bool = True) -> dict:
    """A user turn; with an image, the image block goes before (LLaVA's usual) or after the text."""
    if not with_image:
        return message("user", text_block(text))
    blocks = [image_block(), text_block(text)] if image_first else [text_block(text), image_block()]
    return message("user", *blocks)


def assistant_message(text: str) -> dict:
    return message("assistant", text_block(text))


def count_image_blocks(messages: list[dict]) -> int:
    return sum(block["type"] == "image" for m in messages for block in m["content"])


def validate_row(row: dict, source: str = "<rows>") -> dict:
    """Check a canonical row; raise BadRecordError naming the row and the problem. Returns the row."""
    rid = row.get("id")

    def bad(problem: str, kind: str = "invalid record"):
        raise BadRecordError(source, repr(rid), problem, kind)

    if not isinstance(rid, str) or not rid:
        bad("id must be a non-empty string")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        bad("messages must be a non-empty list", "no messages")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            bad(f"message {i} has role {m.get('role')!r}; expected one of {ROLES}", "unknown role")
        if not m.get("content"):
            bad(f"message {i} has no content blocks", "empty message")
        for block in m["content"]:
            if block.get("type") == "text":
                if not isinstance(block.get("text"), str):
                    bad(f"message {i} has a text block without a string 'text'")
            elif block.get("type") != "image":
                bad(f"message {i} has a content block of type {block.get('type')!r}")
    n_blocks, n_images = count_image_blocks(messages), len(row.get("images") or [])
    if n_blocks != n_images:
        bad(f"{n_blocks} image placeholders in messages but {n_images} images", "image count mismatch")
    return row
