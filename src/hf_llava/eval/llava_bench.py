"""LLaVA-Bench (COCO and In-the-Wild): a judge model compares the model's answer with GPT-4's reference answer.

Design notes
- Rows come from datasets_scripts/llava_bench.py (or the Hub): question, category, the symbolic context the judge
  sees (In-the-Wild: the caption; COCO: the captions, then `category: [x1, y1, x2, y2]` lines, to which
  `judge_context` adds the original's blank line between the two) and the reference answer. The judge request is
  the original's: a system line, then `[Context]`, `[Question]`, the reference as `[Assistant 1]`, the model's
  answer as `[Assistant 2]`, and the category's rule prompt under `[System]`. Rule prompts are our own texts
  (`default_rules`), or `--rules FILE` in the original's rule.json format (`llava_bench_<category>` keys for
  In-the-Wild, `<category>` for COCO).
- Parse: the first line of the reply (stripped) must be exactly two numbers, separated by commas and/or spaces;
  anything else is a judge failure. The original split on single spaces, so "8, 9" failed there; it also scored
  every failure as [-1, -1] inside the means (`--failures-as-minus-one` reproduces that). By default failures are
  counted, listed and left out.
- Score per category and over all: the means of the reference and model scores are rounded to 3 decimals first,
  then relative = round(100 * model / reference, 1), reference and model = round(10 * mean, 1): exactly the
  original summarize_gpt_review.py arithmetic (numpy means included), so `--reviews FILE` on an original review file
  prints its numbers.
- reviews.jsonl is written in the original review format (`question_id`, `category`, `content`, `tuple`, plus
  `failure`), so the original summarize script and `--reviews` both read it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from ..errors import UserError

CATEGORIES = ("conv", "detail", "complex")
CATEGORY_NAMES = {"conv": "Conversation", "detail": "Detail description", "complex": "Complex reasoning",
                  "all": "All"}
VARIANTS = {  # variant: (benchmark name, dataset name, Hub dataset id, original rule-key prefix)
    "coco": ("llava-bench-coco", "LLaVA-Bench (COCO)", "lmms-lab/llava-bench-coco", ""),
    "in-the-wild": ("llava-bench-in-the-wild", "LLaVA-Bench (In-the-Wild)", "lmms-lab/llava-bench-in-the-wild",
                    "llava_bench_"),
}
COLUMNS = ("question_id", "category", "question", "reference_answer", "context")
FAILURE = (-1.0, -1.0)  # the original's score pair for a failed judgement
SYSTEM = "You are an impartial, precise reviewer who grades the quality of answers."
_BOX_LINE = re.compile(r"[^\n:]+: \[-?[\d.]+(, -?[\d.]+){3}\]")  # `category: [x1, y1, x2, y2]`

_CONTEXT = {
    "coco": "by five captions written by people and, for each object, its category and bounding box "
            "[x1, y1, x2, y2] (top-left and bottom-right corners, coordinates between 0 and 1)",
    "in-the-wild": "by a caption written by a person",
}
_FOCUS = {
    "conv": "The question is one turn of a conversation about the image: a good answer is direct, correct and "
            "natural.",
    "detail": "The user asked for a detailed description of the image: reward what is complete and correct, and "
              "penalise details that are invented.",
    "complex": "The question needs reasoning beyond what is visible: reward a correct conclusion reached by sound, "
               "well-supported reasoning.",
}


def default_rules(variant: str) -> dict[str, dict]:
    """Our own rule prompts, {category: {"role", "prompt"}}."""
    return {category: {"role": "Assistant", "prompt": (
        "Please review the answers of two AI assistants to the user question shown above. The user asked it while "
        f"looking at an image; you cannot see the image, so it is described to you {_CONTEXT[variant]}. "
        f"{_FOCUS[category]} Rate the helpfulness, relevance, accuracy and level of detail of each answer with an "
        "overall score from 1 to 10, where higher is better.\n"
        "On the first line, write only the two scores, Assistant 1's and then Assistant 2's, separated by a space. "
        "From the second line on, explain your rating impartially: the order in which the answers were given and "
        "their length must not affect your judgement.")} for category in CATEGORIES}


def load_rules(path: str | Path, variant: str) -> dict[str, dict]:
    """{category: {"role", "prompt"}} from an original-format rule.json (keys `llava_bench_<category>` for
    In-the-Wild, `<category>` for COCO)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--rules {path}: cannot read it as JSON ({e})") from None
    prefix = VARIANTS[variant][3]
    rules = {}
    for category in CATEGORIES:
        key = prefix + category
        entry = data.get(key) if isinstance(data, dict) else None
        if not (isinstance(entry, dict) and all(isinstance(entry.get(f), str) for f in ("role", "prompt"))):
            raise UserError(f"--rules {path}: needs a key {key!r} ({variant} variant) holding "
                            '{"role": "Assistant", "prompt": "..."} (the original rule.json format)')
        rules[category] = {"role": entry["role"], "prompt": entry["prompt"]}
    return rules


