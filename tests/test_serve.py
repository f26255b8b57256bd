"""`hf-llava serve`: the real `openai` client against a server on 127.0.0.1 (answers, streaming, batching, errors)."""

import base64
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from inference_helpers import cli_process, data_url, free_port, png_bytes, random_image, save_tiny_checkpoint, \
    uvicorn_thread

from hf_llava.inference import Engine
from hf_llava.inference.serve import create_app

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

MODEL = "tiny-llava"
KEY = "test-key"
MAX_QUEUE = 16
MAX_REQUEST_BYTES = 1_000_000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def server(checkpoint):
    engine = Engine.from_pretrained(str(checkpoint), max_batch_size=8, max_queue=MAX_QUEUE, max_images=4)
    app = create_app(engine, MODEL, api_key=KEY, max_request_bytes=MAX_REQUEST_BYTES)
    with uvicorn_thread(app) as url:
        yield url, engine
    engine.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def user(text, *images):
    parts = [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def ask(client, messages, stream=False, max_tokens=8, **kwargs):
    """The answer text (streamed chunks concatenated when `stream`) and the last response object/chunk."""
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0,
                                              stream=stream, **kwargs)
    if not stream:
        return response.choices[0].message.content, response
    chunks = list(response)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_models_health_and_streamed_text_equals_the_whole_answer(server, client):
    url, engine = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(url + "/health").json()["status"] == "ok"
    messages = user("What is in the image?", random_image(0))
    whole, response = ask(client, messages, max_tokens=10)
    streamed, chunks = ask(client, messages, stream=True, max_tokens=10, stream_options={"include_usage": True})
    assert whole and streamed == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == response.choices[0].finish_reason == "length"
    prompt_tokens = engine.prepare(messages).num_tokens  # images count as image_seq_length tokens each
    assert response.usage.prompt_tokens == chunks[-1].usage.prompt_tokens == prompt_tokens
    assert response.usage.completion_tokens == 10 and response.usage.total_tokens == prompt_tokens + 10
    assert response.object == "chat.completion" and response.model == MODEL


def test_different_images_give_different_answers_and_stop_strings_cut_the_text(client):
    first, _ = ask(client, user("Describe it.", random_image(1)), max_tokens=12)
    second, _ = ask(client, user("Describe it.", random_image(2)), max_tokens=12)
    assert first != second
    stop = first[3:5]
    cut, response = ask(client, user("Describe it.", random_image(1)), max_tokens=12, stop=[stop])
    assert cut == first[:first.index(stop)] and response.choices[0].finish_reason == "stop"
    streamed_cut, _ = ask(client, user("Describe it.", random_image(1)), stream=True, max_tokens=12, stop=stop)
    assert streamed_cut == cut


def test_concurrent_requests_are_batched_and_answer_as_they_do_alone(server, client):
    _, engine = server
    requests = [(user(f"Question {k}: what do you see?", random_image(k)) if k % 2 else
                 [{"role": "user", "content": f"Tell me about number {k}" + " please" * k}], k % 3 == 0)
                for k in range(16)]
    alone = [ask(client, messages, max_tokens=6)[0] for messages, _ in requests]
    calls_before = engine.stats()["generate_calls"]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda r: ask(client, r[0], stream=r[1], max_tokens=6)[0], requests))
    assert together == alone and len(set(alone)) > 1
    stats = engine.stats()
    assert stats["largest_batch"] > 1 and stats["generate_calls"] - calls_before < 16


def test_bad_requests_get_their_status_and_the_server_keeps_serving(server, client, checkpoint):
    url, engine = server
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    post = lambda body: httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=60)  # noqa

    def error(body, status):
        response = post(body if isinstance(body, (bytes, str)) else json.dumps(body))
        assert response.status_code == status, response.text
        message = response.json()["error"]["message"]
        assert ask(client, user("still there?"), max_tokens=2)[0] is not None  # a good request still succeeds
        return message, response

    good = {"model": MODEL, "messages": user("hi"), "max_tokens": 2}
    assert "not valid JSON" in error(b"{not json", 400)[0]
    assert "messages" in error({"model": MODEL}, 400)[0]
    assert "unknown model 'gpt-4o'" in error({**good, "model": "gpt-4o"}, 400)[0]
    assert "n=2" in error({**good, "n": 2}, 400)[0]
    broken = "data:image/png;base64," + base64.b64encode(png_bytes(random_image(0))[:60]).decode()
    bad_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": broken}}]}]
    assert "does not decode as an image" in error({**good, "messages": bad_image}, 400)[0]
    assert "5 images in one request" in error({**good, "messages": user("x", *[random_image(k) for k in range(5)])},
                                              400)[0]
    long_text = "left right " * 400
    tokens, over = map(int, re.search(r"the prompt is (\d+) tokens.*?(\d+) over the model's context of 512",
                                      error({**good, "messages": user(long_text)}, 400)[0]).groups())
    chat = [{"role": "user", "content": [{"type": "text", "text": long_text}]}]
    assert tokens == len(engine.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                                   return_dict=True)["input_ids"][0]) and over == tokens - 511
    remote = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]
    assert "--allow-remote-images" in error({**good, "messages": remote}, 400)[0]
    assert "limit of 1000000 bytes" in error({**good, "padding": "x" * MAX_REQUEST_BYTES}, 413)[0]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()

    # a full queue: one request holding the model, MAX_QUEUE waiting behind it -> 429 with Retry-After. The running
    # call is held on an event, not by its length: a fast machine finishes any tiny-model generation before the
    # request under test arrives
    started, release = threading.Event(), threading.Event()
    real_generate = engine.model.generate

    def held_generate(*args, **kwargs):
        started.set()
        release.wait(timeout=120)
        return real_generate(*args, **kwargs)

    engine.model.generate = held_generate
    try:
        long_run = engine.generate([{"role": "user", "content": "hold the model"}], max_new_tokens=2)
        assert started.wait(timeout=120), "the engine never started the holding request"
        waiting = [engine.generate([{"role": "user", "content": "wait"}], temperature=0.5, max_new_tokens=1)
                   for _ in range(MAX_QUEUE)]
        response = post(json.dumps(good))
        for generation in [long_run, *waiting]:
            generation.cancel()
    finally:
        release.set()
        engine.model.generate = real_generate
    assert response.status_code == 429 and response.headers["retry-after"] == "1", response.text
    assert ask(client, user("after the queue drained"), max_tokens=2)[0] is not None


def test_a_client_that_disconnects_mid_stream_frees_its_row(server):
    url, engine = server
    cancelled_before = engine.stats()["finished"].get("cancelled", 0)
    body = {"model": MODEL, "messages": user("a long answer please"), "max_tokens": 450, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk: the request is running
    deadline = time.monotonic() + 30
    while engine.stats()["finished"].get("cancelled", 0) == cancelled_before:
        assert time.monotonic() < deadline, engine.stats()
        time.sleep(0.05)
    assert engine.stats()["running"] == 0


def test_serve_command_binds_loopback_and_answers(checkpoint):
    port = free_port()
    with cli_process("serve", str(checkpoint), "--port", str(port), "--model-name", "cli-model",
                     ready_url=f"http://127.0.0.1:{port}/health"):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="cli-model", messages=user("hi", random_image(3)),
                                                max_tokens=3, temperature=0)
        assert answer.usage.completion_tokens >= 1 and answer.choices[0].message.content
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["model"] == "cli-model"
