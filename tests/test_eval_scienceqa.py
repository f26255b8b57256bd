"""ScienceQA scoring: the original's parse branches, its result file, the paper's breakdown, the ensembles (judge via
a loopback OpenAI-compatible server), bad inputs, and an end-to-end run on a tiny model."""

import json

import pytest

from hf_llava.errors import UserError
from hf_llava.eval import scienceqa as sqa


def problem(subject, hint, image, grade, choices, answer, question="Which one?"):
    return {"question": question, "choices": [f"choice {i}" for i in range(choices)], "answer": answer,
            "hint": hint, "image": image, "grade": grade, "subject": subject, "lecture": "L.", "solution": "S.",
            "split": "test"}


# Eight test problems covering every breakdown column, and one train problem that must not be scored.
PROBLEMS = {
    "1": problem("natural science", "", "image.png", "grade3", 3, 1, "Which animal is a mammal?"),
    "2": problem("social science", "A hint.", None, "grade8", 2, 0, "Which state is north?"),
    "3": problem("language science", "A hint.", "image.png", "grade10", 4, 3, "Which word is a noun?"),
    "4": problem("natural science", "", None, "grade1", 5, 4, "Which is a liquid?"),
    "5": problem("social science", "", "image.png", "grade7", 2, 1, "Which is a good?"),
    "6": problem("language science", "A hint.", None, "grade5", 3, 2, "Which is a verb?"),
    "7": problem("natural science", "A hint.", "image.png", "grade12", 2, 0, "Which is a magnet?"),
    "8": problem("natural science", "", None, "grade2", 3, 0, "Which is hot?"),
    "9": problem("natural science", "", None, "grade2", 3, 0, "Train only?"),
}
SPLITS = {"train": ["9"], "val": [], "test": [str(i) for i in range(1, 9)]}
# One answer per parse branch and failure kind (pid 8 has none).
OURS = {
    "1": "B",                                   # the whole answer is a letter: right
    "2": "A. Alaska",                           # a letter followed by ". ": right
    "3": "Nouns name things. The answer is D.",  # exactly one "The answer is X.": right
    "4": "The answer is E. Or the answer is A. The answer is A.",  # two matches: failed
    "5": "The answer is C.",                    # a letter beyond the 2 choices: failed
    "6": "I think it is C",                     # nothing to parse: failed
    "7": "B",                                   # wrong
}
SECOND = {"1": "The answer is A.", "2": "Hmm.", "4": "The answer is E.", "5": "The answer is B.", "6": "C", "7": "B",
          "8": "The answer is B."}


def write_files(tmp_path, ours=OURS):
    (tmp_path / "problems.json").write_text(json.dumps(PROBLEMS))
    (tmp_path / "pid_splits.json").write_text(json.dumps(SPLITS))
    with open(tmp_path / "answers.jsonl", "w") as f:
        for pid, text in ours.items():
            f.write(json.dumps({"question_id": pid, "prompt": "q", "text": text, "answer_id": "x",
                                "model_id": "m", "metadata": {}}) + "\n")
    return tmp_path / "problems.json", tmp_path / "pid_splits.json", tmp_path / "answers.jsonl"


# Every expected index equals the original eval_science_qa.py rule's on the same text (checked by running its logic).
@pytest.mark.parametrize("text, choices, letter, index", [
    ("B", 3, "B", 1),
    ("E", 5, "E", 4),
    ("D", 3, "D", -1),  # an option letter beyond the choices
    ("F", 3, None, -1),  # not one of the options A-E
    ("AB", 3, None, -1),  # not a single letter (the original tests membership in a list, not a string)
    ("", 3, None, -1),
    ("C. because", 3, "C", 2),
    ("C.because", 3, None, -1),  # ". " needed
    ("F. The answer is A.", 3, "A", 0),  # F is no option, so the pattern decides
    ("The answer is B.", 3, "B", 1),
    ("The answer is B", 3, None, -1),  # the pattern needs one more character after the letter
    ("The answer is Bx", 3, "B", 1),  # ... any character (the original's unescaped dot)
    ("The answer is A. The answer is A.", 3, None, -1),  # more than one match: failed
    ("The answer is Z.", 3, "Z", -1),
    (None, 3, None, -1),  # no answer
])
def test_parse_branches(text, choices, letter, index):
    assert sqa.parse_letter(text, choices) == letter
    assert sqa.predicted_index(text, choices) == index


def test_score_matches_the_original_and_breaks_down_like_get_scores(tmp_path):
    problems_json, splits_json, answers = write_files(tmp_path)
    problems = sqa.problems_from_files(problems_json, splits_json, "test")
    assert list(problems) == SPLITS["test"]
    assert problems["3"].context == ("TXT", "IMG") and problems["4"].context == ("NO",)
    assert problems["1"].question.startswith("Question: Which animal is a mammal?\nContext: N/A\nOptions: (A)")
    result = sqa.score(problems, {pid: r for pid, r in OURS.items()})
    # The original eval_science_qa.py (its logic run on these files) printed acc 37.5, correct 3, count 8 and
    # results {1: 1, 2: 0, 3: 3, 4: -1, 5: -1, 6: -1, 7: 1, 8: -1}.
    assert (result["acc"], result["correct"], result["count"]) == (37.5, 3, 8)
    assert result["results"] == {"1": 1, "2": 0, "3": 3, "4": -1, "5": -1, "6": -1, "7": 1, "8": -1}
    assert result["outputs"]["8"] is None and result["outputs"]["3"] == OURS["3"]
    assert result["failures"] == {"missing": 1, "unparsed": 2, "out_of_range": 1}
    # by hand: NAT 1,4,7,8 -> 1/4; SOC 2,5 -> 1/2; LAN 3,6 -> 1/2; TXT 2,3,6,7 -> 2/4; IMG 1,3,5,7 -> 2/4;
    # NO 4,8 -> 0/2; G1-6 1,4,6,8 -> 1/4; G7-12 2,3,5,7 -> 2/4
    assert result["breakdown"] == {"NAT": 25.0, "SOC": 50.0, "LAN": 50.0, "TXT": 50.0, "IMG": 50.0, "NO": 0.0,
                                   "G1-6": 25.0, "G7-12": 50.0, "Avg": 37.5}


def test_breakdown_two_decimals_and_empty_groups():
    p = sqa.Problem(0, 2, "NAT", ("NO",), "G1-6", "q")
    problems = {str(i): p for i in range(3)}
    # 2/3 = 66.666..% -> "66.67" as ScienceQA's "{:.2f}"; no SOC/LAN/TXT/IMG/G7-12 problems -> None, not 0
    b = sqa.breakdown(problems, {"0": 0, "1": 0, "2": 1})
    assert b["Avg"] == 66.67 and b["NAT"] == 66.67 and b["NO"] == 66.67
    assert b["SOC"] is None and b["G7-12"] is None
