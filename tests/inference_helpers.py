"""Shared by the chat / web / serve tests: a tiny hf_llava checkpoint on disk, images, a server in a thread."""

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from hf_llava.testing import random_image, tiny_llava

__all__ = ["random_image", "save_tiny_checkpoint", "png_bytes", "data_url", "free_port", "uvicorn_thread",
           "wait_until_up", "cli_process"]

QUESTION = "What is in the image?"


def save_tiny_checkpoint(path: Path, seed: int = 3) -> Path:
    """A random tiny hf_llava (Llama text, CLIP tower, ChatML template, 512-token context) saved as a folder."""
    model, processor = tiny_llava(seed=seed, chat_template="chatml")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 120, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


@contextmanager
def uvicorn_thread(app):
    """Serve `app` on a free loopback port in this process; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def cli_process(*args: str, ready_url: str, timeout: float = 180):
    """`hf-llava ARGS` as a child process, output merged; waits for `ready_url`, stops the child at exit."""
    process = subprocess.Popen([sys.executable, "-m", "hf_llava.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(ready_url, timeout, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
