"""LLaVA-Bench (COCO and In-the-Wild) jsonl files -> evaluation rows.

Files: questions `{"question_id", "image", "text", "category": conv|detail|complex}`; reference answers
`{"question_id", "text", ...}` (GPT-4's, written from the context); context records keyed by `image`, either
COCO-style `{"image", "captions": [...], "instances": [{"category", "bbox"}]}` (bbox already normalised) or
In-the-Wild `{"image", "caption"}`. The context string is what the GPT judge sees: captions one per line, then
`category: [x1, y1, x2, y2]` lines (3 decimals); for In-the-Wild, the caption. Rows keep category, context,
question and reference answer as columns; messages are the question (with the image) and the reference answer.
"""

from __future__ import annotations

import os

from .errors import BadRecordError, SkipReport
from .images import read_image
from .jsonstream import iter_json_records
from .schema import assistant_message, user_message

CATEGORIES = ("conv", "detail", "complex")


def context_text(record: dict) -> str:
    if isinstance(record.get("captions"), list):
        lines = list(record["captions"])
        for inst in record.get("instances") or []:
            lines.append(f"{inst['category']}: [{', '.join(f'{float(v):.3f}' for v in inst['bbox'])}]")
        return "\n".join(lines)
    if isinstance(record.get("caption"), str):
        return record["caption"]
    raise KeyError("a context record needs 'captions' (COCO) or 'caption' (In-the-Wild)")


def _by_key(path, key: str, what: str) -> dict:
    out = {}
    for index, rec in enumerate(iter_json_records(path)):
        if not isinstance(rec, dict) or key not in rec:
            raise ValueError(f"{path}: {what} record #{index} has no {key!r}")
        if rec[key] in out:
            raise ValueError(f"{path}: duplicate {key} {rec[key]!r} in {what} records")
        out[rec[key]] = rec
    return out


def llava_bench_rows(questions: str | os.PathLike, context: str | os.PathLike, answers: str | os.PathLike,
                     image_root: str | os.PathLike | None, report: SkipReport):
    contexts = _by_key(context, "image", "context")
    refs = _by_key(answers, "question_id", "answer")
    for index, q in enumerate(iter_json_records(questions)):
        try:
            if not isinstance(q, dict) or not all(isinstance(q.get(k), str) for k in ("image", "text", "category")) \
                    or "question_id" not in q:
                raise BadRecordError(questions, f"#{index}", "needs question_id and string image/text/category",
                                     "malformed record")
            where = f"question_id {q['question_id']}"
            if q["category"] not in CATEGORIES:
                raise BadRecordError(questions, where, f"category {q['category']!r} not in {CATEGORIES}",
                                     "unknown category")
            if q["question_id"] not in refs:
                raise BadRecordError(answers, where, "no reference answer", "missing answer")
            if q["image"] not in contexts:
                raise BadRecordError(context, where, f"no context for image {q['image']!r}", "missing context")
            try:
                ctx = context_text(contexts[q["image"]])
            except (KeyError, TypeError, ValueError) as e:
                raise BadRecordError(context, where, f"malformed context record ({e})", "malformed record") from None
            img = read_image(image_root, q["image"], questions, where)
        except BadRecordError as e:
            report.bad(e)
            continue
        reference = refs[q["question_id"]]["text"]
        yield {"id": str(q["question_id"]), "images": [img],
               "messages": [user_message(q["text"], with_image=True), assistant_message(reference)],
               "question_id": str(q["question_id"]), "image_file": q["image"], "category": q["category"],
               "question": q["text"], "reference_answer": reference, "context": ctx}


def llava_bench_features() -> dict:
    from datasets import Value

    return {k: Value("string") for k in
            ("question_id", "image_file", "category", "question", "reference_answer", "context")}
