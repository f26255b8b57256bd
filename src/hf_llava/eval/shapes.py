"""The held-out synthetic-shapes VQA (the demo's benchmark): accuracy per question type, with and without the image.

Design notes
- Rows are the `vqa` config of datasets_scripts/synthetic_shapes.py (held-out scenes, one short-answer question per
  type, the gold answer as the last message), read from a built folder or generated in memory (same seeds, same
  rows). Scoring is `hf_llava.data.shapes.exact_match` (normalised exact match), nothing looser.
- The blank-image pass asks the same questions with every image replaced by a mean-grey one: a model that reads
  the picture falls to about chance there, a model that guesses from the question text does not.
- Chance is the majority-answer baseline computed from the evaluated rows themselves: per type, the accuracy of
  always giving that type's most frequent gold answer (the best a picture-blind constant answer can do).
- Rows that carry `num_objects` are also scored per number of objects in the scene: with one object a question
  needs no choice among objects, so the drop from one to four separates reading the picture from finding the
  object the question names.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..data.images import to_pil
from ..data.shapes import QUESTION_TYPES, exact_match, normalize_answer
from .generate import generate_answers
from .results import VQA, hub_result, write_results

VQA_COLUMNS = ("question", "answer", "question_type")
OVERALL = "overall"
DEFAULT_MAX_NEW_TOKENS = 10  # short answers: "bottom right" + end token, with room to spare


def _saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_rows(data: str | Path | None = None, num_images: int | None = None, image_size: int = 64,
              seed: int = 0, split: str = "test", per_type: int | None = None) -> list[dict]:
    """The VQA rows (images as RGB PIL images), from a built folder (`OUT`, `OUT/vqa` or a saved split) or, with
    `num_images`, generated in memory (`num_images` held-out scenes x 5 questions). `split="train"` reads the
    training scenes' questions of a built folder instead; `per_type` keeps the first rows of each question type
    (chosen before any image is decoded)."""
    if (data is None) == (num_images is None):
        raise ValueError("give exactly one of `data` (a synthetic-shapes folder) and `num_images` (generate)")
    if num_images is not None:
        if split != "test" or per_type is not None:
            raise ValueError("generated rows are all the held-out scenes' questions; read another split or a "
                             "subset from a built folder")
        from ..data import shapes

        rows = list(shapes.rows("vqa", "test", num_eval_images=num_images, image_size=image_size, seed=seed))
        for row in rows:
            row["images"] = [to_pil(image) for image in row["images"]]
        return rows
    import datasets

    folder = next((f for f in (Path(data) / "vqa", Path(data)) if _saved_dataset(f)), None)
    if folder is None:
        raise FileNotFoundError(f"{data} holds no saved dataset (expected the output of "
                                "datasets_scripts/synthetic_shapes.py, or its vqa/ folder)")
    dataset = datasets.load_from_disk(str(folder))
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{folder} has no {split!r} split (it has {list(dataset)}): is it the vqa config?")
        dataset = dataset[split]
    missing = [column for column in VQA_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{folder} lacks the VQA column(s) {missing} (it has {dataset.column_names}): "
                         "point --data at the synthetic-shapes build or its vqa/ folder")
    if per_type is not None:
        dataset = dataset.select(first_per_type(dataset["question_type"], per_type))
    rows = [dict(row) for row in dataset]
    for row in rows:
        row["images"] = [image.convert("RGB") for image in row["images"]]
    return rows


def first_per_type(question_types: list[str], limit: int) -> list[int]:
    """Indices of the first `limit` questions of each type, in order."""
    seen = Counter()
    kept = []
    for index, qtype in enumerate(question_types):
        seen[qtype] += 1
        if seen[qtype] <= limit:
            kept.append(index)
    return kept


def question_types(rows) -> list[str]:
    """The question types present in `rows`: the shapes types in their usual order, then any others, sorted."""
    present = {row["question_type"] for row in rows}
    return [t for t in QUESTION_TYPES if t in present] + sorted(present - set(QUESTION_TYPES))


def _entry(correct: int, total: int, **extra) -> dict:
    return {"correct": correct, "total": total, "accuracy": correct / total if total else 0.0, **extra}


def score(rows, predictions: list[str]) -> dict[str, dict]:
    """{question type: {correct, total, accuracy}} plus "overall", by `exact_match` against the gold answers."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    hits = Counter()
    totals = Counter(row["question_type"] for row in rows)
    for row, prediction in zip(rows, predictions):
        hits[row["question_type"]] += exact_match(prediction, row["answer"])
    table = {t: _entry(hits[t], totals[t]) for t in question_types(rows)}
    table[OVERALL] = _entry(sum(hits.values()), len(rows))
    return table


def score_by_objects(rows, predictions: list[str]) -> dict[str, dict[int, dict]]:
    """{question type: {number of objects in the scene: {correct, total, accuracy}}} (plus "overall"); empty when
    the rows carry no `num_objects`."""
    if not all("num_objects" in row for row in rows):
        return {}
    by_count = {}
    for n in sorted({row["num_objects"] for row in rows}):
        picked = [(row, p) for row, p in zip(rows, predictions) if row["num_objects"] == n]
        by_count[n] = score([row for row, _ in picked], [p for _, p in picked])
    return {qtype: {n: table[qtype] for n, table in by_count.items() if qtype in table}
            for qtype in [*question_types(rows), OVERALL]}


