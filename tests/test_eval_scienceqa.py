"""ScienceQA scoring: the original's parse branches, its result file, the paper's breakdown, the ensembles (judge via
a loopback OpenAI-compatible server), bad inputs, and an end-to-end run on a tiny model."""

import json
import re

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


def test_ensembles_complement_and_upper_bound(tmp_path):
    problems = sqa.problems_from_files(*write_files(tmp_path)[:2])
    result, records = sqa.evaluate(problems, OURS, SECOND)
    # complement by hand: 1 A wrong, 2 ours right (second unparsable), 3 ours right (second missing), 4 E, 5 B,
    # 6 C right, 7 B wrong, 8 B wrong -> 5/8; NAT (1,4,7,8) 1/4, SOC 2/2, LAN 2/2
    c = result["ensembles"]["complement"]
    assert (c["correct"], c["count"], c["second_failed"]) == (5, 8, 2)
    assert (c["breakdown"]["Avg"], c["breakdown"]["NAT"], c["breakdown"]["SOC"], c["breakdown"]["LAN"]) == \
        (62.5, 25.0, 100.0, 100.0)
    # either correct: every question but 7 (both B) and 8 (ours missing, second B) -> 6/8
    assert result["ensembles"]["either_correct"]["correct"] == 6
    assert result["ensembles"]["either_correct"]["breakdown"]["Avg"] == 75.0
    assert "judge" not in result["ensembles"]
    assert records[1] == {"question_id": "2", "gold": "A", "text": "A. Alaska", "parsed": "A", "index": 0,
                          "correct": True, "second_text": "Hmm.", "second_index": -1}
    assert sqa.disagreements(problems, result["results"], {r["question_id"]: r["second_index"] for r in records}) \
        == ["1", "2", "3", "4", "5", "6", "8"]


def test_second_answers_from_a_result_file_or_an_answer_file(tmp_path):
    (tmp_path / "gpt4.json").write_text(json.dumps({"acc": 1, "outputs": SECOND}))
    assert sqa.read_second_answers(tmp_path / "gpt4.json") == SECOND
    (tmp_path / "gpt4.jsonl").write_text("".join(json.dumps({"question_id": int(k), "text": v}) + "\n"
                                                 for k, v in SECOND.items()))
    assert sqa.read_second_answers(tmp_path / "gpt4.jsonl") == SECOND
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "text": "A"}\n{"question_id": 2}\n')
    with pytest.raises(UserError, match="bad.jsonl: line 2: an answer record needs 'question_id' and a string"):
        sqa.read_second_answers(tmp_path / "bad.jsonl")


