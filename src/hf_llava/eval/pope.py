"""POPE (object hallucination): yes/no answers to "Is there a <object> in the image?", scored per category.

Design notes
- The answer rule is the original `llava/eval/eval_pope.py`'s, character for character: keep the text before the first
  ".", drop commas, split on single spaces; "no" when a word is exactly `No`, `not` or `no`, else "yes" (so an empty
  or rambling answer counts as "yes"). Metrics with "yes" as the positive class: accuracy, precision, recall, F1 and
  the yes-ratio (share of "yes" answers), per category (random / popular / adversarial); LLaVA-1.5 reports the F1
  averaged over the three.
- Two sources of gold labels. Rows from datasets_scripts/pope.py carry their label and category, and answers are
  matched to them by question_id. The original's files (`--questions` with question_id and category, label files
  `coco_pope_<category>.json` in `--annotation-dir`) are scored the original's way: the answers of one category, in
  answer-file order, are paired with the label file's lines in order. Where the original would silently zip lists of
  different lengths or mispair shifted records, this raises a UserError naming the file: the counts must match, and
  where both records name their image, the images must agree.
- A metric the original would divide by zero for (no "yes" answer: precision; no "yes" label: recall) is None
  (`-` in results.md) instead of a crash.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from ..data.pope import CATEGORIES, file_category, read_labels
from ..errors import UserError
from .answers import read_answer_file
from .results import VQA, hub_result, write_results

METRICS = ("f1", "accuracy", "precision", "recall", "yes_ratio")
AVERAGE = "average"


def yes_no(text: str) -> str:
    """The original's reading of an answer: "no" if the first sentence has the word No/not/no, else "yes"."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def metrics(predictions: list[str], labels: list[str]) -> dict:
    """Confusion counts and the five metrics for parallel lists of "yes"/"no" predictions and labels."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    pairs = Counter((p == "yes", gold != "no") for p, gold in zip(predictions, labels))
    tp, fp, tn, fn = pairs[True, True], pairs[True, False], pairs[False, False], pairs[False, True]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (
        0.0 if precision is not None and recall is not None else None)
    return {"count": len(labels), "TP": tp, "FP": fp, "TN": tn, "FN": fn, "accuracy": _ratio(tp + tn, len(labels)),
            "precision": precision, "recall": recall, "f1": f1, "yes_ratio": _ratio(tp + fp, len(labels))}


def average(splits: dict[str, dict]) -> dict:
    """Each metric's mean over the splits (None when any split lacks it)."""
    out = {}
    for name in METRICS:
        values = [s[name] for s in splits.values()]
        out[name] = None if not values or None in values else sum(values) / len(values)
    return out


def score_rows(rows, answers: dict[str, str]) -> tuple[dict[str, dict], list[dict]]:
    """({category: metrics}, per-question records) for builder rows (question_id, category, label) and
    {question_id: answer text}; a row without an answer is a UserError (answer every row, or pass --limit)."""
    by_category, records = {}, []
    for row in rows:
        qid = str(row["question_id"])
        if qid not in answers:
            raise UserError(f"no answer for question_id {qid} (category {row['category']}): the answer file must "
                            "answer every evaluated row")
        prediction = yes_no(answers[qid])
        by_category.setdefault(row["category"], ([], []))
        by_category[row["category"]][0].append(prediction)
        by_category[row["category"]][1].append(row["label"])
        records.append({"question_id": qid, "category": row["category"], "question": row.get("question"),
                        "label": row["label"], "text": answers[qid], "prediction": prediction,
                        "correct": prediction == row["label"]})
    return _ordered({c: metrics(p, g) for c, (p, g) in by_category.items()}), records