def chance_levels(rows) -> dict[str, dict]:
    """Majority-answer baseline: per type, {answer, correct, total, accuracy} of always answering the type's most
    frequent (normalised) gold answer; "overall" answers each type's majority answer."""
    table = {}
    for qtype in question_types(rows):
        answers = Counter(normalize_answer(row["answer"]) for row in rows if row["question_type"] == qtype)
        answer, correct = answers.most_common(1)[0]
        table[qtype] = _entry(correct, sum(answers.values()), answer=answer)
    table[OVERALL] = _entry(sum(e["correct"] for e in table.values()), len(rows))
    return table


def evaluate(model, processor, rows, batch_size: int = 16, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             blank_image: bool = True) -> dict:
    """Answer every row (and, with `blank_image`, again with mean-grey images); returns
    {num_questions, accuracy, blank_accuracy (or None), chance, records} where records are the per-question
    predictions (id, question_type, question, answer, prediction, correct[, blank_prediction, blank_correct])."""
    rows = list(rows)
    if not rows:
        raise ValueError("no VQA rows to evaluate")
    predictions = generate_answers(model, processor, rows, batch_size, max_new_tokens, desc="shapes VQA")
    blank = (generate_answers(model, processor, rows, batch_size, max_new_tokens, blank_images=True,
                              desc="shapes VQA, blank image") if blank_image else None)
    records = []
    for k, (row, prediction) in enumerate(zip(rows, predictions)):
        record = {"id": row["id"], "question_type": row["question_type"], "question": row["question"],
                  "answer": row["answer"], "prediction": prediction, "correct": exact_match(prediction, row["answer"])}
        if "num_objects" in row:
            record["num_objects"] = row["num_objects"]
        if blank is not None:
            record.update(blank_prediction=blank[k], blank_correct=exact_match(blank[k], row["answer"]))
        records.append(record)
    return {
        "num_questions": len(rows),
        "accuracy": score(rows, predictions),
        "blank_accuracy": score(rows, blank) if blank is not None else None,
        "chance": chance_levels(rows),
        "by_num_objects": score_by_objects(rows, predictions),
        "records": records,
    }


def _cell(entry: dict) -> str:
    return f"{100 * entry['accuracy']:.1f}% ({entry['correct']}/{entry['total']})"


def markdown_table(result: dict) -> str:
    """Accuracy per question type and overall, the blank-image column when present, and the chance level."""
    blank = result.get("blank_accuracy")
    header = ["question type", "questions", "accuracy", *(["blank image"] if blank else []),
              "chance (majority answer)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for qtype, entry in result["accuracy"].items():
        chance = result["chance"][qtype]
        majority = f' ("{chance["answer"]}")' if "answer" in chance else ""
        name = f"**{qtype}**" if qtype == OVERALL else qtype
        cells = [name, str(entry["total"]), _cell(entry), *([_cell(blank[qtype])] if blank else []),
                 f"{100 * chance['accuracy']:.1f}%{majority}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def objects_table(result: dict) -> str:
    """Accuracy per question type (rows) and number of objects in the scene (columns); "" without the breakdown."""
    table = result.get("by_num_objects")
    if not table:
        return ""
    counts = sorted({n for per_type in table.values() for n in per_type})
    lines = ["| question type | " + " | ".join(f"{n} object{'s' * (n != 1)}" for n in counts) + " |",
             "|" + "---|" * (len(counts) + 1)]
    for qtype, per_count in table.items():
        name = f"**{qtype}**" if qtype == OVERALL else qtype
        lines.append(f"| {name} | " + " | ".join(_cell(per_count[n]) if n in per_count else "" for n in counts) + " |")
    return "\n".join(lines)


def hub_results(result: dict) -> list[dict]:
    """The model-card entries (`huggingface_hub.EvalResult` arguments): accuracy in % per question type and
    overall."""
    return [hub_result(task_type=VQA, dataset_type="hf-llava/synthetic-shapes", dataset_name="Synthetic shapes VQA",
                       dataset_config="vqa", dataset_split="test", metric_type="accuracy",
                       metric_name=f"accuracy ({qtype})", metric_value=round(100 * entry["accuracy"], 2))
            for qtype, entry in result["accuracy"].items()]


def save_results(result: dict, output_dir: str | Path, model: str | None = None,
                 settings: dict | None = None) -> dict[str, Path]:
    """predictions.jsonl (one record per question), results.json (the tables) and results.md (the markdown
    tables) in `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for record in result["records"]:
            f.write(json.dumps(record) + "\n")
    summary = {"benchmark": "shapes-vqa", "model": model, "settings": settings or {},
               **{k: v for k, v in result.items() if k != "records"}, "hub_results": hub_results(result)}
    tables = [markdown_table(result), objects_table(result)]
    return {"predictions.jsonl": output_dir / "predictions.jsonl",
            **write_results(output_dir, summary, "\n\n".join(t for t in tables if t))}
