"""ScienceQA: the original's answer parsing and result file, the paper's breakdown, and ensembles with a second
answer file (e.g. GPT-4's).

Design notes
- Parsing is the original `llava/eval/eval_science_qa.py`'s: the whole answer is an option letter; else its first
  character is an option letter followed by ". "; else `The answer is ([A-Z]).` (the dot unescaped: any character)
  matches exactly once; else the answer failed. Options are "ABCDE" as there (extended to more letters only for a
  problem with more than five choices, which ScienceQA does not have); a letter beyond the problem's choices and a
  question without an answer are failed too. A failed answer is predicted index -1 and counts as wrong; the original
  once drew an unseeded random index instead, which nothing here does.
- The result file keeps the original's fields (`acc`, `correct`, `count`, `results` {pid: index or -1}, `outputs`
  {pid: text}) so ScienceQA's own scoring scripts read it, and adds the paper's breakdown as ScienceQA's `get_scores`
  computes it: NAT/SOC/LAN by subject, TXT (a non-empty hint), IMG (an image), NO (neither), G1-6/G7-12 by grade and
  Avg over the whole split, each `"{:.2f}"` of a percentage (an empty group is None: the original divides by zero).
- Problems (gold index, choices, breakdown columns, the question text) come from ScienceQA's own problems.json +
  pid_splits.json, or from the rows of datasets_scripts/scienceqa.py, which carry the same columns.
- Ensembles with a second answer file, both parsed by the same rule. complement: the second's answer where it parses
  to a valid choice, else ours (eval_science_qa_gpt4.py). judge: where the two predicted indices differ, a judge model
  reads the question with both answers and their reasoning (our own prompt; the original requery prompt was never
  published) and its "The answer is X." decides; a judge failure or an unparsable reply keeps ours. Both are
  reported with the "either correct" upper bound. The original skipped questions missing from either file; here
  every question of the split counts (a missing answer is failed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.scienceqa import LETTERS, SUBJECTS, grade_band, prompt
from ..errors import UserError
from .results import VQA, hub_result, write_results

OPTIONS = "ABCDE"  # the original's --options
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's QCM-A
COLUMNS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # as the original, "." unescaped
_JUDGE_ANSWER = re.compile(r"The answer is \(?([A-Z])\)?")
JUDGE_SYSTEM = (
    "You are an expert science teacher. A multiple-choice question follows, then two answers to it, each with its "
    "reasoning; the two answers disagree. Check the question, its context and both lines of reasoning, decide which "
    "option is correct (it may be the choice of either answer, or neither), explain briefly, and end your reply with "
    "one sentence of the form \"The answer is X.\" where X is the letter of the correct option.")


@dataclass(frozen=True)
class Problem:
    answer: int  # gold index into the choices
    num_choices: int
    subject: str  # NAT / SOC / LAN
    context: tuple[str, ...]  # ("TXT",), ("IMG",), ("TXT", "IMG") or ("NO",)
    grade_band: str  # G1-6 / G7-12
    question: str  # what the judge reads: question, context, options


# ---------------------------------------------------------------- parsing and scoring


def parse_letter(text: str | None, num_choices: int = len(OPTIONS)) -> str | None:
    """The option letter the original's rule reads in an answer, or None (failed)."""
    if text is None:
        return None
    options = tuple(LETTERS[:max(len(OPTIONS), num_choices)])
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


def letter_index(letter: str | None, num_choices: int) -> int:
    """The choice index of a letter, -1 for None or a letter beyond the choices."""
    return LETTERS.index(letter) if letter is not None and letter in LETTERS[:num_choices] else -1


def predicted_index(text: str | None, num_choices: int) -> int:
    return letter_index(parse_letter(text, num_choices), num_choices)


def _percent(correct: int, total: int) -> float | None:
    return float(f"{correct / total * 100:.2f}") if total else None


def breakdown(problems: dict[str, Problem], predictions: dict[str, int]) -> dict[str, float | None]:
    """Accuracy (%, two decimals) per paper column for {pid: predicted index} (a pid without one is wrong)."""
    groups = {column: [0, 0] for column in COLUMNS}
    for pid, p in problems.items():
        hit = predictions.get(pid, -1) == p.answer
        for column in (p.subject, *p.context, p.grade_band, "Avg"):
            groups[column][0] += hit
            groups[column][1] += 1
    return {column: _percent(*groups[column]) for column in COLUMNS}