def judge_context(context: str) -> str:
    """The context as the original judge saw it: for COCO a blank line between the captions and the box lines."""
    lines = context.split("\n")
    boxes = [line for line in lines if _BOX_LINE.fullmatch(line)]
    captions = [line for line in lines if not _BOX_LINE.fullmatch(line)]
    return "\n".join(captions) + "\n\n" + "\n".join(boxes) if boxes and captions else context


def judge_messages(row: dict, answer: str, rule: dict, system: str = SYSTEM) -> list[dict]:
    """The judge request for one question: system line, then context, question, reference (1), answer (2), rule."""
    role = rule["role"]
    content = (f"[Context]\n{judge_context(row['context'])}\n\n[Question]\n{row['question']}\n\n"
               f"[{role} 1]\n{row['reference_answer']}\n\n[End of {role} 1]\n\n"
               f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n[System]\n{rule['prompt']}\n\n")
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def parse_scores(reply: str | None) -> tuple[float, float] | None:
    """(reference score, model score) from the reply's first line, or None when it is not exactly two numbers."""
    if not reply:
        return None
    fields = reply.strip().split("\n")[0].replace(",", " ").split()
    if len(fields) != 2:
        return None
    try:
        scores = tuple(float(field) for field in fields)
    except ValueError:
        return None
    return scores if all(math.isfinite(s) for s in scores) else None


def category_score(pairs: list) -> dict:
    """{relative_score, reference_score, model_score, questions} of [reference, model] score pairs, with the
    original's rounding (means to 3 decimals, then the ratio and the x10 scores to 1); None values when empty."""
    import numpy as np

    if not pairs:
        return {"relative_score": None, "reference_score": None, "model_score": None, "questions": 0}
    reference, model = (round(x, 3) for x in np.asarray(pairs).mean(0).tolist())
    return {"relative_score": round(model / reference * 100, 1) if reference else None,
            "reference_score": round(reference * 10, 1), "model_score": round(model * 10, 1),
            "questions": len(pairs)}


def short_category(category: str) -> str:
    return category.removeprefix("llava_bench_")


def summarize(reviews: list[dict], failures_as_minus_one: bool = False) -> dict:
    """Scores per category (conv, detail, complex, others) and "all" from review records (`tuple`, `category`,
    `failure`); failed judgements are left out, or scored [-1, -1] with `failures_as_minus_one`."""
    groups: dict[str, list] = {"all": []}
    for review in reviews:  # every category present gets a column, even when all its judgements failed
        category = short_category(review["category"]) if review.get("category") is not None else None
        pairs = [groups["all"]] + ([groups.setdefault(category, [])] if category else [])
        if not review.get("failure") or failures_as_minus_one:
            for group in pairs:
                group.append(review["tuple"])
    order = [c for c in CATEGORIES if c in groups] + sorted(set(groups) - {*CATEGORIES, "all"}) + ["all"]
    return {category: category_score(groups.get(category, [])) for category in order}


def failure_counts(reviews: list[dict]) -> dict:
    failed = [r for r in reviews if r.get("failure")]
    by_category: dict[str, int] = {}
    for review in failed:
        name = short_category(review.get("category") or "none")
        by_category[name] = by_category.get(name, 0) + 1
    reasons: dict[str, int] = {}
    for review in failed:
        reason = review["failure"].split(":")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"count": len(failed), "by_reason": reasons, "by_category": by_category,
            "question_ids": [r.get("question_id") for r in failed]}


