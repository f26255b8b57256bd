"""The evaluation core shared by every benchmark: answer files (generate, resume, read from anywhere), judge calls
through the data engine (cache, failures, cost cap, request hash), results.json's hub_results."""

import json

import pytest
from servers.openai_server import Faults, OpenAIServer

from hf_llava.data.schema import assistant_message, user_message
from hf_llava.errors import UserError
from hf_llava.eval.answers import generate_answer_file, load_rows, read_answer_file
from hf_llava.eval.judge import JudgeSettings, run_judge
from hf_llava.testing import random_image, tiny_llava


def bench_row(k):
    return {"id": f"row{k}", "question_id": str(k), "images": [random_image(k)],
            "messages": [user_message(f"What is shown in picture {k}?", with_image=True), assistant_message("ref")]}


@pytest.fixture(scope="module")
def tiny():
    return tiny_llava(seed=3, chat_template="chatml")


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_file_has_the_original_format_and_resumes_after_a_torn_write(tiny, tmp_path):
    model, processor = tiny
    path = tmp_path / "answers.jsonl"
    rows = [bench_row(k) for k in range(4)]
    first = generate_answer_file(model, processor, rows, path, model_id="tiny", batch_size=2, max_new_tokens=4,
                                 limit=2)
    assert [r["question_id"] for r in first] == ["0", "1"]
    assert set(first[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert first[0]["prompt"] == "What is shown in picture 0?" and first[0]["model_id"] == "tiny"
    assert first[0]["metadata"] == {} and len(first[0]["answer_id"]) == 32
    assert lines(path) == first
    with open(path, "a") as f:  # what a kill in the middle of a write leaves
        f.write('{"question_id": "2", "prompt": "What is sh')
    second = generate_answer_file(model, processor, rows, path, model_id="tiny", batch_size=3, max_new_tokens=4)
    assert second[:2] == first  # kept as they were (same answer_id): not generated again
    assert [r["question_id"] for r in lines(path)] == ["0", "1", "2", "3"]  # the torn line is gone
    # the same rows answered in one go give the same texts (greedy, batch-independent)
    fresh = generate_answer_file(model, processor, rows, tmp_path / "fresh.jsonl", model_id="tiny", batch_size=4,
                                 max_new_tokens=4)
    assert [r["text"] for r in fresh] == [r["text"] for r in second]
    with pytest.raises(UserError, match="already holds answers of model_id tiny, not other"):
        generate_answer_file(model, processor, rows, path, model_id="other")


def test_answer_file_rows_can_be_a_dataset_and_use_id_without_question_id(tiny, tmp_path):
    import datasets

    from hf_llava.data.schema import features

    model, processor = tiny
    rows = [{k: v for k, v in bench_row(k).items() if k != "question_id"} for k in range(2)]
    dataset = datasets.Dataset.from_list(rows, features=features())
    records = generate_answer_file(model, processor, dataset, tmp_path / "a.jsonl", model_id="m", max_new_tokens=3)
    assert [r["question_id"] for r in records] == ["row0", "row1"]


def test_read_answer_file_takes_files_from_anywhere_and_names_bad_lines(tmp_path):
    original = tmp_path / "original.jsonl"  # the original scripts write integer ids
    original.write_text('{"question_id": 0, "prompt": "q", "text": "a", "answer_id": "x", "model_id": "llava", '
                        '"metadata": {}}\n\n{"question_id": 1, "text": "b"}\n')
    answers = read_answer_file(original)
    assert list(answers) == ["0", "1"] and answers["1"]["text"] == "b"
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"question_id": "a", "text": "x"}]))
    assert read_answer_file(array)["a"]["text"] == "x"
    bad = tmp_path / "bad.jsonl"
    for content, message in [('{"question_id": 0, "text": "a"}\n{"question_id": 1}\n', r"bad.jsonl: line 2: .*'text'"),
                             ('{"question_id": 0, "text": "a"}\nnot json\n', "bad.jsonl: line 2 is not a JSON record"),
                             ('{"question_id": 0, "text": "a"}\n{"question_id": 0, "text": "b"}\n',
                              "line 2: question_id 0 answered twice"),
                             ('{"text": "a"}\n', "line 1: an answer record needs 'question_id'")]:
        bad.write_text(content)
        with pytest.raises(UserError, match=message):
            read_answer_file(bad)
    with pytest.raises(UserError, match="no such file"):
        read_answer_file(tmp_path / "missing.jsonl")


def test_load_rows_refuses_what_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(UserError, match="not a saved dataset"):
        load_rows(str(tmp_path))
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"a": 1}])}).save_to_disk(str(tmp_path / "d"))
    assert len(load_rows(str(tmp_path / "d"))) == 1
    with pytest.raises(UserError, match="has no split 'val'"):
        load_rows(str(tmp_path / "d"), "val")


def requests(n, text="hello"):
    return {f"q{k}": [{"role": "user", "content": f"{text} {k}"}] for k in range(n)}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