def score(problems: dict[str, Problem], answers: dict[str, str]) -> dict:
    """The original's result fields plus the breakdown and failure counts, for {pid: answer text}."""
    results, outputs, counts = {}, {}, {"missing": 0, "unparsed": 0, "out_of_range": 0}
    for pid, p in problems.items():
        text = answers.get(pid)
        letter = parse_letter(text, p.num_choices)
        results[pid] = letter_index(letter, p.num_choices)
        outputs[pid] = text
        if text is None:
            counts["missing"] += 1
        elif letter is None:
            counts["unparsed"] += 1
        elif results[pid] == -1:
            counts["out_of_range"] += 1
    correct = sum(results[pid] == p.answer for pid, p in problems.items())
    count = len(problems)
    return {"acc": correct / count * 100 if count else None, "correct": correct, "count": count,
            "results": results, "outputs": outputs, "breakdown": breakdown(problems, results), "failures": counts}


def _summary(problems: dict[str, Problem], predictions: dict[str, int], **extra) -> dict:
    correct = sum(predictions.get(pid, -1) == p.answer for pid, p in problems.items())
    return {"correct": correct, "count": len(problems), "breakdown": breakdown(problems, predictions), **extra}


def complement(problems: dict[str, Problem], ours: dict[str, int], second: dict[str, int]) -> dict:
    """The second answer where it is a valid choice, else ours."""
    predictions = {pid: second[pid] if second.get(pid, -1) != -1 else ours.get(pid, -1) for pid in problems}
    return _summary(problems, predictions, second_failed=sum(second.get(pid, -1) == -1 for pid in problems))


def either_correct(problems: dict[str, Problem], ours: dict[str, int], second: dict[str, int]) -> dict:
    """The upper bound of any choice between the two: a question counts when either answer is right."""
    predictions = {pid: p.answer if p.answer in (ours.get(pid, -1), second.get(pid, -1)) else -1
                   for pid, p in problems.items()}
    return _summary(problems, predictions)


def disagreements(problems: dict[str, Problem], ours: dict[str, int], second: dict[str, int]) -> list[str]:
    return [pid for pid in problems if ours.get(pid, -1) != second.get(pid, -1)]


def judge_messages(problem: Problem, ours: str | None, second: str | None) -> list[dict]:
    """The judge request for one disagreement: the question with both answers and their reasoning."""
    def shown(text):
        return text if text is not None else "(no answer)"

    user = f"{problem.question}\n\nAnswer 1:\n{shown(ours)}\n\nAnswer 2:\n{shown(second)}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def judge_choice(reply: str | None, num_choices: int) -> int:
    """The index of the judge's last "The answer is X", -1 when there is none or it is beyond the choices."""
    found = _JUDGE_ANSWER.findall(reply or "")
    return letter_index(found[-1] if found else None, num_choices)


def judged(problems: dict[str, Problem], ours: dict[str, int], replies: dict[str, str | None]) -> dict:
    """Ours, replaced by the judge's choice wherever it was asked ({pid: reply or None}) and gave a valid one."""
    predictions = dict(ours)
    failed = unparsed = 0
    for pid, reply in replies.items():
        choice = judge_choice(reply, problems[pid].num_choices)
        if reply is None:
            failed += 1
        elif choice == -1:
            unparsed += 1
        else:
            predictions[pid] = choice
    return _summary(problems, predictions, judged=len(replies), judge_failures=failed, judge_unparsed=unparsed,
                    results=predictions)


def evaluate(problems: dict[str, Problem], answers: dict[str, str], second: dict[str, str] | None = None,
             ask_judge=None) -> tuple[dict, list[dict]]:
    """(result, per-question records) for {pid: answer text}; with `second` ({pid: text}) also the complement
    ensemble and the upper bound, and with `ask_judge` ({pid: messages} -> {pid: reply or None}) the judge one."""
    result = score(problems, answers)
    ours = result["results"]
    records = [{"question_id": pid, "gold": LETTERS[p.answer], "text": answers.get(pid),
                "parsed": parse_letter(answers.get(pid), p.num_choices), "index": ours[pid],
                "correct": ours[pid] == p.answer} for pid, p in problems.items()]
    if second is None:
        return result, records
    other = {pid: predicted_index(second.get(pid), p.num_choices) for pid, p in problems.items()}
    ensembles = {"complement": complement(problems, ours, other)}
    for record in records:
        pid = record["question_id"]
        record.update(second_text=second.get(pid), second_index=other[pid])
    if ask_judge is not None:
        asked = disagreements(problems, ours, other)
        replies = ask_judge({pid: judge_messages(problems[pid], answers.get(pid), second.get(pid)) for pid in asked})
        ensembles["judge"] = judged(problems, ours, {pid: replies.get(pid) for pid in asked})
        for record in records:
            pid = record["question_id"]
            record["judge_index"] = ensembles["judge"]["results"][pid]
            if pid in replies:
                record["judge_reply"] = replies[pid]
    ensembles["either_correct"] = either_correct(problems, ours, other)
    result["ensembles"] = ensembles
    return result, records