def read_reviews(path: str | Path) -> list[dict]:
    """Review records of an original-format review file (JSON Lines with `tuple` [reference, model] or the older
    `score`, optional `question_id` and `category`); [-1, -1] marks a failed judgement."""
    reviews = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--reviews {path}: cannot read it ({e})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"--reviews {path}: line {lineno} is not a JSON record ({e.msg})") from None
        pair = record.get("tuple", record.get("score")) if isinstance(record, dict) else None
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)):
            raise UserError(f"--reviews {path}: line {lineno}: needs 'tuple' [reference score, model score] (the "
                            f"original review format), got {line.strip()[:200]}")
        failure = record.get("failure") or ("judge failure" if tuple(pair) == FAILURE else None)
        reviews.append({**record, "tuple": pair, "failure": failure})
    if not reviews:
        raise UserError(f"--reviews {path}: no review records")
    return reviews


def detect_variant(contexts: list[str]) -> str:
    """COCO when the contexts carry `category: [x1, y1, x2, y2]` box lines, else In-the-Wild."""
    return "coco" if any(_BOX_LINE.fullmatch(line) for c in contexts for line in c.split("\n")) else "in-the-wild"


def markdown_table(summary: dict) -> str:
    scores = summary["scores"]
    categories = list(scores)
    header = [VARIANTS[summary["variant"]][1], *(CATEGORY_NAMES.get(c, c) for c in categories)]

    def row(name, field):
        return "| " + " | ".join([name, *("" if scores[c][field] is None else str(scores[c][field])
                                          for c in categories)]) + " |"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             row("relative score (%)", "relative_score"), row("reference answers (x10)", "reference_score"),
             row("model answers (x10)", "model_score"), row("questions scored", "questions")]
    failures, settings = summary["failures"], summary["settings"]
    judge = summary["judge_model"] or "unknown"
    if summary["judge_response_models"]:
        judge += f" (served as {', '.join(summary['judge_response_models'])})"
    if settings["rules"]:
        judge += f"; rules: {settings['rules']}"
    treated = "scored -1 on both sides as the original did" if settings["failures_as_minus_one"] else "left out"
    reasons = ", ".join(f"{k} {v}" for k, v in failures["by_reason"].items())
    lines += ["", f"Judge: {judge}.",
              f"Judge failures: {failures['count']} ({treated}){': ' + reasons if reasons else ''}. "
              f"Questions without an answer: {summary['missing_answers']['count']} (left out)."]
    return "\n".join(lines)


def hub_results(summary: dict) -> list[dict]:
    from .results import IMAGE_TEXT_TO_TEXT, hub_result

    _, dataset_name, hub_id, _ = VARIANTS[summary["variant"]]
    data = summary["settings"].get("data")
    dataset_type = data if data and not Path(data).expanduser().exists() else hub_id
    judge = summary["judge_model"] or "unknown judge"
    return [hub_result(task_type=IMAGE_TEXT_TO_TEXT, task_name="Visual instruction following",
                       dataset_type=dataset_type, dataset_name=dataset_name,
                       dataset_split=summary["settings"].get("split"), metric_type="relative_score",
                       metric_name=f"relative score, {CATEGORY_NAMES.get(c, c)} (judge {judge})",
                       metric_value=entry["relative_score"])
            for c, entry in summary["scores"].items() if entry["relative_score"] is not None]


