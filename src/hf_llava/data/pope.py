"""POPE (Li et al., 2023, object hallucination) question files -> evaluation rows, and the label files the scorer reads.

Files: POPE's `coco_pope_<category>.json` (also `aokvqa_pope_*`, `gqa_pope_*`), JSON Lines despite the name, one
`{"question_id", "image", "text": "Is there a <object> in the image?", "label": "yes"|"no"}` per line; the category
(random / popular / adversarial: how the absent objects were sampled) comes from the file name. Each category becomes
one split. POPE's question ids restart at 1 in every file, so a row's `question_id` is `<category>-<id>` (unique in
one answer file) and the file's own id is kept as `pope_question_id`.

The question the model sees is the file's text plus, on a new line, an answer-format instruction (default: LLaVA-1.5's
"Answer the question using a single word or phrase.", as in its llava_pope_test.jsonl; empty for none).
"""

from __future__ import annotations

import glob
import os
import re

from .errors import BadRecordError, SkipReport
from .images import read_image
from .jsonstream import iter_json_records
from .schema import assistant_message, user_message
from ..errors import UserError

CATEGORIES = ("random", "popular", "adversarial")  # POPE's order (the paper's table order)
SHORT_ANSWER = "Answer the question using a single word or phrase."
_FILE_NAME = re.compile(r"^(?:\w+_)?pope_(?P<category>\w+)\.jsonl?$")


def file_category(path: str | os.PathLike) -> str:
    """The category in a POPE file name (`coco_pope_random.json` -> `random`); a UserError for other names."""
    match = _FILE_NAME.match(os.path.basename(path))
    if not match:
        raise UserError(f"{path}: not a POPE question/label file name (expected <dataset>_pope_<category>.json, "
                        "e.g. coco_pope_random.json): the category comes from the name")
    return match["category"]


def question_files(spec: str | os.PathLike | list) -> dict[str, str]:
    """{category: path} from a folder (its `*pope_*.json` files), a comma-separated list of files, or a list.
    The order is POPE's (random, popular, adversarial), then other categories alphabetically."""
    paths = spec if isinstance(spec, (list, tuple)) else [p.strip() for p in str(spec).split(",") if p.strip()]
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*pope_*.json*")))
            if not found:
                raise UserError(f"{path}: no POPE files (<dataset>_pope_<category>.json) in this folder")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"{path}: no such POPE file or folder")
    by_category = {}
    for path in files:
        category = file_category(path)
        if category in by_category:
            raise UserError(f"two POPE files for category {category!r}: {by_category[category]} and {path} "
                            "(evaluate one dataset (coco, aokvqa, gqa) at a time)")
        by_category[category] = path
    if not by_category:
        raise UserError(f"no POPE files given ({spec!r})")
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return dict(sorted(by_category.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def read_labels(path: str | os.PathLike) -> list[dict]:
    """The records of a POPE label file in file order, each checked for a `label` of "yes" or "no"."""
    records = []
    for index, rec in enumerate(iter_json_records(path)):
        if not isinstance(rec, dict) or rec.get("label") not in ("yes", "no"):
            got = rec.get("label") if isinstance(rec, dict) else rec
            raise UserError(f"{path}: record #{index} (line {index + 1}) needs \"label\": \"yes\" or \"no\", got "
                            f"{got!r}")
        records.append(rec)
    return records


def pope_rows(files: dict[str, str], category: str, image_root: str | os.PathLike | None, report: SkipReport,
              instruction: str = SHORT_ANSWER):
    """Rows of one category's file; each image file is read (and verified) once, then shared by its questions."""
    path = files[category]
    images = {}
    for index, rec in enumerate(iter_json_records(path)):
        try:
            if not isinstance(rec, dict) or "question_id" not in rec or not isinstance(rec.get("text"), str) \
                    or not isinstance(rec.get("image"), str):
                raise BadRecordError(path, f"#{index}", "needs question_id and string image/text",
                                     "malformed record")
            where = f"question_id {rec['question_id']}"
            if rec.get("label") not in ("yes", "no"):
                raise BadRecordError(path, where, f"label must be 'yes' or 'no', got {rec.get('label')!r}",
                                     "bad label")
            if rec["image"] not in images:
                images[rec["image"]] = read_image(image_root, rec["image"], path, where)
        except BadRecordError as e:
            report.bad(e)
            continue
        question = rec["text"] + (f"\n{instruction}" if instruction else "")
        qid = f"{category}-{rec['question_id']}"
        yield {"id": qid, "images": [images[rec["image"]]],
               "messages": [user_message(question, with_image=True), assistant_message(rec["label"])],
               "question_id": qid, "pope_question_id": str(rec["question_id"]), "category": category,
               "label": rec["label"], "image_file": rec["image"], "question": rec["text"]}


def pope_features() -> dict:
    from datasets import Value

    return {k: Value("string") for k in
            ("question_id", "pope_question_id", "category", "label", "image_file", "question")}
