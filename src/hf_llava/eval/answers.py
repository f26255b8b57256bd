"""Answer files: generate them resumably in the original LLaVA format, and read them from anywhere.

Design notes
- Format (the original `model_vqa*.py` scripts): JSON Lines, one record per question,
  `{"question_id", "prompt" (the question text), "text" (the answer), "answer_id" (uuid4 hex), "model_id",
  "metadata": {}}`. Question ids are matched as strings, so a file with integer ids (the original's LLaVA-Bench and
  POPE files) scores against rows whose `question_id` column is a string.
- Resume: records are appended and flushed after every generation batch; a rerun keeps every question already in
  the file and answers only the rest. A last line torn by a kill (no newline at the end) is cut off first. A file
  holding another model's answers is refused rather than mixed with this model's.
- `read_answer_file` accepts the original's files, lmms-eval's or a server's as they are: it needs `question_id`
  and `text` per record (JSON Lines, or one JSON array); anything else is a `UserError` naming the file and line.
- `load_rows` opens evaluation rows from a builder's output folder (`save_to_disk`) or a Hub dataset id.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from ..errors import UserError
from .generate import generate_answers


def question_id(row: dict) -> str:
    """The row's `question_id` column, else its `id`, as a string."""
    return str(row["question_id"] if row.get("question_id") is not None else row["id"])


def _row_ids(rows) -> list[str]:
    """Question ids of `rows` (a list of dicts or a `datasets.Dataset`, read by column: no image decoded)."""
    if hasattr(rows, "column_names"):
        column = "question_id" if "question_id" in rows.column_names else "id"
        return [str(v) for v in rows[column]]
    return [question_id(row) for row in rows]


def _prompt_text(row: dict) -> str:
    """The text of the question asked: the row's last user turn (its text blocks), as the original's `prompt`."""
    from .generate import prompt_messages

    content = prompt_messages(row["messages"])[-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(block["text"] for block in content if block.get("type") == "text" and block.get("text"))


def _records(path: Path):
    """(where, record) for each record of a JSON Lines file or a JSON array file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    if text.lstrip("\ufeff \t\r\n").startswith("["):
        try:
            records = json.loads(text.lstrip("\ufeff"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
        yield from ((f"record #{k}", record) for k, record in enumerate(records))
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {lineno} is not a JSON record ({e.msg}); an answer file holds one JSON "
                            "object per line") from None
        yield f"line {lineno}", record


def read_answer_file(path: str | os.PathLike) -> dict[str, dict]:
    """{question_id (as a string): record} of an answer file from any source (needs `question_id` and `text`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"answer file {path}: no such file")
    answers: dict[str, dict] = {}
    for where, record in _records(path):
        if not isinstance(record, dict) or "question_id" not in record or not isinstance(record.get("text"), str):
            raise UserError(f"{path}: {where}: an answer record needs 'question_id' and a string 'text' (the "
                            f"original LLaVA answer format), got {json.dumps(record)[:200]}")
        qid = str(record["question_id"])
        if qid in answers:
            raise UserError(f"{path}: {where}: question_id {qid} answered twice; keep one answer per question")
        answers[qid] = record
    return answers


def _drop_torn_line(path: Path) -> None:
    """Cut a last line that a kill left without its newline (the record was never completely written)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def generate_answer_file(model, processor, rows, path: str | os.PathLike, *, model_id: str, batch_size: int = 16,
                         max_new_tokens: int = 128, limit: int | None = None, load=None) -> list[dict]:
    """Answer `rows` (canonical rows with a `question_id` or `id`) greedily into the answer file `path`, keeping
    the answers already there; returns the records of `rows` (the first `limit`), in row order.

    With `model=None`, `load() -> (model, processor)` is called only when some row still needs an answer (a rerun
    that only rescores does not load the model)."""
    path = Path(path)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows)))) if hasattr(rows, "select") else list(rows)[:limit]
    ids = _row_ids(rows)
    done: dict[str, dict] = {}
    if path.exists():
        _drop_torn_line(path)
        done = read_answer_file(path)
        others = sorted({str(r.get("model_id")) for r in done.values() if r.get("model_id") != model_id})
        if others:
            raise UserError(f"{path} already holds answers of model_id {', '.join(others)}, not {model_id}: "
                            "write to another --output-dir (or delete the file) to answer with this model")
    pending = [k for k, qid in enumerate(ids) if qid not in done]
    if pending:
        if model is None:
            model, processor = load()
        todo = rows.select(pending) if hasattr(rows, "select") else [rows[k] for k in pending]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            def save(batch, texts):
                for row, text in zip(batch, texts):
                    qid = row["question_id"] if row.get("question_id") is not None else row["id"]
                    record = {"question_id": qid, "prompt": _prompt_text(row),
                              "text": text, "answer_id": uuid.uuid4().hex, "model_id": model_id, "metadata": {}}
                    done[question_id(row)] = record
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())

            generate_answers(model, processor, _rgb_rows(todo), batch_size, max_new_tokens, desc="answering",
                             on_batch=save)
    return [done[qid] for qid in ids]


def _rgb_rows(rows) -> list[dict]:
    """Rows with RGB images (datasets decode PNG/JPEG files in their own mode)."""
    return [{**row, "images": [image.convert("RGB") for image in row.get("images") or []]} for row in rows]


def load_rows(data: str, split: str = "test"):
    """The `split` of evaluation rows in a builder's output folder (`save_to_disk`) or a Hub dataset id."""
    import datasets

    local = Path(data).expanduser()
    if local.exists():
        if not ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            raise UserError(f"--data {data}: not a saved dataset (expected the output folder of a "
                            "datasets_scripts/ builder)")
        dataset = datasets.load_from_disk(str(local))
    else:
        try:
            dataset = datasets.load_dataset(data)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise UserError(f"--data {data}: no such folder, and not a loadable Hub dataset ({e})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise UserError(f"--data {data} has no split {split!r} (it has {list(dataset)}); pass --split")
        dataset = dataset[split]
    return dataset
