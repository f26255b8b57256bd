"""LLaVA JSON <-> canonical rows.

LLaVA JSON is a list of `{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"system", "value"}...]}`.
Quirks handled: ids mixing ints and strings (all become strings: `load_dataset` chokes on mixed types), rows
without `image` (text-only), `image` as a list (several images), `<image>` before or after the question (or
between texts), multi-turn. Each `<image>` marker becomes an image content block at its place; the whitespace
around a marker is dropped and written back as one newline, so the usual forms `<image>\\nQ` and `Q\\n<image>`
round-trip exactly. The number of markers must equal the number of images, and markers only appear in user turns.
A conversation whose first turn after any system turn is the assistant's ("gpt") is a bad record ("starts with
assistant"): the original code silently dropped that turn; here it is an error, or a counted skip with --skip-bad.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

from .errors import BadRecordError, SkipReport
from .images import read_image
from .jsonstream import iter_json_records
from .schema import image_block, message, text_block, validate_row

IMAGE_TOKEN = "<image>"
ROLE_FROM_LLAVA = {"human": "user", "gpt": "assistant", "system": "system"}
LLAVA_FROM_ROLE = {v: k for k, v in ROLE_FROM_LLAVA.items()}


def _blocks(text: str) -> list[dict]:
    parts = text.split(IMAGE_TOKEN)
    blocks = []
    for i, part in enumerate(parts):
        if i:
            blocks.append(image_block())
        part = part.lstrip() if i else part
        part = part.rstrip() if i < len(parts) - 1 else part
        if part:
            blocks.append(text_block(part))
    return blocks


def llava_to_canonical(record: dict, image_root: str | os.PathLike | None = None, *,
                       source: str = "<llava json>", index: int | None = None) -> dict:
    """One LLaVA JSON record -> canonical row. With `image_root`, images are read and verified (bytes embedded);
    without, `images` holds the relative paths as given. Raises BadRecordError naming the record."""
    where = f"#{index}" if index is not None else "?"
    if not isinstance(record, dict):
        raise BadRecordError(source, where, f"expected a JSON object, got {type(record).__name__}")
    if "id" not in record and "conversations" not in record:  # e.g. a file holding one object, not a list of them
        keys = ", ".join(map(repr, list(record)[:6])) or "none"
        raise BadRecordError(source, where, f"not a LLaVA record (keys {keys}; expected 'id' and 'conversations'): "
                             "the file must be a JSON array of records, or JSON Lines (one record per line)",
                             "not a record")
    rid = record.get("id")
    if rid is None or isinstance(rid, (dict, list, bool)) or str(rid) == "":
        raise BadRecordError(source, where, f"missing or invalid id {rid!r}", "missing id")
    rid = str(rid)
    where = f"{where} (id {rid!r})"

    def bad(problem: str, kind: str = "invalid record"):
        raise BadRecordError(source, where, problem, kind)

    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs:
        bad("'conversations' must be a non-empty list", "no messages")
    messages = []
    for i, turn in enumerate(convs):
        if not (isinstance(turn, dict) and turn.get("from") in ROLE_FROM_LLAVA and isinstance(turn.get("value"), str)):
            bad(f"turn {i} must be {{'from': human|gpt|system, 'value': str}}, got {str(turn)[:80]!r}",
                "malformed turn")
        role = ROLE_FROM_LLAVA[turn["from"]]
        if role != "user" and IMAGE_TOKEN in turn["value"]:
            bad(f"turn {i} ({turn['from']}) contains {IMAGE_TOKEN}; images belong in human turns",
                "image count mismatch")
        blocks = _blocks(turn["value"])
        if not blocks:
            bad(f"turn {i} is empty", "empty message")
        messages.append(message(role, *blocks))
    first = next((m["role"] for m in messages if m["role"] != "system"), None)
    if first == "assistant":
        bad("the conversation starts with the assistant (gpt), not the user (human)", "starts with assistant")
    image = record.get("image")
    paths = [] if image is None else image if isinstance(image, list) else [image]
    n_markers = sum(t["value"].count(IMAGE_TOKEN) for t in convs)
    if n_markers != len(paths):
        bad(f"{n_markers} {IMAGE_TOKEN} markers for {len(paths)} images", "image count mismatch")
    if image_root is not None:
        images = [read_image(image_root, p, source, where) for p in paths]
    else:
        images = list(paths)
    return validate_row({"id": rid, "images": images, "messages": messages}, source)


def iter_llava_json(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                    report: SkipReport | None = None) -> Iterator[dict]:
    """Stream canonical rows from a LLaVA JSON (array) or JSONL file; bad records raise or go to `report`."""
    report = report or SkipReport()
    for index, record in enumerate(iter_json_records(path)):
        try:
            yield llava_to_canonical(record, image_root, source=str(path), index=index)
        except BadRecordError as e:
            report.bad(e)


def _image_path(image, row_id: str, k: int) -> str:
    if isinstance(image, str):
        return image
    if isinstance(image, dict) and image.get("path"):
        return image["path"]
    if getattr(image, "filename", None):
        return image.filename
    raise ValueError(f"row {row_id!r}: image {k} has no file path; pass image_paths or cast images to "
                     "datasets.Image(decode=False)")


def canonical_to_llava(row: dict, image_paths: list[str] | None = None) -> dict:
    """Canonical row -> LLaVA JSON record (`image` a string for one image, a list for several, absent for none)."""
    convs = []
    for m in row["messages"]:
        value = "\n".join(IMAGE_TOKEN if b["type"] == "image" else b["text"] for b in m["content"])
        convs.append({"from": LLAVA_FROM_ROLE[m["role"]], "value": value})
    images = row.get("images") or []
    paths = image_paths if image_paths is not None else [_image_path(im, row["id"], k) for k, im in enumerate(images)]
    record = {"id": row["id"]}
    if paths:
        record["image"] = paths[0] if len(paths) == 1 else list(paths)
    record["conversations"] = convs
    return record


def write_llava_json(rows: Iterable[dict], path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> int:
    """Write rows as one LLaVA JSON array, streaming; with `image_dir`, also write each image's bytes there under
    its path (rows must then carry `{"path", "bytes"}` images, e.g. a Dataset cast to Image(decode=False)).
    Returns the number of records written."""
    if hasattr(rows, "cast_column"):  # a datasets.Dataset: keep paths and bytes instead of decoded PIL images
        from datasets import Image, List

        rows = rows.cast_column("images", List(Image(decode=False)))
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for row in rows:
            record = canonical_to_llava(row)
            if image_dir is not None:
                for im in row.get("images") or []:
                    if not (isinstance(im, dict) and im.get("bytes") is not None):
                        raise ValueError(f"row {row['id']!r}: image_dir needs images with bytes")
                    target = os.path.join(image_dir, im["path"])
                    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                    with open(target, "wb") as imf:
                        imf.write(im["bytes"])
            f.write(("," if n else "") + "\n" + json.dumps(record, ensure_ascii=False))
            n += 1
        f.write("\n]\n")
    return n