def _score_rows(rows: list[dict], answers: dict[str, dict], args, variant: str, rules: dict, settings):
    """Judge every answered row; returns (review records, missing question ids, judge replies)."""
    from .judge import run_judge

    answered = [row for row in rows if str(row["question_id"]) in answers]
    missing = [row["question_id"] for row in rows if str(row["question_id"]) not in answers]
    requests = {str(row["question_id"]): judge_messages(row, answers[str(row["question_id"])]["text"],
                                                        rules[row["category"]], args.judge_system)
                for row in answered}
    replies = run_judge(requests, settings, args.output_dir, desc="judging")
    prefix = VARIANTS[variant][3]
    reviews = []
    for index, row in enumerate(answered):
        qid = str(row["question_id"])
        answer, reply = answers[qid], replies[qid]
        scores = parse_scores(reply)
        failure = None
        if reply is None:
            failure = f"judge call failed: {replies.errors[qid]}"
        elif scores is None:
            failure = "unparseable reply: the first line is not two scores"
        reviews.append({"id": index + 1, "question_id": row["question_id"], "answer1_id": row["question_id"],
                        "answer2_id": answer.get("answer_id", answer["question_id"]),
                        "category": prefix + row["category"], "content": reply,
                        "tuple": list(scores) if scores else list(FAILURE), "failure": failure})
    return reviews, missing, replies


def _rows(args):
    """(the dataset, for generation; its scoring columns as dicts, no image decoded), first --limit rows."""
    from .answers import load_rows

    dataset = load_rows(args.data, args.split)
    absent = [c for c in COLUMNS if c not in dataset.column_names]
    if absent:
        raise UserError(f"--data {args.data}: lacks the LLaVA-Bench column(s) {absent} (it has "
                        f"{dataset.column_names}); build it with datasets_scripts/llava_bench.py")
    if args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    return dataset, [dict(zip(COLUMNS, values)) for values in zip(*(dataset[c] for c in COLUMNS))]