# ---------------------------------------------------------------- inputs


def _load_json(path: str | os.PathLike, flag: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{flag} {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{flag} {path}: not a JSON file ({e})") from None


def problems_from_files(problems_json: str | os.PathLike, pid_splits_json: str | os.PathLike,
                        split: str = "test") -> dict[str, Problem]:
    """{pid: Problem} for one split of ScienceQA's problems.json and pid_splits.json, in the split's order."""
    problems, splits = _load_json(problems_json, "--problems"), _load_json(pid_splits_json, "--pid-splits")
    if not isinstance(problems, dict):
        raise UserError(f"--problems {problems_json}: expected ScienceQA's problems.json (an object keyed by pid)")
    if not isinstance(splits, dict) or split not in splits:
        has = sorted(splits) if isinstance(splits, dict) else "not an object"
        raise UserError(f"--pid-splits {pid_splits_json}: no split {split!r} (has {has}); pass --split")
    out = {}
    for pid in splits[split]:
        pid = str(pid)
        if pid not in problems:
            raise UserError(f"--pid-splits {pid_splits_json}: pid {pid} of split {split!r} is not in {problems_json}")
        p = problems[pid]
        try:
            choices, answer = p["choices"], p["answer"]
            if not (isinstance(choices, list) and isinstance(answer, int) and 0 <= answer < len(choices)
                    and len(choices) <= len(LETTERS)):
                raise ValueError(f"answer {answer!r} is not an index into the choices")
            # TXT/IMG exactly as ScienceQA's get_scores: a truthy hint / image
            context = tuple(c for c, present in (("TXT", p.get("hint")), ("IMG", p.get("image"))) if present)
            out[pid] = Problem(answer, len(choices), SUBJECTS[p["subject"]], context or ("NO",),
                               grade_band(p["grade"]), prompt(p, "QCM-A")[0])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"--problems {problems_json}: problem {pid} is malformed ({e!r})") from None
    return out


def problems_from_rows(rows) -> dict[str, Problem]:
    """{pid: Problem} from datasets_scripts/scienceqa.py rows (columns answer, num_choices, subject,
    context_modality, grade_band; the question is the user turn's text)."""
    from .answers import _prompt_text, question_id

    needed = ("answer", "num_choices", "subject", "context_modality", "grade_band")
    columns = rows.column_names if hasattr(rows, "column_names") else list(rows[0]) if len(rows) else needed
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UserError(f"--data: the rows lack {', '.join(missing)}: build them with datasets_scripts/scienceqa.py "
                        "(or pass --problems and --pid-splits)")
    if hasattr(rows, "remove_columns"):  # read the text columns only: no image decoded
        rows = rows.remove_columns([c for c in ("images",) if c in rows.column_names])
    out = {}
    for row in rows:
        out[question_id(row)] = Problem(LETTERS.index(row["answer"]), row["num_choices"], row["subject"],
                                        tuple(row["context_modality"]), row["grade_band"], _prompt_text(row))
    return out


def read_second_answers(path: str | os.PathLike) -> dict[str, str]:
    """{pid: text} from an answer file (JSON Lines {question_id, text}) or a result file with `outputs` {pid: text}
    (the original's GPT-4 results, eval_science_qa.py's or this scorer's results.json)."""
    from .answers import read_answer_file

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("outputs"), dict):
        return {str(pid): text for pid, text in data["outputs"].items() if isinstance(text, str)}
    return {pid: record["text"] for pid, record in read_answer_file(path).items()}