def test_cli_scores_an_answer_file_alone_with_the_original_fields(tmp_path):
    from huggingface_hub import EvalResult

    from hf_llava.cli import main as cli_main

    problems_json, splits_json, answers = write_files(tmp_path)
    out = tmp_path / "out"
    assert cli_main(["eval", "scienceqa", "--answers", str(answers), "--problems", str(problems_json),
                     "--pid-splits", str(splits_json), "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"benchmark", "model", "settings", "acc", "correct", "count", "results", "outputs", "breakdown",
            "failures", "hub_results"} <= set(results)
    assert results["benchmark"] == "scienceqa" and results["model"] is None and results["settings"]["split"] == "test"
    assert (results["acc"], results["correct"], results["count"]) == (37.5, 3, 8)
    assert results["results"]["3"] == 3 and results["results"]["5"] == -1
    hub = [EvalResult(**entry) for entry in results["hub_results"]]  # exactly EvalResult's keyword arguments
    assert [(h.metric_name, h.metric_value) for h in hub[:2]] == [("Accuracy (Avg)", 37.5), ("Accuracy (NAT)", 25.0)]
    assert len(hub) == 9 and {h.dataset_split for h in hub} == {"test"}
    table = (out / "results.md").read_text()
    assert "| Method | NAT | SOC | LAN | TXT | IMG | NO | G1-6 | G7-12 | Avg |" in table
    assert "| 25.00 | 50.00 | 50.00 | 50.00 | 50.00 | 0.00 | 25.00 | 50.00 | 37.50 |" in table
    assert "2 unparsable, 1 with a letter beyond the choices, 1 missing" in table
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == SPLITS["test"] and records[7]["text"] is None
    # --limit scores the split's first N problems only
    assert cli_main(["eval", "scienceqa", "--answers", str(answers), "--problems", str(problems_json),
                     "--pid-splits", str(splits_json), "--output-dir", str(out), "--limit", "3"]) == 0
    assert json.loads((out / "results.json").read_text())["acc"] == 100.0


JUDGE_REPLIES = {  # question -> the loopback judge's reply
    "Which animal is a mammal?": "Answer 1 is right. The answer is B.",
    "Which state is north?": "I cannot decide.",  # no answer in it: ours is kept
    "Which word is a noun?": "The answer is A.",  # overrules ours (which was right)
    "Which is a good?": "Answer 2 reasons well. The answer is B.",
    "Which is a verb?": "The answer is A. On second thought, the answer is C. The answer is C.",  # the last counts
    "Which is hot?": "Neither: the answer is A. The answer is A.",
}


JUDGED = []  # the request bodies the loopback judge received


def judge_responder(body):
    JUDGED.append(body)
    user = body["messages"][-1]["content"]
    return next(reply for question, reply in JUDGE_REPLIES.items() if f"Question: {question}" in user)


def test_judge_ensemble_through_a_loopback_judge_and_resume(tmp_path, monkeypatch):
    from servers.openai_server import Faults, OpenAIServer

    from hf_llava.cli import main as cli_main

    problems_json, splits_json, answers = write_files(tmp_path)
    (tmp_path / "gpt4.json").write_text(json.dumps({"outputs": SECOND}))
    out = tmp_path / "out"
    # pid 4's judge call always fails (its request key starts with the pid)
    with OpenAIServer(responder=judge_responder, faults=Faults(fail_images=frozenset({"4"}))) as server:
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        argv = ["eval", "scienceqa", "--answers", str(answers), "--problems", str(problems_json), "--pid-splits",
                str(splits_json), "--output-dir", str(out), "--second-answers", str(tmp_path / "gpt4.json"),
                "--judge-model", "loopback-judge", "--judge-base-url", server.url, "--judge-max-retries", "0"]
        assert cli_main(argv) == 1  # pid 4's judge call got no reply: exit 1, as llava-bench
        asked = server.requests_by_key(status=None)
        assert sorted(key.split("|")[0] for key in asked) == ["1", "2", "3", "4", "5", "6", "8"]  # not 7: agreed
        body = next(b for b in JUDGED if "Which word is a noun?" in b["messages"][-1]["content"])
        assert body["model"] == "loopback-judge" and body["temperature"] == 0.2
        assert body["messages"][0] == {"role": "system", "content": sqa.JUDGE_SYSTEM}
        assert body["messages"][1]["content"].endswith("Answer 1:\nNouns name things. The answer is D.\n\n"
                                                       "Answer 2:\n(no answer)")
        assert cli_main(argv) == 1  # rerun: finished judgements come from the cache, only the failed one is resent
        again = server.requests_by_key(status=None)
        assert {k.split("|")[0]: n for k, n in again.items()} == {"1": 1, "2": 1, "3": 1, "4": 2, "5": 1, "6": 1,
                                                                 "8": 1}
    results = json.loads((out / "results.json").read_text())
    judge = results["ensembles"]["judge"]
    # by hand: 1 B right, 2 ours right, 3 A wrong, 4 ours failed (call failed), 5 B right, 6 C right,
    # 7 ours B wrong (not asked), 8 A right -> 5/8
    assert (judge["correct"], judge["judged"], judge["judge_failures"], judge["judge_unparsed"]) == (5, 7, 1, 1)
    assert judge["results"] == {"1": 1, "2": 0, "3": 0, "4": -1, "5": 1, "6": 2, "7": 1, "8": 0}
    assert judge["judge"]["model"] == "loopback-judge" and results["settings"]["judge"]["temperature"] == 0.2
    table = (out / "results.md").read_text()
    assert "| judge (on disagreements) |" in table and "| either correct (upper bound) |" in table
    assert "asked on 7 disagreements; 1 failed calls and 1 replies without an answer kept ours" in table
    records = {r["question_id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert records["3"]["judge_reply"] == "The answer is A." and "judge_reply" not in records["7"]


def test_judge_request_holds_the_question_and_both_answers():
    p = sqa.Problem(1, 3, "NAT", ("NO",), "G1-6", "Question: Which?\nContext: N/A\nOptions: (A) x (B) y (C) z")
    system, user = sqa.judge_messages(p, "It is B. The answer is B.", None)
    assert system["role"] == "system" and "The answer is X." in system["content"]
    assert user["content"] == ("Question: Which?\nContext: N/A\nOptions: (A) x (B) y (C) z\n\nAnswer 1:\nIt is B. "
                               "The answer is B.\n\nAnswer 2:\n(no answer)")
    assert sqa.judge_choice("The answer is (C).", 3) == 2 and sqa.judge_choice("The answer is D.", 3) == -1
    assert sqa.judge_choice(None, 3) == -1 and sqa.judge_choice("no idea", 3) == -1


@pytest.mark.parametrize("change, message", [
    (lambda f: f["problems"].unlink(), "--problems .*problems.json: no such file"),
    (lambda f: f["splits"].write_text(json.dumps({"test": ["1", "77"]})),
     "pid_splits.json: pid 77 of split 'test' is not in .*problems.json"),
    (lambda f: f["splits"].write_text(json.dumps({"train": []})),
     r"pid_splits.json: no split 'test' \(has \['train'\]\)"),
    (lambda f: f["problems"].write_text(json.dumps({**PROBLEMS, "1": {**PROBLEMS["1"], "answer": 7}})),
     "problems.json: problem 1 is malformed"),
    (lambda f: f["answers"].write_text(json.dumps({"question_id": "x1", "text": "A"}) + "\n"),
     "answers.jsonl: none of its 1 question_ids .*'x1'.* is a pid of split 'test'"),
    (lambda f: f["answers"].write_text('{"question_id": "1", "text": "A"}\nnot json\n'),
     "answers.jsonl: line 2 is not a JSON record"),
])
def test_bad_inputs_end_in_one_line_naming_the_file(tmp_path, capsys, change, message):
    from hf_llava.cli import main as cli_main

    problems_json, splits_json, answers = write_files(tmp_path)
    change({"problems": problems_json, "splits": splits_json, "answers": answers})
    assert cli_main(["eval", "scienceqa", "--answers", str(answers), "--problems", str(problems_json),
                     "--pid-splits", str(splits_json), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_flag_combinations_that_cannot_work(tmp_path, capsys):
    from hf_llava.cli import main as cli_main

    problems_json, splits_json, answers = write_files(tmp_path)
    files = ["--problems", str(problems_json), "--pid-splits", str(splits_json)]
    assert cli_main(["eval", "scienceqa", "--answers", str(answers), *files, "--judge-model", "j"]) == 2
    assert "--judge-model decides between two answer files" in capsys.readouterr().err
    assert cli_main(["eval", "scienceqa", "--model", str(tmp_path), *files]) == 2
    assert "--model answers the rows of --data" in capsys.readouterr().err
    assert cli_main(["eval", "scienceqa", "--answers", str(answers), "--problems", str(problems_json)]) == 2
    assert "--problems and --pid-splits go together" in capsys.readouterr().err
    assert cli_main(["eval", "scienceqa", "--answers", str(answers)]) == 2
    assert "give the questions: --data" in capsys.readouterr().err


def test_end_to_end_on_a_tiny_model_from_builder_rows(tmp_path):
    from data_helpers import builder_module, write_image
    from inference_helpers import save_tiny_checkpoint

    from hf_llava.cli import main as cli_main
    from hf_llava.data.builder import build_to_disk

    problems_json, splits_json, _ = write_files(tmp_path)
    for pid in ("1", "3", "5", "7", "9"):
        write_image(tmp_path / "images" / ("train" if pid == "9" else "test") / pid / "image.png", (0, 90, 200))
    build_to_disk(builder_module("scienceqa").ScienceQA, str(tmp_path / "data"), problems=str(problems_json),
                  splits=str(splits_json), image_root=str(tmp_path / "images"), format="QCM-A",
                  split_names="train,test")  # an empty split (val) could not be loaded back by datasets
    model = save_tiny_checkpoint(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["eval", "scienceqa", "--model", str(model), "--data", str(tmp_path / "data"), "--output-dir", str(out),
            "--max-new-tokens", "3", "--batch-size", "4", "--letter-instruction"]
    assert cli_main(argv) == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == SPLITS["test"] and {a["model_id"] for a in answers} == {"model"}
    assert answers[0]["prompt"].endswith("(C) choice 2\nAnswer with the option's letter from the given choices "
                                         "directly.")
    assert not list((tmp_path / "data").rglob("cache-*.arrow"))  # the instruction is added in memory
    results = json.loads((out / "results.json").read_text())
    assert results["count"] == 8 and results["model"] == str(model) and results["failures"]["missing"] == 0
    # the scores are those of the answers written: rescoring the file against ScienceQA's own files agrees
    assert results["outputs"] == {a["question_id"]: a["text"] for a in answers}
    assert cli_main(["eval", "scienceqa", "--answers", str(out / "answers.jsonl"), "--problems", str(problems_json),
                     "--pid-splits", str(splits_json), "--output-dir", str(tmp_path / "rescored")]) == 0
    rescored = json.loads((tmp_path / "rescored" / "results.json").read_text())
    assert (rescored["results"], rescored["breakdown"]) == (results["results"], results["breakdown"])
    assert cli_main(argv) == 0  # rerun: every answer is kept, none regenerated
    assert [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()] == answers


def test_rows_without_the_scienceqa_columns_are_refused():
    with pytest.raises(UserError, match="the rows lack answer, num_choices, .* datasets_scripts/scienceqa.py"):
        sqa.problems_from_rows([{"id": "1", "images": [], "messages": []}])