def run(args: argparse.Namespace) -> int:
    from .results import write_results

    settings_out = {"failures_as_minus_one": args.failures_as_minus_one,
                    "rules": args.rules or "hf-llava defaults", "variant": args.variant}
    if args.reviews:
        if args.model or args.answers or args.data:
            raise UserError("--reviews summarizes a review file alone: drop --model, --answers and --data")
        settings_out["rules"] = None  # the judging happened elsewhere
        reviews = read_reviews(args.reviews)
        variant = args.variant if args.variant != "auto" else (
            "in-the-wild" if any(str(r.get("category", "")).startswith("llava_bench_") for r in reviews) else "coco")
        summary = {"benchmark": VARIANTS[variant][0], "model": None, "reviews": args.reviews, "variant": variant,
                   "judge_model": None, "judge_response_models": [], "settings": settings_out}
        missing, replies = [], None
    else:
        if not (args.model or args.answers) or not args.data:
            raise UserError("give --data (the LLaVA-Bench rows) and --model or --answers; or --reviews FILE alone")
        from .cli import ANSWER_FILE, answers_from_args

        from .judge import JudgeSettings

        judge = JudgeSettings.from_args(args)  # every input is checked before the answers are generated
        dataset, rows = _rows(args)
        unknown = sorted({row["category"] for row in rows} - set(CATEGORIES))
        if unknown:
            raise UserError(f"--data {args.data}: unknown LLaVA-Bench categories {unknown}; expected {CATEGORIES}")
        variant = args.variant if args.variant != "auto" else detect_variant([r["context"] for r in rows])
        rules = load_rules(args.rules, variant) if args.rules else default_rules(variant)
        answers = answers_from_args(args, dataset)
        reviews, missing, replies = _score_rows(rows, answers, args, variant, rules, judge)
        settings_out.update(data=args.data, split=args.split, limit=args.limit, judge=judge.describe(),
                            judge_system="hf-llava default" if args.judge_system == SYSTEM else args.judge_system,
                            max_new_tokens=None if args.answers else args.max_new_tokens,
                            batch_size=None if args.answers else args.batch_size)
        summary = {"benchmark": VARIANTS[variant][0], "model": args.model,
                   "answers": args.answers or str(Path(args.output_dir) / ANSWER_FILE), "variant": variant,
                   "judge_model": judge.model, "judge_response_models": replies.response_models,
                   "settings": settings_out, "questions": len(rows)}
    summary.update(failures=failure_counts(reviews),
                   missing_answers={"count": len(missing), "question_ids": missing},
                   scores=summarize(reviews, args.failures_as_minus_one))
    if replies is not None:
        summary.update(judge_cost_usd=replies.cost_usd, judge_requests_sent=replies.sent, stopped=replies.stopped)
    summary["hub_results"] = hub_results(summary)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not args.reviews:
        with open(output_dir / "reviews.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(review, ensure_ascii=False) + "\n" for review in reviews)
    table = markdown_table(summary)
    write_results(output_dir, summary, table)
    print(table)
    print(f"\nwritten to {output_dir}/: results.json, results.md" + ("" if args.reviews else ", reviews.jsonl"))
    unanswered = [r for r in reviews if r["failure"] and r["content"] is None] if replies is not None else []
    if unanswered:
        print(f"{len(unanswered)} judge call(s) got no reply (first: question {unanswered[0]['question_id']}: "
              f"{unanswered[0]['failure']}); rerun the same command to retry them (finished ones are not resent)")
        return 1
    return 0


def add_parser(benchmarks) -> None:
    from .cli import add_answer_arguments
    from .judge import add_judge_arguments

    parser = benchmarks.add_parser(
        "llava-bench", help="LLaVA-Bench (COCO / In-the-Wild): relative score from a judge model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Answer the LLaVA-Bench questions (or take --answers), ask a judge model to score the model's\n"
        "answer against GPT-4's reference per question, and report the relative score per category and overall:\n"
        "round(100 * mean(model) / mean(reference), 1). Judge failures are counted, listed and left out unless\n"
        "--failures-as-minus-one. Writes answers.jsonl, reviews.jsonl (the original review format), results.json\n"
        "and results.md to --output-dir; rerunning resumes (finished answers and judgements are kept).\n"
        "The judge's API key comes from OPENAI_API_KEY (any non-empty value for local servers).",
        epilog="examples:\n"
        "  hf-llava eval llava-bench --model M --data data/llava_bench_coco --judge-model gpt-4o-2024-08-06\n"
        "  hf-llava eval llava-bench --answers answers.jsonl --data data/llava_bench_wild --rules rule.json \\\n"
        "      --judge-model gpt-4-0613 --output-dir out/wild\n"
        "  hf-llava eval llava-bench --reviews review.jsonl --failures-as-minus-one   # an original review file")
    add_answer_arguments(parser, max_new_tokens=1024, output_dir="outputs/eval-llava-bench", required=False)
    data = parser.add_argument_group("LLaVA-Bench")
    data.add_argument("--data", help="rows built by datasets_scripts/llava_bench.py (folder) or a Hub dataset id")
    data.add_argument("--split", default="test", help="default: %(default)s")
    data.add_argument("--variant", choices=("auto", *VARIANTS), default="auto",
                      help="coco or in-the-wild: names the benchmark and picks the --rules keys (auto: coco when "
                           "the contexts have box lines; with --reviews: in-the-wild when categories start with "
                           "llava_bench_)")
    data.add_argument("--rules", metavar="RULE.json",
                      help="rule prompts in the original rule.json format ({key: {role, prompt}}) instead of ours")
    data.add_argument("--judge-system", default=SYSTEM, help="system message of the judge requests (default: ours)")
    data.add_argument("--failures-as-minus-one", action="store_true",
                      help="score judge failures as [-1, -1] inside the means, as the original scripts did")
    data.add_argument("--reviews", metavar="FILE",
                      help="only summarize this review file (original format: question_id, category, tuple)")
    add_judge_arguments(parser)
    parser.set_defaults(func=run)
