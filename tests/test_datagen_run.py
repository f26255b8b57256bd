"""`hf-llava generate-data` end to end against the loopback OpenAI server (real `openai` client, real HTTP).

The server's own request log is the witness: a key "delivered" = a 200 answer that was not slower than the
client's timeout. Every test checks that no finished key was ever delivered twice.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hf_llava.datagen import TYPES
from hf_llava.datagen.cache import Key, ResponseCache
from hf_llava.datagen.pipeline import GenerateConfig, generate
from hf_llava.datagen.pricing import PriceTable
from hf_llava.datagen.prompts import load_prompts
from servers.coco_files import write_coco
from servers.openai_server import Faults, OpenAIServer

MODEL = "gpt-4o-mini"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    directory = tmp_path_factory.mktemp("coco")
    captions, instances = write_coco(directory, 15, with_images=True)
    return {"captions": str(captions), "instances": str(instances), "image_dir": str(directory / "images")}


def config(coco, out, server, **overrides) -> GenerateConfig:
    settings = dict(coco, output_dir=str(out), base_url=server.url, model=MODEL, concurrency=8, max_retries=3,
                    timeout=5.0, progress=False, limit=6)
    return GenerateConfig(**{**settings, **overrides})


def delivered(server) -> Counter:
    return Counter(e["key"] for e in server.log if e["endpoint"] in ("chat", "batch") and e["status"] == 200
                   and not e.get("slow"))


def ok_lines(out) -> Counter:
    lines = [json.loads(line) for line in (Path(out) / "cache.jsonl").read_text().splitlines()]
    return Counter(line["key"] for line in lines if line["status"] == "ok")


def all_keys(n_images, types=TYPES):
    return {str(Key(str(i), t, "v1", MODEL)) for i in range(1, n_images + 1) for t in types}


def test_live_run_writes_all_outputs_and_a_rerun_sends_nothing(coco, tmp_path):
    import datasets

    from hf_llava.data.schema import validate_row

    with OpenAIServer(latency=0.01) as server:
        stats = generate(config(coco, tmp_path, server))
        assert (stats["rows"], stats["failed"], stats["rejected"], stats["pending"]) == (18, 0, 0, 0)
        assert delivered(server) == Counter(all_keys(6))  # every key exactly once
        first_json = (tmp_path / "llava_instruct.json").read_bytes()

        again = generate(config(coco, tmp_path, server))
        assert again["sent_this_run"] == 0 and len(server.log) == 18
        assert (tmp_path / "llava_instruct.json").read_bytes() == first_json

    rows = datasets.load_from_disk(str(tmp_path / "dataset"))["train"]
    assert len(rows) == 18 and len(set(rows["id"])) == 18
    assert Counter(rows["type"]) == {t: 6 for t in TYPES}
    assert set(rows["teacher_model"]) == {MODEL} and set(rows["prompt_version"]) == {"v1"}
    instructions = set(load_prompts("v1").detail_instructions)
    image_first = []
    for row in rows:
        validate_row(row)
        assert row["images"][0].size == (32, 24)  # embedded bytes, decoded
        first_user = row["messages"][0]["content"]
        image_first.append(first_user[0]["type"] == "image")
        if row["type"] == "detail":
            assert len(row["messages"]) == 2 and first_user[image_first[-1]]["text"] in instructions
        if row["type"] == "conversation":
            assert len(row["messages"]) >= 4
    assert 0 < sum(image_first) < len(image_first)  # the image goes before or after the question at random

    records = json.loads(first_json)
    assert [r["id"] for r in records] == rows["id"]
    for record, first in zip(records, image_first):
        value = record["conversations"][0]["value"]
        assert value.startswith("<image>\n") if first else value.endswith("\n<image>")
        assert sum(turn["value"].count("<image>") for turn in record["conversations"]) == 1
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["by_type"]["detail"] == {"requested": 6, "rows": 6, "rejected": 0, "failed": 0, "pending": 0}
    tokens = saved["tokens"]
    assert saved["cost_usd"] == pytest.approx(PriceTable().cost(MODEL, tokens["prompt"], tokens["completion"]), abs=1e-6)


def test_429_bursts_500s_and_timeouts_are_retried_to_completion(coco, tmp_path):
    faults = Faults(rate_limit_burst=4, retry_after=0.01, error_rate=0.2, slow_attempts=1, slow_latency=0.6, seed=3)
    with OpenAIServer(latency=0.01, faults=faults) as server:
        stats = generate(config(coco, tmp_path, server, types=("conversation",), timeout=0.3, max_retries=6))
    statuses = Counter(e["status"] for e in server.log)
    assert statuses[429] == 4 and statuses[500] >= 1 and any(e.get("slow") for e in server.log)
    assert (stats["rows"], stats["failed"]) == (6, 0)
    assert delivered(server) == Counter(all_keys(6, ("conversation",)))


def test_a_request_that_keeps_failing_is_recorded_and_retried_by_the_next_run(coco, tmp_path):
    with OpenAIServer(faults=Faults(fail_images=frozenset({"2"}), retry_after=0.01)) as server:
        stats = generate(config(coco, tmp_path, server, max_retries=1))
        assert server.requests_by_key(status=500)[str(Key("2", "detail", "v1", MODEL))] == 2  # 1 try + 1 retry
    assert stats["failed"] == 3 and stats["rows"] == 15
    assert {f["key"].split("|")[0] for f in stats["failures"]} == {"2"}
    assert all("InternalServerError" in f["error"] and "500" in f["error"] for f in stats["failures"])

    with OpenAIServer() as healthy:
        stats = generate(config(coco, tmp_path, healthy))
        assert set(healthy.requests_by_key(status=None)) == {f"2|{t}|v1|{MODEL}" for t in TYPES}
    assert (stats["rows"], stats["failed"]) == (18, 0)
    assert set(ok_lines(tmp_path).values()) == {1}


def test_leaking_and_malformed_outputs_are_rejected_with_reasons_and_not_resent(coco, tmp_path):
    faults = Faults(leak_images=frozenset({"3"}), malformed_images=frozenset({"4"}))
    with OpenAIServer(faults=faults) as server:
        stats = generate(config(coco, tmp_path, server))
        generate(config(coco, tmp_path, server))
        assert delivered(server) == Counter(all_keys(6))
    assert stats["rows"] == 12 and stats["rejected"] == 6
    assert stats["rejects_by_reason"] == {"mentions captions": 3, "unparseable": 3}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {(r["image_id"], r["reason"].split(":")[0]) for r in rejects} == {
        ("3", "mentions captions"), ("4", "unparseable")}
    assert all(r["content"] and r["key"].startswith(r["image_id"] + "|") for r in rejects)
    exported = json.loads((tmp_path / "llava_instruct.json").read_text())
    assert not {r["id"].split("-")[0] for r in exported} & {"3", "4"}


def test_cost_cap_stops_cleanly_below_the_cap_and_a_higher_cap_continues(coco, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"teacher": {"input": 100.0, "output": 100.0}}))  # $0.0001 per token
    out = tmp_path / "out"
    with OpenAIServer(latency=0.01) as server:
        run = dict(model="teacher", price_table=str(prices), max_tokens=200, concurrency=4)
        stats = generate(config(coco, out, server, max_cost=0.5, **run))
        assert stats["stopped"] == "cost cap" and 0 < stats["rows"] < 18 and stats["pending"] == 18 - stats["rows"]
        assert stats["cost_usd"] <= 0.5
        sent_first = len(server.log)

        stats = generate(config(coco, out, server, max_cost=100.0, **run))
        assert stats["stopped"] is None and stats["rows"] == 18
        assert stats["sent_this_run"] == 18 - sent_first
        assert set(delivered(server).values()) == {1} and len(delivered(server)) == 18


def test_server_killed_mid_run_then_rerun_finishes_without_resending(coco, tmp_path):
    server = OpenAIServer(latency=0.05, faults=Faults(retry_after=0.01)).start()

    def kill_after_some_answers():
        while sum(delivered(server).values()) < 6:
            time.sleep(0.005)
        server.kill()

    from hf_llava.datagen.engine import FatalRequestError

    killer = threading.Thread(target=kill_after_some_answers)
    killer.start()
    with pytest.raises(FatalRequestError, match="requests in a row could not connect"):  # stops, does not plod on
        generate(config(coco, tmp_path, server, concurrency=3, max_retries=1, timeout=1.0))
    killer.join()
    with ResponseCache(tmp_path / "cache.jsonl") as cache:
        finished = {str(k) for k in cache.ok}
        assert len(finished) >= 6 and any("APIConnectionError" in r["error"] for r in cache.failed.values())

    with OpenAIServer() as fresh:
        stats = generate(config(coco, tmp_path, fresh))
        assert not set(fresh.requests_by_key(status=None)) & finished
    assert (stats["rows"], stats["failed"]) == (18, 0)
    assert set(ok_lines(tmp_path).values()) == {1}


def test_kill_9_of_the_client_loses_nothing_and_pays_nothing_twice(coco, tmp_path):
    with OpenAIServer(latency=0.05) as server:
        cmd = [sys.executable, "-m", "hf_llava.cli", "generate-data", "--captions", coco["captions"],
               "--instances", coco["instances"], "--output-dir", str(tmp_path), "--base-url", server.url,
               "--model", MODEL, "--concurrency", "3", "--limit", "15", "--no-progress"]
        env = dict(os.environ, OPENAI_API_KEY="sk-loopback")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        cache_path = tmp_path / "cache.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not cache_path.exists() or cache_path.read_bytes().count(b"\n") < 8):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with ResponseCache(cache_path) as cache:
            finished = {str(k) for k in cache.ok}
        assert 8 <= len(finished) < 45, "the kill must land mid-run"

        stats = generate(config(coco, tmp_path, server, limit=15, image_dir=None))
        assert (stats["rows"], stats["failed"]) == (45, 0)
        answered = delivered(server)
        assert all(answered[key] == 1 for key in finished)  # never requested again after the kill
        assert set(answered) == all_keys(15)
    assert ok_lines(tmp_path) == Counter(all_keys(15))  # one finished record per key, none lost
    assert len(json.loads((tmp_path / "llava_instruct.json").read_text())) == 45


def test_batch_api_submits_polls_collects_and_failed_lines_go_live_next_run(coco, tmp_path):
    with OpenAIServer(faults=Faults(fail_images=frozenset({"2"})), batch_delay=0.05) as server:
        stats = generate(config(coco, tmp_path, server, batch_api=True, batch_size=7, poll_interval=0.02))
        uploads = [e for e in server.log if e["endpoint"] == "files"]
        assert len(uploads) == 3 and len(server.state.batches) == 3  # 18 requests, 7 per batch
    assert (stats["rows"], stats["failed"], stats["mode"]) == (15, 3, "batch")
    assert all(f["key"].startswith("2|") and "HTTP 500" in f["error"] for f in stats["failures"])
    tokens = stats["tokens"]
    assert stats["cost_usd"] == pytest.approx(
        PriceTable().cost(MODEL, tokens["prompt"], tokens["completion"], batch=True), abs=1e-6)
    state = json.loads((tmp_path / "batches" / "state.json").read_text())["batches"]
    assert all(entry["collected"] and entry["status"] == "completed" for entry in state)
    bodies = {}
    for entry in state:
        for line in (tmp_path / "batches" / entry["input_file"]).read_text().splitlines():
            item = json.loads(line)
            assert item["url"] == "/v1/chat/completions" and item["body"]["model"] == MODEL
            bodies[item["custom_id"]] = item["body"]["messages"][-1]["content"]
    assert set(bodies) == all_keys(6)
    for key, context in bodies.items():  # conversation sees captions only; detail and complex also boxes
        assert ("[0." in context) == (key.split("|")[1] != "conversation")

    with OpenAIServer() as healthy:
        stats = generate(config(coco, tmp_path, healthy))
        assert set(healthy.requests_by_key()) == {f"2|{t}|v1|{MODEL}" for t in TYPES}
    assert (stats["rows"], stats["failed"]) == (18, 0)


def test_batch_created_by_a_crashed_run_is_adopted_not_resubmitted(coco, tmp_path):
    from openai import OpenAI

    from hf_llava.datagen.batch import METADATA_TAG, BatchState
    from hf_llava.datagen.engine import Request, Settings
    from hf_llava.data.coco import load_coco, symbolic_context

    prompts = load_prompts("v1")
    images = load_coco(coco["captions"], coco["instances"])[:2]
    requests = [Request(Key(str(im.image_id), "complex", "v1", MODEL),
                        prompts.types["complex"].messages(symbolic_context(im))) for im in images]
    with OpenAIServer(batch_delay=0.05) as server:
        # what a run killed right after `batches.create` leaves behind: no batch id in state.json
        state = BatchState(tmp_path / "batches")
        entry = state.prepare(requests, Settings(model=MODEL, prompt_fingerprint=prompts.fingerprint))
        client = OpenAI(base_url=server.url, api_key="sk-loopback")
        uploaded = client.files.create(file=(entry["input_file"], (state.directory / entry["input_file"]).read_bytes()),
                                       purpose="batch")
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={METADATA_TAG: entry["local_id"]})
        entry.update(file_id=uploaded.id, create_attempted=True)
        state.save()

        stats = generate(config(coco, tmp_path, server, types=("complex",), limit=2, batch_api=True,
                                poll_interval=0.02))
        assert len(server.state.batches) == 1  # adopted, not created again
        assert delivered(server) == Counter(str(r.key) for r in requests)
    assert (stats["rows"], stats["failed"]) == (2, 0)


def test_edited_prompts_under_the_same_version_are_refused(coco, tmp_path):
    import shutil

    from hf_llava.datagen.prompts import PROMPTS_ROOT

    shutil.copytree(PROMPTS_ROOT / "v1", tmp_path / "prompts" / "v1")
    with OpenAIServer() as server:
        generate(config(coco, tmp_path / "out", server, prompts_dir=str(tmp_path / "prompts"), limit=1))
        (tmp_path / "prompts" / "v1" / "complex" / "system.txt").write_text("Ask a hard question.")
        with pytest.raises(ValueError, match="different prompt files for version 'v1'"):
            generate(config(coco, tmp_path / "out", server, prompts_dir=str(tmp_path / "prompts"), limit=1))


def test_cli_reports_a_bad_key_once_naming_the_record(coco, tmp_path, monkeypatch, capsys):
    from hf_llava.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with OpenAIServer() as server:
        argv = ["generate-data", "--captions", coco["captions"], "--instances", coco["instances"],
                "--output-dir", str(tmp_path), "--base-url", server.url, "--limit", "3", "--no-progress",
                "--concurrency", "1"]
        assert main(argv) == 2
        assert [(e["status"], e["key"]) for e in server.log] == [(401, f"1|conversation|v1|{MODEL}")]  # no retry
    err = capsys.readouterr().err
    assert "AuthenticationError" in err and f"1|conversation|v1|{MODEL}" in err
    assert not (tmp_path / "cache.jsonl").read_text()  # nothing recorded as failed: the run stopped instead


def test_cli_help_explains_the_run_without_importing_the_client():
    probe = ("import sys\nfrom hf_llava.cli import main\ntry:\n    main(['generate-data', '--help'])\n"
             "except SystemExit:\n    pass\nprint('imported openai:', 'openai' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    for flag in ("--base-url", "--concurrency", "--max-cost", "--batch-api", "--push-to-hub", "OPENAI_API_KEY",
                 "kill -9"):
        assert flag in result.stdout
    assert "imported openai: False" in result.stdout


def test_push_to_hub_uploads_dataset_card_and_llava_json(coco, tmp_path, hub_server, monkeypatch):
    import datasets
    from huggingface_hub import DatasetCard, hf_hub_download

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    repo_id = f"{hub_server.user}/instruct-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    with OpenAIServer() as server:
        stats = generate(config(coco, tmp_path, server, limit=2, push_to_hub=repo_id))
    assert stats["hub_url"].endswith(repo_id)
    pushed = datasets.load_dataset(repo_id, split="train", token=hub_server.token)
    assert sorted(pushed["id"]) == sorted(json.loads((tmp_path / "llava_instruct.json").read_text())[i]["id"]
                                          for i in range(6))
    assert pushed[0]["images"][0].size == (32, 24)
    card = DatasetCard.load(repo_id, token=hub_server.token)
    assert MODEL in card.text and "prompt set `v1`" in card.text and "terms" in card.text
    assert "| detail | 2 | 2 | 0 | 0 | 0 |" in card.text
    assert "llava" in card.data.tags and card.data.to_dict().get("dataset_info")
    exported = hf_hub_download(repo_id, "llava_instruct.json", repo_type="dataset", token=hub_server.token)
    assert len(json.loads(Path(exported).read_text())) == 6


def test_the_coco_builder_dataset_is_an_input_too(coco, tmp_path):
    import datasets

    from hf_llava.data.coco import coco_features, coco_rows, load_coco
    from hf_llava.data.errors import SkipReport
    from hf_llava.data.schema import features

    images = load_coco(coco["captions"], coco["instances"])[:3]
    rows = list(coco_rows(images, coco["image_dir"], SkipReport()))
    built = datasets.Dataset.from_list(rows, features=features(coco_features()))
    datasets.DatasetDict({"train": built}).save_to_disk(str(tmp_path / "coco_ds"))
    with OpenAIServer() as server:
        stats = generate(config(coco, tmp_path / "out", server, captions=None, instances=None, image_dir=None,
                                dataset=str(tmp_path / "coco_ds")))
        assert delivered(server) == Counter(all_keys(3))
    assert stats["rows"] == 9 and stats["dataset_dir"]
    out = datasets.load_from_disk(stats["dataset_dir"])["train"]
    assert all(row["images"][0].size == (32, 24) for row in out)
    with pytest.raises(ValueError, match="either --captions"):
        generate(config(coco, tmp_path / "out", server, dataset=str(tmp_path / "coco_ds")))


def test_push_without_images_is_refused_before_any_request(coco, tmp_path):
    with OpenAIServer() as server:
        with pytest.raises(ValueError, match="--image-dir"):
            generate(config(coco, tmp_path, server, image_dir=None, push_to_hub="user/x"))
        assert not server.log


def write_instances_for(coco, tmp_path, keep_ids) -> str:
    """The fixture's instances file reduced to the images `keep_ids` (and their boxes)."""
    data = json.loads(Path(coco["instances"]).read_text())
    data["images"] = [image for image in data["images"] if image["id"] in keep_ids]
    data["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] in keep_ids]
    path = tmp_path / "instances_subset.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_captions_and_instances_sharing_no_image_are_refused_before_any_request(coco, tmp_path):
    from hf_llava.errors import UserError

    with OpenAIServer() as server:
        disjoint = write_instances_for(coco, tmp_path, keep_ids={14, 15})  # the run reads images 1-6 (limit)
        with pytest.raises(UserError, match=r"share no image id \(captions has e\.g\. 1, 2, 3\)"):
            generate(config(coco, tmp_path / "out", server, instances=disjoint))
        with pytest.raises(UserError, match="need the boxes: pass --instances"):
            generate(config(coco, tmp_path / "out", server, instances=None))
        assert not server.log


def test_images_missing_from_instances_get_no_box_requests_unless_allowed(coco, tmp_path, caplog):
    partial = write_instances_for(coco, tmp_path, keep_ids={1, 2, 3, 4})  # images 5 and 6 have no boxes
    with OpenAIServer(latency=0.01) as server:
        stats = generate(config(coco, tmp_path / "out", server, instances=partial))
        assert "2 of 6 captioned images are not in --instances" in caplog.text and "e.g. ids 5, 6" in caplog.text
        sent = set(delivered(server))
        assert sent == all_keys(6) - {str(Key(i, t, "v1", MODEL)) for i in ("5", "6") for t in ("detail", "complex")}
        assert stats["no_boxes"] == 4 and stats["rows"] == 14

        allowed = generate(config(coco, tmp_path / "out", server, instances=partial, allow_missing_boxes=True))
        assert allowed["no_boxes"] == 0 and allowed["rows"] == 18 and allowed["sent_this_run"] == 4


def test_an_unreachable_endpoint_stops_the_run_early_with_a_clear_error(coco, tmp_path):
    import socket

    from hf_llava.datagen.engine import UNREACHABLE_AFTER, FatalRequestError

    with socket.socket() as sock:  # a port with nothing listening: every connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = dict(coco, output_dir=str(tmp_path), base_url=f"http://127.0.0.1:{port}/v1", model=MODEL,
                    concurrency=2, max_retries=0, timeout=5.0, progress=False, limit=6)
    with pytest.raises(FatalRequestError, match=f"{UNREACHABLE_AFTER} requests in a row could not connect to "
                                                f"http://127.0.0.1:{port}/v1/"):
        generate(GenerateConfig(**settings))
    attempted = len((tmp_path / "cache.jsonl").read_text().splitlines())
    assert UNREACHABLE_AFTER <= attempted < 18  # stopped, not plodding through all 18 requests
