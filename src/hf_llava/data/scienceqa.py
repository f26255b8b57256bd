"""ScienceQA (problems.json + pid_splits.json + images/<split>/<pid>/image.png) -> canonical rows.

Prompt formats follow the paper's comparison, written `INPUT-OUTPUT`: the input is the letters Q (question),
C (context: the hint, "N/A" when empty) and M (options "(A) x (B) y") in any order; the output is A (answer,
"The answer is X."), L (lecture) and E (explanation, ScienceQA's `solution`), e.g. `QCM-A` answer only,
`QCM-LEA` reasoning first ending "The answer is X.", `QCM-AEL` answer first then "BECAUSE: " and the reasoning.
The breakdown columns of the evaluation are kept: subject (NAT/SOC/LAN), context modality (TXT and/or IMG, or
NO) and grade band (G1-6/G7-12), plus the raw grade, the gold letter and the number of choices.
"""

from __future__ import annotations

import json
import os
import re

from .errors import BadRecordError, SkipReport
from .images import read_image
from .schema import assistant_message, user_message

SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
LETTERS = "ABCDEFGHIJ"
_FORMAT = re.compile(r"^([QCM]{1,3})-(A|[LE]{1,2}A|A[LE]{1,2})$")


def parse_format(fmt: str) -> tuple[str, str]:
    m = _FORMAT.match(fmt)
    if not m or len(set(m.group(1))) != len(m.group(1)) or "Q" not in m.group(1):
        raise ValueError(f"unknown ScienceQA format {fmt!r}: expected e.g. QCM-A, QCM-LEA, QCM-AEL "
                         "(input letters Q/C/M incl. Q; output A with L and/or E before or after it)")
    return m.group(1), m.group(2)


def prompt(problem: dict, fmt: str = "QCM-LEA") -> tuple[str, str]:
    """(user text, assistant text) for a problem in format `fmt`."""
    inputs, outputs = parse_format(fmt)
    letter = LETTERS[problem["answer"]]
    parts = {"Q": f"Question: {problem['question']}",
             "C": f"Context: {problem.get('hint') or 'N/A'}",
             "M": "Options: " + " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(problem["choices"]))}
    user = "\n".join(parts[k] for k in inputs)
    texts = {"L": (problem.get("lecture") or "").strip(), "E": (problem.get("solution") or "").strip()}
    reasoning = " ".join(texts[k] for k in outputs if k != "A" and texts[k])
    answer = f"The answer is {letter}."
    if outputs == "A" or not reasoning:
        assistant = answer
    elif outputs.startswith("A"):
        assistant = f"{answer} BECAUSE: {reasoning}"
    else:
        assistant = f"{reasoning} {answer}"
    return user, assistant


def grade_band(grade: str) -> str:
    n = int(grade.removeprefix("grade"))
    return "G1-6" if n <= 6 else "G7-12"


def context_modality(problem: dict) -> list[str]:
    mods = (["TXT"] if (problem.get("hint") or "").strip() else []) + (["IMG"] if problem.get("image") else [])
    return mods or ["NO"]


def load_problems(problems_json: str | os.PathLike, splits_json: str | os.PathLike) -> tuple[dict, dict]:
    out = []
    for path in (problems_json, splits_json):
        try:
            with open(path, encoding="utf-8") as f:
                out.append(json.load(f))
        except FileNotFoundError:
            raise FileNotFoundError(f"ScienceQA file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON: {e}") from None
        if not isinstance(out[-1], dict):
            raise ValueError(f"{path}: expected a JSON object")
    return out[0], out[1]


def scienceqa_rows(problems: dict, pids: list, split: str, image_root: str | os.PathLike | None,
                   report: SkipReport, fmt: str = "QCM-LEA", source: str = "problems.json"):
    """Rows for the pids of one split. The image (if any) is read from image_root/<split>/<pid>/<image> and goes
    before the text (LLaVA's ScienceQA layout)."""
    parse_format(fmt)
    for pid in pids:
        pid = str(pid)
        try:
            problem = problems.get(pid)
            if problem is None:
                raise BadRecordError(source, f"pid {pid}", f"listed in split {split!r} but not in problems.json",
                                     "unknown pid")
            try:
                choices, answer = problem["choices"], problem["answer"]
                if not (isinstance(choices, list) and 2 <= len(choices) <= len(LETTERS)
                        and isinstance(answer, int) and 0 <= answer < len(choices)):
                    raise ValueError(f"answer {answer!r} is not an index into {len(choices)} choices")
                user, assistant = prompt(problem, fmt)
                subject, band = SUBJECTS[problem["subject"]], grade_band(problem["grade"])
            except (KeyError, TypeError, ValueError) as e:
                raise BadRecordError(source, f"pid {pid}", f"malformed problem ({e!r})", "malformed record") from None
            images = [read_image(image_root, os.path.join(split, pid, problem["image"]), source, f"pid {pid}")] \
                if problem.get("image") else []
        except BadRecordError as e:
            report.bad(e)
            continue
        yield {"id": pid, "images": images,
               "messages": [user_message(user, with_image=bool(images)), assistant_message(assistant)],
               "answer": LETTERS[answer], "num_choices": len(choices), "subject": subject,
               "context_modality": context_modality(problem), "grade": problem["grade"], "grade_band": band}


def scienceqa_features() -> dict:
    from datasets import List, Value

    return {"answer": Value("string"), "num_choices": Value("int32"), "subject": Value("string"),
            "context_modality": List(Value("string")), "grade": Value("string"), "grade_band": Value("string")}