def _ordered(splits: dict) -> dict:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return dict(sorted(splits.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _read_jsonl(path: str | os.PathLike, need: tuple[str, ...], what: str) -> list[dict]:
    from ..data.jsonstream import iter_json_records

    records = []
    for index, rec in enumerate(iter_json_records(path)):
        missing = [k for k in need if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise UserError(f"{path}: {what} record #{index} (line {index + 1}) has no {', '.join(missing)}")
        records.append(rec)
    return records


def score_original_files(answers: str | os.PathLike, questions: str | os.PathLike,
                         annotation_dir: str | os.PathLike) -> tuple[dict[str, dict], list[dict]]:
    """Score the original's files as `eval_pope.py` does (see module notes): answers JSONL {question_id, text},
    questions JSONL {question_id, category}, and `<dataset>_pope_<category>.json` label files in `annotation_dir`."""
    annotation_dir = Path(annotation_dir)
    if not annotation_dir.is_dir():
        raise UserError(f"--annotation-dir {annotation_dir}: no such folder (it holds coco_pope_<category>.json)")
    label_files = {file_category(p): p for p in sorted(annotation_dir.glob("*pope_*.json"))}
    if not label_files:
        raise UserError(f"--annotation-dir {annotation_dir}: no <dataset>_pope_<category>.json label files")
    category_of = {}
    for rec in _read_jsonl(questions, ("question_id", "category"), "question"):
        category_of[str(rec["question_id"])] = rec
    per_category = {}
    for qid, rec in read_answer_file(answers).items():
        question = category_of.get(qid)
        if question is None:
            raise UserError(f"{answers}: the answer to question_id {qid} names a question {questions} does not "
                            "have: are these answers to that question file?")
        per_category.setdefault(question["category"], []).append((rec, question))
    splits, records = {}, []
    for category, path in label_files.items():
        labels = read_labels(path)
        pairs = per_category.get(category, [])
        if len(pairs) != len(labels):
            raise UserError(f"{answers}: {len(pairs)} answers to {category!r} questions but {path} has {len(labels)} "
                            "labels; the original pairs them in order, so every labelled question needs an answer "
                            "(was generation cut short?)")
        predictions = []
        for n, ((answer, question), label) in enumerate(zip(pairs, labels)):
            image = question.get("image")
            if image is not None and label.get("image") is not None \
                    and os.path.basename(image) != os.path.basename(label["image"]):  # a folder prefix may differ
                raise UserError(f"{path}: line {n + 1} is about {label['image']} but {category!r} answer #{n + 1} "
                                f"in {answers} (question_id {answer['question_id']}) is about {image}: the "
                                "answers are not in the label file's order")
            predictions.append(yes_no(answer["text"]))
            records.append({"question_id": answer["question_id"], "category": category,
                            "question": question.get("text"), "label": label["label"], "text": answer["text"],
                            "prediction": predictions[-1], "correct": predictions[-1] == label["label"]})
        splits[category] = metrics(predictions, [label["label"] for label in labels])
    unscored = sorted(set(per_category) - set(label_files))
    if unscored:
        raise UserError(f"{annotation_dir}: no label file for categor{'ies' if len(unscored) > 1 else 'y'} "
                        f"{', '.join(unscored)} (expected e.g. coco_pope_{unscored[0]}.json)")
    return _ordered(splits), records


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_table(splits: dict[str, dict]) -> str:
    lines = ["| Category | F1 | Accuracy | Precision | Recall | Yes-ratio | Questions |",
             "|---|---|---|---|---|---|---|"]
    for category, m in splits.items():
        lines.append(f"| {category} | " + " | ".join(_percent(m[k]) for k in METRICS) + f" | {m['count']} |")
    if len(splits) > 1:
        avg = average(splits)
        lines.append(f"| **{AVERAGE}** | " + " | ".join(_percent(avg[k]) for k in METRICS)
                     + f" | {sum(m['count'] for m in splits.values())} |")
    return "\n".join(lines)


def hub_results(splits: dict[str, dict]) -> list[dict]:
    """huggingface_hub.EvalResult kwargs: F1 and accuracy per category, and the average F1 (LLaVA-1.5's number)."""
    base = {"task_type": VQA, "dataset_type": "lmms-lab/POPE", "dataset_name": "POPE"}
    out = []
    if len(splits) > 1 and average(splits)["f1"] is not None:
        out.append(hub_result(**base, metric_type="f1", metric_name="F1 (average of categories)",
                              metric_value=round(100 * average(splits)["f1"], 2)))
    for category, m in splits.items():
        for key, name in (("f1", "F1"), ("accuracy", "Accuracy")):
            if m[key] is not None:
                out.append(hub_result(**base, dataset_config=category, metric_type=key,
                                      metric_name=f"{name} ({category})", metric_value=round(100 * m[key], 2)))
    return out


def save_results(splits: dict[str, dict], records: list[dict], output_dir: str | os.PathLike, *,
                 model: str | None, settings: dict) -> dict[str, Path]:
    """results.json, results.md and predictions.jsonl in `output_dir`."""
    summary = {"benchmark": "pope", "model": model, "settings": settings, "splits": splits,
               AVERAGE: average(splits) if len(splits) > 1 else None, "hub_results": hub_results(splits)}
    table = (f"# POPE{f' — {model}' if model else ''}\n\n{markdown_table(splits)}\n\n"
             "Percentages; \"yes\" is the positive class.")
    paths = write_results(output_dir, summary, table)
    paths["predictions.jsonl"] = Path(output_dir) / "predictions.jsonl"
    with open(paths["predictions.jsonl"], "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths


def load_builder_rows(data: str, categories: list[str], limit: int | None):
    """The rows of each category split of a datasets_scripts/pope.py output (the first `limit` of each)."""
    import datasets

    from .answers import load_rows

    parts = []
    for category in categories:
        rows = load_rows(data, split=category)
        missing = [c for c in ("question_id", "category", "label") if c not in rows.column_names]
        if missing:
            raise UserError(f"--data {data}: split {category!r} lacks {', '.join(missing)}: build it with "
                            "datasets_scripts/pope.py")
        parts.append(rows.select(range(min(limit, len(rows)))) if limit else rows)
    return datasets.concatenate_datasets(parts)


def run(args: argparse.Namespace) -> int:
    from .cli import answers_from_args

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if args.data:
        rows = load_builder_rows(args.data, categories, args.limit)
        # --limit is per category here: the rows are already cut
        answers = answers_from_args(argparse.Namespace(**{**vars(args), "limit": None}), rows)
        splits, records = score_rows(rows.remove_columns("images"), {q: r["text"] for q, r in answers.items()})
    elif args.answers and args.questions and args.annotation_dir:
        splits, records = score_original_files(args.answers, args.questions, args.annotation_dir)
    else:
        raise UserError("give --data (rows built by datasets_scripts/pope.py) with --model or --answers, or score the "
                        "original's files with --answers, --questions and --annotation-dir")
    settings = {k: getattr(args, k) for k in ("data", "categories", "answers", "questions", "annotation_dir",
                                              "limit", "batch_size", "max_new_tokens")}
    paths = save_results(splits, records, args.output_dir, model=args.model or args.model_id, settings=settings)
    print(markdown_table(splits))
    print(f"\nwritten to {args.output_dir}/: {', '.join(Path(p).name for p in paths.values())}")
    return 0


def add_parser(benchmarks) -> None:
    from .cli import add_answer_arguments

    parser = benchmarks.add_parser(
        "pope", help="POPE object hallucination: yes/no accuracy, precision, recall, F1, yes-ratio per category",
        description="POPE: \"Is there a <object> in the image?\" questions whose object is present or absent "
        "(random / popular / adversarial sampling). Answers are read with the original eval_pope.py rule (\"no\" if "
        "the first sentence has the word No/not/no, else \"yes\") and scored per category. Either answer the rows "
        "of datasets_scripts/pope.py (--model, --data), score an answer file against them (--answers, --data), or "
        "score the original's files (--answers, --questions, --annotation-dir). Writes results.json, results.md and "
        "predictions.jsonl to --output-dir; see docs/evaluation.md.")
    add_answer_arguments(parser, max_new_tokens=16, output_dir="outputs/eval-pope")
    data = parser.add_argument_group("questions")
    data.add_argument("--data", help="the output folder of datasets_scripts/pope.py (or a Hub dataset id)")
    data.add_argument("--categories", default=",".join(CATEGORIES),
                      help="--data: the category splits to evaluate (default: %(default)s); --limit applies to each")
    data.add_argument("--questions", metavar="FILE",
                      help="the original's question file (JSON Lines with question_id and category, e.g. "
                           "llava_pope_test.jsonl), with --answers and --annotation-dir")
    data.add_argument("--annotation-dir", metavar="DIR",
                      help="the folder of POPE's label files coco_pope_<category>.json (the original's "
                           "--annotation-dir)")
    parser.set_defaults(func=run)