def with_letter_instruction(rows, instruction: str):
    """Rows whose last user turn ends with `instruction` on a new line (LLaVA-1.5's QCM-A prompt)."""
    def add(messages):
        messages = [dict(m, content=[dict(b) for b in m["content"]]) for m in messages]
        user = next(m for m in reversed(messages) if m["role"] == "user")
        block = next(b for b in reversed(user["content"]) if b["type"] == "text")
        block["text"] = f"{block['text']}\n{instruction}"
        return {"messages": messages}

    if hasattr(rows, "map"):
        # in memory: a cache file would be written into the user's --data folder
        return rows.map(add, input_columns=["messages"], keep_in_memory=True, desc="adding the letter instruction")
    return [{**row, **add(row["messages"])} for row in rows]


# ---------------------------------------------------------------- outputs


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    """The paper's table: one line per (method, breakdown)."""
    lines = ["| Method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(b[c]) for c in COLUMNS) + " |" for name, b in rows]
    return "\n".join(lines)


def hub_results(breakdown_: dict[str, float | None], split: str) -> list[dict]:
    """huggingface_hub.EvalResult kwargs: Avg and every breakdown column."""
    base = {"task_type": VQA, "dataset_type": "derek-thomas/ScienceQA", "dataset_name": "ScienceQA",
            "dataset_split": split, "metric_type": "accuracy"}
    return [hub_result(**base, metric_name="Accuracy (Avg)" if column == "Avg" else f"Accuracy ({column})",
                       metric_value=breakdown_[column])
            for column in ("Avg", *COLUMNS[:-1]) if breakdown_[column] is not None]


def table_rows(result: dict, model_name: str) -> list[tuple[str, dict]]:
    rows = [(model_name, result["breakdown"])]
    ensembles = result.get("ensembles") or {}
    for key, label in (("complement", "complement (second answer where it parses, else ours)"),
                       ("judge", "judge (on disagreements)"), ("either_correct", "either correct (upper bound)")):
        if key in ensembles:
            rows.append((label, ensembles[key]["breakdown"]))
    return rows


def save_results(result: dict, records: list[dict], output_dir: str | os.PathLike, *, model: str | None,
                 settings: dict) -> dict[str, Path]:
    """results.json (the original's fields + breakdown + ensembles + hub_results), results.md, predictions.jsonl."""
    split = settings.get("split") or "test"
    summary = {"benchmark": "scienceqa", "model": model, "settings": settings, **result,
               "hub_results": hub_results(result["breakdown"], split)}
    f = result["failures"]
    notes = [f"{result['correct']} / {result['count']} correct; failed answers (counted wrong): {f['unparsed']} "
             f"unparsable, {f['out_of_range']} with a letter beyond the choices, {f['missing']} missing."]
    judge = (result.get("ensembles") or {}).get("judge")
    if judge:
        notes.append(f"Judge {(judge.get('judge') or {}).get('model', '')}: asked on {judge['judged']} disagreements; "
                     f"{judge['judge_failures']} failed calls and {judge['judge_unparsed']} replies without an answer "
                     "kept ours.")
    table = f"# ScienceQA ({split})\n\n{markdown_table(table_rows(result, model or 'model'))}\n\n" + "\n".join(notes)
    paths = write_results(output_dir, summary, table)
    paths["predictions.jsonl"] = Path(output_dir) / "predictions.jsonl"
    with open(paths["predictions.jsonl"], "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths


def _problems(args: argparse.Namespace, rows) -> dict[str, Problem]:
    if args.problems or args.pid_splits:
        if not (args.problems and args.pid_splits):
            raise UserError("--problems and --pid-splits go together (ScienceQA's problems.json and pid_splits.json)")
        return problems_from_files(args.problems, args.pid_splits, args.split)
    if rows is None:
        raise UserError("give the questions: --data (rows built by datasets_scripts/scienceqa.py) or --problems and "
                        "--pid-splits (ScienceQA's own files)")
    return problems_from_rows(rows)


def run(args: argparse.Namespace) -> int:
    from .answers import load_rows
    from .cli import answers_from_args

    if args.model and not args.data:
        raise UserError("--model answers the rows of --data (built by datasets_scripts/scienceqa.py); to score an "
                        "existing answer file pass --answers")
    if args.judge_model and not args.second_answers:
        raise UserError("--judge-model decides between two answer files: pass the other one with --second-answers")
    rows = load_rows(args.data, args.split) if args.data else None
    if rows is not None and args.letter_instruction:
        rows = with_letter_instruction(rows, LETTER_INSTRUCTION)
    problems = _problems(args, rows)
    answers = {qid: record["text"] for qid, record in answers_from_args(args, rows).items()}
    if args.limit:
        if args.model:  # the answered rows (the first --limit)
            problems = {pid: p for pid, p in problems.items() if pid in answers}
        else:
            problems = dict(list(problems.items())[:args.limit])
    if answers and not set(answers) & set(problems):
        raise UserError(f"{args.answers or 'the answer file'}: none of its {len(answers)} question_ids (e.g. "
                        f"{next(iter(answers))!r}) is a pid of split {args.split!r}: answers to another split or "
                        "benchmark?")
    second = read_second_answers(args.second_answers) if args.second_answers else None
    ask_judge, judge, replies = None, None, None
    if args.judge_model:
        from .judge import JudgeSettings, run_judge

        judge = JudgeSettings.from_args(args)

        def ask_judge(requests):
            nonlocal replies
            replies = run_judge(requests, judge, args.output_dir, desc="judging disagreements")
            return replies
    result, records = evaluate(problems, answers, second, ask_judge)
    if judge is not None:
        result["ensembles"]["judge"]["judge"] = {**judge.describe(), "response_models": replies.response_models,
                                                 "cost_usd": replies.cost_usd, "stopped": replies.stopped}
    settings = {"split": args.split, "data": args.data, "problems": args.problems, "pid_splits": args.pid_splits,
                "answers": args.answers, "letter_instruction": args.letter_instruction,
                "second_answers": args.second_answers, "limit": args.limit, "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens, "judge": judge.describe() if judge else None}
    paths = save_results(result, records, args.output_dir, model=args.model or args.model_id, settings=settings)
    print(markdown_table(table_rows(result, args.model or args.model_id or "model")))
    print(f"\nwritten to {args.output_dir}/: {', '.join(Path(p).name for p in paths.values())}")
    failed = judge is not None and result["ensembles"]["judge"]["judge_failures"]
    if failed:  # as llava-bench: the numbers stand, but a rerun would retry these calls alone
        print(f"{failed} judge call(s) got no reply (ours kept there); rerun the command to retry them alone")
    return 1 if failed else 0


def add_parser(benchmarks) -> None:
    from .cli import add_answer_arguments
    from .judge import add_judge_arguments

    parser = benchmarks.add_parser(
        "scienceqa",
        help="ScienceQA: accuracy with the paper's breakdown, optional ensembles with a second answer file",
        description="ScienceQA multiple choice, scored as the original eval_science_qa.py (the answer is a letter, "
        "or starts with \"X. \", or says \"The answer is X.\" exactly once; anything else is wrong) with the paper's "
        "breakdown (NAT/SOC/LAN, TXT/IMG/NO, G1-6/G7-12, Avg). Answer the rows of datasets_scripts/scienceqa.py "
        "(--model, --data) or score an answer file (--answers) against them or ScienceQA's own files (--problems, "
        "--pid-splits). --second-answers adds the complement ensemble and the either-correct bound, and with "
        "--judge-model the judge ensemble. Writes results.json (the original's fields), results.md and "
        "predictions.jsonl to --output-dir; see docs/evaluation.md.")
    add_answer_arguments(parser, max_new_tokens=1024, output_dir="outputs/eval-scienceqa")
    data = parser.add_argument_group("questions")
    data.add_argument("--data", help="the output folder of datasets_scripts/scienceqa.py (or a Hub dataset id)")
    data.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    data.add_argument("--problems", metavar="FILE", help="ScienceQA's problems.json (scores by its fields; with "
                                                         "--pid-splits)")
    data.add_argument("--pid-splits", metavar="FILE", help="ScienceQA's pid_splits.json")
    data.add_argument("--letter-instruction", action="store_true",
                      help=f"append \"{LETTER_INSTRUCTION}\" to every question (LLaVA-1.5's QCM-A prompt; for rows "
                           "built with --format QCM-A)")
    ensemble = parser.add_argument_group("ensembles")
    ensemble.add_argument("--second-answers", metavar="FILE",
                          help="another model's answers (JSON Lines with question_id and text, or a result file with "
                               "\"outputs\" {pid: text} such as the original's GPT-4 results): adds the complement "
                               "ensemble and the either-correct upper bound; with --judge-model also the judge one")
    add_judge_arguments(parser)
    parser.set_defaults(func=run)
