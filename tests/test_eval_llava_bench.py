"""LLaVA-Bench: judge requests, the score parse, the original's arithmetic, review files, resume after kill -9,
and `hf-llava eval llava-bench` end to end on a tiny model against a loopback judge."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import builder_module, write_image, write_json
from huggingface_hub import EvalResult
from inference_helpers import save_tiny_checkpoint
from servers.openai_server import Faults, OpenAIServer

from hf_llava.cli import main as cli_main
from hf_llava.data.builder import build_to_disk
from hf_llava.errors import UserError
from hf_llava.eval.llava_bench import (
    default_rules, detect_variant, judge_messages, load_rules, parse_scores, read_reviews, summarize,
)

CATEGORY = ["conv", "detail", "complex"]
COCO_CONTEXT = [{"image": "1.png", "captions": ["A grey square.", "A block of grey."],
                 "instances": [{"category": "block", "bbox": [0.1, 0.25, 0.9, 1.0]}]},
                {"image": "2.png", "captions": ["A red square."], "instances": []}]


def build_bench(tmp_path, n=4, coco=True) -> str:
    """A LLaVA-Bench folder built by datasets_scripts/llava_bench.py: question k asks "Question k?" (category
    conv/detail/complex in turn), the reference answer is "Reference k."."""
    for name, colour in (("1.png", (9, 9, 9)), ("2.png", (200, 9, 9))):
        write_image(tmp_path / "img" / name, colour, size=(8, 8))
    questions = [{"question_id": k, "image": f"{1 + k % 2}.png", "text": f"Question {k}?",
                  "category": CATEGORY[k % 3]} for k in range(n)]
    answers = [{"question_id": k, "text": f"Reference {k}."} for k in range(n)]
    context = COCO_CONTEXT if coco else [{"image": "1.png", "caption": "A grey square."},
                                         {"image": "2.png", "caption": "A red square."}]
    out = str(tmp_path / "bench")
    build_to_disk(builder_module("llava_bench").LlavaBench, out, image_root=str(tmp_path / "img"),
                  questions=write_json(tmp_path / "q.jsonl", questions, jsonl=True),
                  answers=write_json(tmp_path / "a.jsonl", answers, jsonl=True),
                  context=write_json(tmp_path / "c.jsonl", context, jsonl=True))
    return out


def write_answers(path, ids, prefix="Model answer"):
    write_json(path, [{"question_id": k, "prompt": "q", "text": f"{prefix} {k}.", "answer_id": f"a{k}",
                       "model_id": "m", "metadata": {}} for k in ids], jsonl=True)
    return str(path)


def question_of(body) -> int:
    """The question number in a judge request (the loopback judge's replies depend on it)."""
    user = body["messages"][1]["content"]
    return int(user.split("[Question]\nQuestion ")[1].split("?")[0])


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


def judge_args(server, out, *extra):
    return ["--judge-model", "judge-x", "--judge-base-url", server.url, "--output-dir", str(out), *extra]


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("reply, scores", [
    ("8 9", (8.0, 9.0)), ("8,9", (8.0, 9.0)), ("8, 9\nAssistant 1 is ...", (8.0, 9.0)),  # the original failed on
    ("  7.5 6 \n\nbecause", (7.5, 6.0)), ("10\t4", (10.0, 4.0)),                          # "8, 9" (split on ' ')
    ("8", None), ("8 9 10", None), ("Assistant 1: 8", None), ("Scores: 8 9", None), ("eight nine", None),
    ("nan 3", None), ("inf 3", None), ("", None), (None, None), ("\n8 9", (8.0, 9.0)), ("I rate them\n8 9", None),
])
def test_parse_takes_exactly_two_numbers_from_the_first_line(reply, scores):
    assert parse_scores(reply) == scores


def test_scores_use_the_original_arithmetic_and_leave_failures_out_by_default():
    reviews = [{"category": "conv", "tuple": [8, 6]}, {"category": "conv", "tuple": [9, 9]},
               {"category": "llava_bench_detail", "tuple": [10, 5]},
               {"category": "conv", "tuple": [-1, -1], "failure": "unparseable reply"},
               {"category": "complex", "tuple": [-1, -1], "failure": "judge call failed: 500"}]
    # by hand: conv means 8.5 / 7.5 -> 88.2; detail 10 / 5 -> 50.0; all 9 / 6.667 (rounded to 3 first) -> 74.1
    scores = summarize(reviews)
    assert list(scores) == ["conv", "detail", "complex", "all"]
    assert scores["conv"] == {"relative_score": 88.2, "reference_score": 85.0, "model_score": 75.0, "questions": 2}
    assert scores["detail"]["relative_score"] == 50.0
    assert scores["complex"] == {"relative_score": None, "reference_score": None, "model_score": None,
                                 "questions": 0}
    assert scores["all"] == {"relative_score": 74.1, "reference_score": 90.0, "model_score": 66.7, "questions": 3}
    # the original: -1 on both sides inside the means. conv 5.333 / 4.667 -> 87.5; all 5.0 / 3.6 -> 72.0
    minus_one = summarize(reviews, failures_as_minus_one=True)
    assert minus_one["conv"] == {"relative_score": 87.5, "reference_score": 53.3, "model_score": 46.7,
                                 "questions": 3}
    assert minus_one["complex"]["relative_score"] == 100.0  # -1 / -1, as the original prints it
    assert minus_one["all"] == {"relative_score": 72.0, "reference_score": 50.0, "model_score": 36.0,
                                "questions": 5}


def original_summary(path) -> dict:
    """The numbers summarize_gpt_review.py (haotian-liu/LLaVA) prints for one review file, restated as the test
    oracle: numpy means per category and 'all', rounded to 3 decimals, then ratio x100 and means x10 to 1."""
    scores = {}
    for line in Path(path).read_text().splitlines():
        review = json.loads(line)
        if "category" in review:
            scores.setdefault(review["category"], []).append(review["tuple"])
        scores.setdefault("all", []).append(review["tuple"])
    out = {}
    for key, pairs in sorted(scores.items()):
        stats = [round(x, 3) for x in np.asarray(pairs).mean(0).tolist()]
        out[key] = (round(stats[1] / stats[0] * 100, 1), round(stats[0] * 10, 1), round(stats[1] * 10, 1))
    return out


def test_reviews_file_gives_the_original_numbers_with_failures_as_minus_one(tmp_path):
    rng = random.Random(0)
    reviews = []
    for k in range(90):
        pair = [-1, -1] if k % 17 == 0 else [rng.choice([6, 7, 8, 8.5, 9, 10]), rng.randint(1, 10)]
        reviews.append({"id": k + 1, "question_id": k, "answer1_id": k, "answer2_id": f"x{k}",
                        "category": f"llava_bench_{CATEGORY[k % 3]}", "content": "...", "tuple": pair})
    path = write_json(tmp_path / "review.jsonl", reviews, jsonl=True)
    expected = original_summary(path)
    assert cli_main(["eval", "llava-bench", "--reviews", path, "--failures-as-minus-one",
                     "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmark"] == "llava-bench-in-the-wild"  # llava_bench_ categories
    got = {("all" if c == "all" else f"llava_bench_{c}"): (s["relative_score"], s["reference_score"],
                                                           s["model_score"]) for c, s in results["scores"].items()}
    assert got == expected
    assert results["failures"]["count"] == 6 and results["failures"]["question_ids"] == [0, 17, 34, 51, 68, 85]
    # by default the six failures are left out, which moves the numbers
    assert cli_main(["eval", "llava-bench", "--reviews", path, "--output-dir", str(tmp_path / "out2")]) == 0
    default = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert default["scores"]["all"]["questions"] == 84 and default["scores"]["all"] != results["scores"]["all"]


def test_reviews_without_category_count_in_all_only_and_bad_lines_are_named(tmp_path):
    path = write_json(tmp_path / "r.jsonl", [{"question_id": 1, "tuple": [8, 4]},
                                             {"question_id": 2, "category": "conv", "score": [10, 10]}], jsonl=True)
    reviews = read_reviews(path)
    scores = summarize(reviews)
    assert list(scores) == ["conv", "all"] and scores["all"]["relative_score"] == 77.8  # 7.0 / 9.0
    write_json(tmp_path / "bad.jsonl", [{"question_id": 1, "tuple": [8, 4]}, {"question_id": 2, "tuple": [8]}],
               jsonl=True)
    with pytest.raises(UserError, match=r"bad.jsonl: line 2: needs 'tuple'"):
        read_reviews(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"tuple": [1, 2]}\n{oops\n')
    with pytest.raises(UserError, match="bad.jsonl: line 2 is not a JSON record"):
        read_reviews(tmp_path / "bad.jsonl")


def test_judge_request_is_the_original_layout_with_rules_from_a_rule_file(tmp_path):
    row = {"context": "A grey square.\nA block.\nblock: [0.100, 0.250, 0.900, 1.000]", "question": "What is it?",
           "reference_answer": "A block.", "category": "detail"}
    rule = {"role": "Reviewer", "prompt": "Rate them."}
    system, user = judge_messages(row, "A grey block.", rule)
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"] == (  # COCO: a blank line between captions and boxes, as the original judge saw it
        "[Context]\nA grey square.\nA block.\n\nblock: [0.100, 0.250, 0.900, 1.000]\n\n[Question]\nWhat is it?\n\n"
        "[Reviewer 1]\nA block.\n\n[End of Reviewer 1]\n\n[Reviewer 2]\nA grey block.\n\n[End of Reviewer 2]\n\n"
        "[System]\nRate them.\n\n")
    wild = judge_messages({**row, "context": "A caption."}, "x", rule)[1]["content"]
    assert wild.startswith("[Context]\nA caption.\n\n[Question]")
    assert detect_variant([row["context"]]) == "coco" and detect_variant(["A caption: [sic]"]) == "in-the-wild"
    entries = {f"{p}{c}": {"role": "Assistant", "prompt": f"{p}{c} rule"} for p in ("", "llava_bench_")
               for c in CATEGORY}
    path = write_json(tmp_path / "rule.json", entries)
    assert load_rules(path, "in-the-wild")["conv"]["prompt"] == "llava_bench_conv rule"
    assert load_rules(path, "coco")["complex"]["prompt"] == "complex rule"
    write_json(path, {k: v for k, v in entries.items() if k != "llava_bench_detail"})
    with pytest.raises(UserError, match="rule.json: needs a key 'llava_bench_detail'"):
        load_rules(path, "in-the-wild")
    for variant in ("coco", "in-the-wild"):
        rules = default_rules(variant)
        assert set(rules) == set(CATEGORY) and all("first line" in r["prompt"] for r in rules.values())
    assert "bounding box" in default_rules("coco")["conv"]["prompt"]
    assert "bounding box" not in default_rules("in-the-wild")["conv"]["prompt"]


# ---------------------------------------------------------------- the command

def test_scoring_an_answer_file_failures_missing_answers_and_outputs(tmp_path, api_key, capsys):
    data = build_bench(tmp_path, n=6)
    answers = write_answers(tmp_path / "answers.jsonl", [0, 1, 2, 3, 5])  # question 4 has no answer

    def judge(body):
        k = question_of(body)
        return "Assistant 1 did better." if k == 1 else f"{8 + k % 2} {4 + k}\nreasons"

    faults = Faults(fail_images=frozenset({"2"}), retry_after=0.01)  # question 2: every call fails
    with OpenAIServer(responder=judge, faults=faults) as server:
        out = tmp_path / "out"
        args = ["eval", "llava-bench", "--answers", answers, "--data", data, "--judge-max-retries", "0",
                *judge_args(server, out)]
        assert cli_main(args) == 1  # a call without reply: rerun to retry it
        assert "1 judge call(s) got no reply (first: question 2" in capsys.readouterr().out
        assert "4" not in {key.split("|")[0] for key in server.requests_by_key(status=None)}
        results = json.loads((out / "results.json").read_text())
        reviews = [json.loads(line) for line in (out / "reviews.jsonl").read_text().splitlines()]
        # judged: 0 (8, 4), 3 (9, 7), 5 (9, 9) -> conv {0, 3}: 8.5 / 5.5 -> 64.7; complex {5}: 100.0;
        # all: 8.667 / 6.667 -> 76.9; 1 unparseable (detail), 2 failed (complex), 4 missing (detail)
        assert results["scores"]["conv"]["relative_score"] == 64.7
        assert results["scores"]["detail"]["questions"] == 0 and results["scores"]["complex"]["relative_score"] == 100.0
        assert results["scores"]["all"] == {"relative_score": 76.9, "reference_score": 86.7, "model_score": 66.7,
                                            "questions": 3}
        assert results["failures"]["by_reason"] == {"unparseable reply": 1, "judge call failed": 1}
        assert results["failures"]["question_ids"] == ["1", "2"]
        assert results["missing_answers"] == {"count": 1, "question_ids": ["4"]}
        assert (results["benchmark"], results["judge_model"], results["model"]) == ("llava-bench-coco", "judge-x", None)
        assert results["settings"]["judge"]["temperature"] == 0.2 and results["questions"] == 6
        assert [r["question_id"] for r in reviews] == ["0", "1", "2", "3", "5"]
        assert reviews[1]["tuple"] == [-1, -1] and reviews[1]["content"] == "Assistant 1 did better."
        assert reviews[2]["content"] is None and reviews[2]["failure"].startswith("judge call failed")
        assert reviews[0]["answer2_id"] == "a0" and reviews[0]["category"] == "conv"  # COCO: original key names
        for hub in results["hub_results"]:
            EvalResult(**hub)
        assert {h["metric_name"]: h["metric_value"] for h in results["hub_results"]} == {
            "relative score, Conversation (judge judge-x)": 64.7,
            "relative score, Complex reasoning (judge judge-x)": 100.0, "relative score, All (judge judge-x)": 76.9}
        table = (out / "results.md").read_text()
        assert table.splitlines()[0] == ("| LLaVA-Bench (COCO) | Conversation | Detail description | Complex reasoning "
                                         "| All |")
        assert "| relative score (%) | 64.7 |  | 100.0 | 76.9 |" in table and "Judge failures: 2 (left out)" in table
        # the original's arithmetic over the same replies, from the review file we wrote
        assert cli_main(["eval", "llava-bench", "--reviews", str(out / "reviews.jsonl"), "--failures-as-minus-one",
                         "--output-dir", str(tmp_path / "orig")]) == 0
        original = original_summary(out / "reviews.jsonl")
        assert json.loads((tmp_path / "orig" / "results.json").read_text())["scores"]["all"]["relative_score"] == \
            original["all"][0]
        # the endpoint recovers: the rerun sends only the failed call
        server.state.faults.fail_images = frozenset()
        assert cli_main(args) == 0
        counts = server.requests_by_key()
        assert sorted(counts.values()) == [1] * 5 and "2" in {key.split("|")[0] for key in counts}


def test_resume_after_kill_9_mid_judging_repays_nothing_finished(tmp_path, api_key):
    data = build_bench(tmp_path, n=8, coco=False)
    answers = write_answers(tmp_path / "answers.jsonl", range(8))
    out = tmp_path / "out"
    with OpenAIServer(responder=lambda body: "7 8\nok", latency=0.4) as server:
        command = [sys.executable, "-m", "hf_llava.cli", "eval", "llava-bench", "--answers", answers, "--data", data,
                   "--judge-concurrency", "1", *judge_args(server, out)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OPENAI_API_KEY": "sk-loopback"})
        cache = out / "judge_cache.jsonl"
        deadline = time.monotonic() + 300
        while not (cache.exists() and cache.read_text().count('"status": "ok"') >= 3):
            assert process.poll() is None and time.monotonic() < deadline, "the judging run ended too early"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished = {json.loads(line)["key"] for line in cache.read_text().splitlines() if line.endswith("}")}
        assert 3 <= len(finished) < 8
        assert cli_main(["eval", "llava-bench", "--answers", answers, "--data", data, *judge_args(server, out)]) == 0
        counts = server.requests_by_key()
        assert all(counts[key] == 1 for key in finished)  # finished judgements were not paid again
        assert len(counts) == 8 and sum(counts.values()) <= 9  # at most the one call in flight at the kill
        results = json.loads((out / "results.json").read_text())
        assert results["scores"]["all"]["questions"] == 8 and results["benchmark"] == "llava-bench-in-the-wild"


def test_end_to_end_on_a_tiny_model_then_rescoring_without_generating(tmp_path, api_key):
    data = build_bench(tmp_path, n=3)
    model = save_tiny_checkpoint(tmp_path / "model")
    seen = {}  # question number -> the judge's user message (requests arrive concurrently, in any order)

    def judge(body):
        seen[question_of(body)] = body["messages"][1]["content"]
        return f"8 {question_of(body) + 5}"

    with OpenAIServer(responder=judge) as server:
        out = tmp_path / "out"
        base = ["eval", "llava-bench", "--model", str(model), "--data", data, "--max-new-tokens", "4"]
        args = [*base, "--batch-size", "2", *judge_args(server, out)]
        assert cli_main(args) == 0
        answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
        assert [a["question_id"] for a in answers] == ["0", "1", "2"] and answers[0]["model_id"] == "model"
        assert answers[0]["prompt"] == "Question 0?"
        assert f"[Assistant 2]\n{answers[0]['text']}\n\n[End of Assistant 2]" in seen[0]
        assert "[Assistant 1]\nReference 0.\n\n" in seen[0]
        results = json.loads((out / "results.json").read_text())
        # 8/5, 8/6, 8/7 -> all: 8 / 6 -> 75.0
        assert results["scores"]["all"]["relative_score"] == 75.0 and results["model"] == str(model)
        assert list(results)[:2] == ["benchmark", "model"] and results["hub_results"]
        # a rerun (e.g. another judge setting) neither regenerates answers nor re-pays judgements
        before = (out / "answers.jsonl").read_text()
        assert cli_main([*args, "--failures-as-minus-one"]) == 0
        assert (out / "answers.jsonl").read_text() == before and sum(server.requests_by_key().values()) == 3
        assert cli_main([*base, "--limit", "1", *judge_args(server, out)]) == 0
        assert json.loads((out / "results.json").read_text())["questions"] == 1


def test_bad_inputs_are_user_errors_naming_what_to_fix(tmp_path, api_key, capsys):
    data = build_bench(tmp_path, n=2)
    answers = write_answers(tmp_path / "answers.jsonl", [0, 1])
    out = str(tmp_path / "out")
    capsys.readouterr()  # the build's progress bars
    cases = [
        (["--answers", answers, "--output-dir", out], "give --data"),
        (["--answers", answers, "--data", data, "--output-dir", out], "--judge-model is needed"),
        # checked before anything is generated (no model is loaded from this missing folder)
        (["--model", str(tmp_path / "no-model"), "--data", data, "--output-dir", out], "--judge-model is needed"),
        (["--answers", answers, "--data", str(tmp_path), "--judge-model", "j", "--output-dir", out],
         "not a saved dataset"),
        (["--answers", str(tmp_path / "c.jsonl"), "--data", data, "--judge-model", "j", "--output-dir", out],
         r"c.jsonl: line 1: an answer record needs 'question_id' and a string 'text'"),
        (["--answers", answers, "--data", data, "--judge-model", "j", "--rules", str(tmp_path / "a.jsonl"),
          "--output-dir", out], "--rules .*a.jsonl: cannot read it as JSON"),
        (["--reviews", answers, "--output-dir", out], r"answers.jsonl: line 1: needs 'tuple'"),
        (["--reviews", answers, "--answers", answers, "--output-dir", out], "--reviews summarizes a review file alone"),
    ]
    for extra, message in cases:
        assert cli_main(["eval", "llava-bench", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hf-llava eval: error: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err), (message, err)
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question_id": "0"}])}).save_to_disk(
        str(tmp_path / "other"))
    assert cli_main(["eval", "llava-bench", "--answers", answers, "--data", str(tmp_path / "other"),
                     "--judge-model", "j", "--output-dir", out]) == 2
    assert "lacks the LLaVA-Bench column(s) ['category'" in capsys.readouterr().err
