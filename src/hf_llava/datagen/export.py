"""Cache -> outputs: canonical dataset, `llava_instruct.json`, rejects.jsonl and stats.json.

Design notes
- Everything here is derived from the response cache, rebuilt in full on every run (written to a temp path and
  renamed), so outputs always agree with the cache and a rerun never duplicates a row.
- One row per (image, type), as in LLaVA-Instruct-158K: id `<image id>-<type>`, the image block before or after
  the first question at random (seeded by the row id, so reruns give identical rows), the canonical schema from
  `hf_llava.data.schema` plus columns `image_id`, `type`, `prompt_version`, `teacher_model`.
- Detailed-description rows take their question from the prompt set's own list of instructions.
- Images come from an `image_of(image, row_id)` callable (see `pipeline`): the embedded image of the COCO
  builder's dataset, a file read and verified from `--image-dir`, or, with neither, only COCO's relative
  `file_name`. In the last case only `llava_instruct.json` is written (file names, like the original LLaVA JSON):
  `datasets` cannot save an Image column whose files it cannot read; a rerun with images sends no request.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

from ..data.coco import CocoImage
from .cache import Key, ResponseCache
from .prompts import PromptSet
from .validate import check, reason_kind

EXTRA_COLUMNS = ("image_id", "type", "prompt_version", "teacher_model")


def judge(key: Key, record: dict, prompts: PromptSet):
    """(turns, None) for a usable cached response, else (None, reason)."""
    instruction = prompts.detail_instruction(f"{key.image_id}-{key.type}") if key.type == "detail" else None
    return check(key.type, record.get("content"), record.get("finish_reason"), instruction)


def make_row(key: Key, turns: list[tuple[str, str]], image: CocoImage, image_of: Callable) -> dict:
    from ..data.schema import assistant_message, user_message

    row_id = f"{key.image_id}-{key.type}"
    image_first = random.Random(f"image-position:{row_id}").random() < 0.5
    messages = []
    for i, (question, answer) in enumerate(turns):
        messages.append(user_message(question, with_image=i == 0, image_first=image_first))
        messages.append(assistant_message(answer))
    return {"id": row_id, "images": [image_of(image, row_id)], "messages": messages, "image_id": key.image_id, "type": key.type,
            "prompt_version": key.prompt_version, "teacher_model": key.model}


def collect(keys: list[Key], cache: ResponseCache, prompts: PromptSet, images: dict[str, CocoImage],
            image_of: Callable):
    """Rows, rejects and per-type counts for `keys` (in order)."""
    rows, rejects = [], []
    by_type = {}
    usage = Counter()
    for key in keys:
        counts = by_type.setdefault(key.type, Counter(requested=0, rows=0, rejected=0, failed=0, pending=0))
        counts["requested"] += 1
        record = cache.ok.get(key)
        if record is None:
            counts["failed" if key in cache.failed else "pending"] += 1
            continue
        for name in ("prompt_tokens", "completion_tokens"):
            usage[name] += (record.get("usage") or {}).get(name, 0)
        usage["cost"] += record.get("cost") or 0.0
        turns, reason = judge(key, record, prompts)
        if reason:
            counts["rejected"] += 1
            rejects.append({"key": str(key), "image_id": key.image_id, "type": key.type, "reason": reason,
                            "content": record.get("content")})
        else:
            counts["rows"] += 1
            rows.append(make_row(key, turns, images[key.image_id], image_of))
    return rows, rejects, {t: dict(c) for t, c in by_type.items()}, usage


def _replace(tmp: Path, final: Path) -> None:
    if tmp.is_dir() and final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_outputs(out_dir: Path, rows: list[dict], rejects: list[dict], stats: dict, with_dataset: bool) -> None:
    from ..data.llava_json import write_llava_json

    if with_dataset:
        import datasets

        from ..data.schema import features

        extra = {name: datasets.Value("string") for name in EXTRA_COLUMNS}
        dataset = datasets.Dataset.from_list(rows, features=features(extra))
        tmp = out_dir / "dataset.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp))
        _replace(tmp, out_dir / "dataset")
    elif (out_dir / "dataset").exists():  # stale (derived from an older cache state); rebuilt by --image-dir
        shutil.rmtree(out_dir / "dataset")

    write_llava_json(rows, out_dir / "llava_instruct.json.tmp")
    _replace(out_dir / "llava_instruct.json.tmp", out_dir / "llava_instruct.json")

    with open(out_dir / "rejects.jsonl.tmp", "w", encoding="utf-8") as f:
        for reject in rejects:
            f.write(json.dumps(reject, ensure_ascii=False) + "\n")
    _replace(out_dir / "rejects.jsonl.tmp", out_dir / "rejects.jsonl")

    (out_dir / "stats.json.tmp").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    _replace(out_dir / "stats.json.tmp", out_dir / "stats.json")


def reject_counts(rejects: list[dict]) -> dict:
    return dict(Counter(reason_kind(r["reason"]) for r in rejects).most_common())
