"""`hf-llava chat` in a real pseudo-terminal (pexpect): streamed answers, history, commands, bad images."""

import json
import sys

import pexpect
import pytest
from inference_helpers import random_image, save_tiny_checkpoint

from hf_llava.inference import Engine

MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def read_answer(child) -> str:
    """The text between "ASSISTANT: " and the next prompt (the terminal's CRLF back to LF)."""
    child.expect_exact("ASSISTANT: ")
    child.expect_exact("\r\nUSER: ")
    return child.before.replace("\r\n", "\n")


def test_chat_streams_answers_keeps_history_and_saves_the_conversation(checkpoint, tmp_path):
    image = tmp_path / "scene.png"
    random_image(5).save(image)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    saved = tmp_path / "conversation.json"
    child = pexpect.spawn(sys.executable, ["-m", "hf_llava.cli", "chat", str(checkpoint), "--image", str(image),
                                           "--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS)],
                          encoding="utf-8", timeout=120, dimensions=(50, 400))
    try:
        child.expect_exact(f"[new conversation about {image}]")
        child.expect_exact("USER: ")
        child.sendline("What is in the image?")
        first = read_answer(child)
        child.sendline("And what colour is it?")
        second = read_answer(child)
        child.sendline(f"/save {saved}")
        child.expect_exact("[saved 4 messages to")
        child.sendline("/image /no/such/file.png")
        child.expect_exact("[error] image /no/such/file.png: cannot read /no/such/file.png")
        child.sendline(f"/image {tmp_path / 'broken.png'}")
        child.expect_exact("does not decode as an image")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    # the same conversation through the core, greedy: the terminal showed exactly these answers
    engine = Engine.from_pretrained(str(checkpoint))
    turn1 = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    expected_first = engine.generate(turn1, [random_image(5)], max_new_tokens=MAX_NEW_TOKENS).result()
    turn2 = [*turn1, {"role": "assistant", "content": [{"type": "text", "text": expected_first}]},
             {"role": "user", "content": [{"type": "text", "text": "And what colour is it?"}]}]
    expected_second = engine.generate(turn2, [random_image(5)], max_new_tokens=MAX_NEW_TOKENS).result()
    without_history = engine.generate([{"role": "user", "content": "And what colour is it?"}],
                                      max_new_tokens=MAX_NEW_TOKENS).result()
    engine.close()
    assert first == expected_first and second == expected_second and second != without_history

    row = json.loads(saved.read_text())
    assert row["images"] == [str(image)]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][0]["content"][0] == {"type": "image", "text": None} and row["messages"][3]["content"][0]["text"] == second