def test_run_judge_caches_replies_and_retries_only_failed_calls(tmp_path, api_key):
    faults = Faults(fail_images=frozenset({"q2"}), retry_after=0.01)
    bodies = []
    with OpenAIServer(responder=lambda body: bodies.append(body) or "8 9\nwhy", faults=faults) as server:
        settings = JudgeSettings(model="judge-x", base_url=server.url, max_retries=0, progress=False)
        replies = run_judge(requests(4), settings, tmp_path)
        assert replies == {"q0": "8 9\nwhy", "q1": "8 9\nwhy", "q2": None, "q3": "8 9\nwhy"}
        assert "500" in replies.errors["q2"] and replies.response_models == ["judge-x"] and replies.sent == 4
        cached = [json.loads(line) for line in (tmp_path / "judge_cache.jsonl").read_text().splitlines()]
        assert sorted(r["status"] for r in cached) == ["failed", "ok", "ok", "ok"]
        again = run_judge(requests(4), settings, tmp_path)
        assert again == replies and again.sent == 1  # only the failed call is sent again
        counts = server.requests_by_key(status=None)
        assert sorted(n for key, n in counts.items() if not key.startswith("q2")) == [1, 1, 1]
        # another request under the same key (an edited prompt) is a new judgement, never the cached reply
        changed = run_judge(requests(1, "edited"), settings, tmp_path)
        assert changed == {"q0": "8 9\nwhy"} and changed.sent == 1
        assert len({key for key in server.requests_by_key() if key.startswith("q0|")}) == 2
        assert bodies[0]["model"] == "judge-x" and (bodies[0]["temperature"], bodies[0]["max_tokens"]) == (0.2, 1024)
        assert bodies[-1]["messages"] == requests(1, "edited")["q0"]
        with pytest.raises(ValueError, match="may not contain"):
            run_judge({"a|b": []}, settings, tmp_path)


def test_run_judge_stops_at_the_cost_cap_and_names_the_missing_key(tmp_path, api_key):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"judge-x": {"input": 1000.0, "output": 1000.0}}))
    with OpenAIServer(responder=lambda body: "8 9") as server:
        settings = JudgeSettings(model="judge-x", base_url=server.url, concurrency=1, max_tokens=10,
                                 max_cost=0.02, price_table=str(prices), progress=False)
        replies = run_judge(requests(6), settings, tmp_path / "out")
        answered = [k for k, v in replies.items() if v is not None]
        assert replies.stopped == "cost cap" and 0 < len(answered) < 6
        assert replies.cost_usd <= 0.02 and len(server.requests_by_key()) == len(answered)
        assert all(replies.errors[k] == "not sent (cost cap)" for k in replies if replies[k] is None)


def test_run_judge_user_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer(responder=lambda body: "8 9") as server:
        settings = JudgeSettings(model="judge-x", base_url=server.url, progress=False)
        with pytest.raises(UserError, match="OPENAI_API_KEY"):
            run_judge(requests(1), settings, tmp_path)
        monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
        with pytest.raises(UserError, match="judge judge-x: .*401.*check --judge-base-url"):
            run_judge(requests(1), settings, tmp_path)
    with pytest.raises(UserError, match="--judge-max-cost: .*price for model 'unpriced'"):
        run_judge(requests(1), JudgeSettings(model="unpriced", max_cost=1.0), tmp_path)


def test_shapes_results_json_has_benchmark_and_hub_results(tmp_path):
    from huggingface_hub import EvalResult

    from hf_llava.eval.shapes import save_results

    entry = {"correct": 3, "total": 4, "accuracy": 0.75}
    result = {"num_questions": 4, "accuracy": {"color": entry, "overall": entry}, "blank_accuracy": None,
              "chance": {"color": {**entry, "answer": "red"}, "overall": entry}, "by_num_objects": {}, "records": []}
    save_results(result, tmp_path, model="m", settings={"batch_size": 2})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (saved["benchmark"], saved["model"], saved["settings"]) == ("shapes-vqa", "m", {"batch_size": 2})
    assert saved["accuracy"] == result["accuracy"]  # the numbers themselves are unchanged
    assert [(h["metric_name"], h["metric_value"]) for h in saved["hub_results"]] == [
        ("accuracy (color)", 75.0), ("accuracy (overall)", 75.0)]
    for hub in saved["hub_results"]:
        assert EvalResult(**hub).task_type == "visual-question-answering"


def test_run_judge_through_the_batch_api_caches_like_live_calls(tmp_path, api_key):
    with OpenAIServer(responder=lambda body: "8 9", batch_delay=0.1) as server:
        settings = JudgeSettings(model="judge-x", base_url=server.url, batch_api=True, poll_interval=0.05,
                                 progress=False)
        replies = run_judge(requests(3), settings, tmp_path)
        assert replies == {f"q{k}": "8 9" for k in range(3)} and replies.sent == 3
        assert {e["endpoint"] for e in server.log} >= {"files", "batches", "batch"}  # not live chat calls
        assert run_judge(requests(3), settings, tmp_path).sent == 0
        assert sorted(server.requests_by_key().values()) == [1, 1, 1]
