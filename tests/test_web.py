"""`hf-llava web`: the Gradio app driven by gradio_client, and the page in a real headless Chromium (Playwright)."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from inference_helpers import cli_process, free_port, random_image, save_tiny_checkpoint

from hf_llava.inference import Engine
from hf_llava.inference.web import build_app, conversation, shapes_examples

gr = pytest.importorskip("gradio", reason="the serve extra (gradio) is not installed")
from gradio_client import Client, handle_file  # noqa: E402

QUESTION = "What is in the image?"
MAX_NEW_TOKENS = 8
CHROMIUM = os.environ.get("HF_LLAVA_CHROMIUM", "/usr/bin/chromium")
# flags for a root, offline machine: no sandbox, no background connections to Google's hosts
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def engine(checkpoint):
    engine = Engine.from_pretrained(str(checkpoint), max_batch_size=4)
    yield engine
    engine.close()


def greedy(engine, image, question=QUESTION):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return engine.generate(messages, [image], max_new_tokens=MAX_NEW_TOKENS).result()


def test_conversation_starts_at_the_last_image_and_keeps_the_turns_after_it():
    history = [{"role": "user", "content": [{"path": "a.png"}, "first?"]}, {"role": "assistant", "content": "A"},
               {"role": "user", "content": [{"path": "b.png"}, "second?"]}, {"role": "assistant", "content": "B"}]
    messages, images = conversation(history, {"text": "third?", "files": []})
    assert images == ["b.png"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["type"] == "image" and messages[2]["content"][0]["text"] == "third?"
    messages, images = conversation(history, {"text": "new", "files": ["c.png"]})
    assert images == ["c.png"] and len(messages) == 1


@pytest.fixture(scope="module")
def web_url(engine, tmp_path_factory):
    """The app as `hf-llava web` builds it (shapes examples included), launched in this process on loopback."""
    app = build_app(engine, shapes_examples(None, tmp_path_factory.mktemp("examples")), temperature=0.0,
                    max_new_tokens=MAX_NEW_TOKENS).queue()
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    yield url
    app.close()


def test_gradio_client_gets_the_streamed_greedy_answer_and_concurrent_users_are_batched(engine, web_url, tmp_path):
    images = [tmp_path / f"scene{k}.png" for k in range(4)]
    for k, path in enumerate(images):
        random_image(10 + k).save(path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")

    def ask(path):
        job = Client(web_url, verbose=False).submit({"text": QUESTION, "files": [handle_file(str(path))]}, 0.0, 1.0,
                                                    MAX_NEW_TOKENS, api_name="/chat")
        return job.result(), job.outputs()

    answer, updates = ask(images[0])
    assert answer == greedy(engine, random_image(10)) and len(updates) > 1  # streamed: the text grew
    calls_before = engine.stats()["generate_calls"]
    with ThreadPoolExecutor(4) as pool:
        answers = [a for a, _ in pool.map(ask, images)]
    assert answers == [greedy(engine, random_image(10 + k)) for k in range(4)]
    assert engine.stats()["largest_batch"] > 1 and engine.stats()["generate_calls"] - calls_before < 4 + 4
    with pytest.raises(Exception, match="does not decode as an image"):
        ask(tmp_path / "broken.png")


def test_the_page_in_headless_chromium_answers_an_uploaded_image(engine, web_url, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `make install` (apt-get install -y chromium) or set "
                    "HF_LLAVA_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    image = tmp_path / "scene.png"
    random_image(21).save(image)
    expected = greedy(engine, random_image(21))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(180_000)  # a loaded 2-core machine renders slowly
            page.goto(web_url, wait_until="domcontentloaded")  # a Gradio page never reaches "networkidle"
            textbox = page.get_by_test_id("textbox")  # the multimodal textbox's textarea
            textbox.wait_for()
            page.get_by_test_id("file-upload").set_input_files(str(image))
            textbox.fill(QUESTION)
            page.wait_for_timeout(500)  # the upload's preview settles before submitting
            textbox.press("Enter")
            page.wait_for_function("([sel, n]) => { const b = document.querySelectorAll(sel); "
                                   "return b.length && b[b.length - 1].innerText.trim().length >= n; }",
                                   arg=['[data-testid="bot"]', len(expected.strip())])
            page.wait_for_timeout(500)
            shown = page.get_by_test_id("bot").last.inner_text()
            page.screenshot(path=str(tmp_path / "web-answer.png"), full_page=True)
            if os.environ.get("HF_LLAVA_SCREENSHOT"):  # docs/: refresh the screenshot on purpose only
                shutil.copy(tmp_path / "web-answer.png", os.environ["HF_LLAVA_SCREENSHOT"])
        finally:
            browser.close()
    print(f"screenshot: {tmp_path / 'web-answer.png'}")
    assert (tmp_path / "web-answer.png").stat().st_size > 10_000
    assert " ".join(shown.split()) == " ".join(expected.split())


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a fresh process imports torch, transformers and gradio: minutes on a loaded 2-core box
def test_web_command_serves_the_chat_app(checkpoint):
    port = free_port()
    with cli_process("web", str(checkpoint), "--port", str(port), ready_url=f"http://127.0.0.1:{port}/",
                     timeout=1000):
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "/chat" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
