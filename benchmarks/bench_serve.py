#!/usr/bin/env python
"""`hf-llava serve` throughput: N concurrent clients (batched by the server) vs the same N requests one at a time.

    python benchmarks/bench_serve.py [--model CHECKPOINT] [--clients 16] [--max-tokens 32] [--threads 1]

The server is the real `hf-llava serve` in its own process (so the clients do not share its GIL), on 127.0.0.1,
driven by the real `AsyncOpenAI` client with streamed requests (image as a data URL + a question, greedy). Without
`--model` it serves a tiny random hf_llava (the test sizes from `hf_llava.tiny`) built into a temporary folder.
Prints completion tokens/s for both runs and their ratio, p50/p95 latency and p50 time to first token, and checks
that every batched answer equals the one the same request got alone. Goal: >= 3x tokens/s at 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build_tiny_checkpoint(path: Path) -> Path:
    import torch
    from transformers import CLIPImageProcessorPil

    from hf_llava import HfLlavaConfig, HfLlavaForConditionalGeneration, HfLlavaProcessor
    from hf_llava.chat_templates import get_chat_template
    from hf_llava.tiny import IMAGE_TOKEN, TEXT_CONFIGS, VISION_CONFIGS, tiny_tokenizer

    tokenizer = tiny_tokenizer(chat_template=None)
    vision = dict(VISION_CONFIGS["clip_vision_model"], model_type="clip_vision_model")
    text = dict(TEXT_CONFIGS["llama"], model_type="llama", vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = HfLlavaConfig(vision_config=vision, text_config=text,
                           image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(0)
    HfLlavaForConditionalGeneration(config).save_pretrained(path)
    size = vision["image_size"]
    HfLlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": size},
                                                           crop_size={"height": size, "width": size}),
                     tokenizer=tokenizer, chat_template=get_chat_template("chatml"),
                     image_seq_length=config.image_seq_length).save_pretrained(path)
    return path


def image_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def one_request(client, k: int, max_tokens: int) -> dict:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url(k)}},
                                             {"type": "text", "text": f"Question {k}: what is in the image?"}]}]
    start = time.perf_counter()
    first, text, tokens = None, "", 0
    stream = await client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return {"text": text, "tokens": tokens, "latency": end - start, "ttft": (first or end) - start}


def summary(name: str, results: list[dict], wall: float) -> dict:
    latencies = sorted(r["latency"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    row = {"name": name, "wall": wall, "tokens": tokens, "tps": tokens / wall,
           "p50": statistics.median(latencies), "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
           "ttft": statistics.median(r["ttft"] for r in results)}
    print(f"| {name} | {len(results)} | {tokens} | {wall:.2f} | {row['tps']:.1f} | {row['p50']:.2f} | "
          f"{row['p95']:.2f} | {row['ttft']:.2f} |")
    return row


async def measure(base_url: str, clients: int, max_tokens: int) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    await one_request(client, clients, 4)  # warm-up (an image none of the measured requests uses): first-call costs on both sides
    print("| run | requests | completion tokens | wall s | tokens/s | p50 latency s | p95 latency s | p50 TTFT s |")
    print("|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    alone = [await one_request(client, k, max_tokens) for k in range(clients)]
    sequential = summary("one at a time", alone, time.perf_counter() - start)
    start = time.perf_counter()
    together = await asyncio.gather(*(one_request(client, k, max_tokens) for k in range(clients)))
    concurrent = summary(f"{clients} concurrent", together, time.perf_counter() - start)
    same = sum(a["text"] == b["text"] for a, b in zip(alone, together))
    print(f"\nthroughput ratio (tokens/s, {clients} concurrent / one at a time): "
          f"{concurrent['tps'] / sequential['tps']:.2f}x; batched answers equal to the answers alone: "
          f"{same}/{clients}")
    await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a hf_llava checkpoint (default: a tiny random one built here)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the server (OMP_NUM_THREADS): on a machine whose cores other jobs "
                             "also use, OpenMP threads that spin-wait for a busy core slow every step many times over")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        model = args.model or str(build_tiny_checkpoint(Path(tmp) / "tiny"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "hf_llava.cli", "serve", model, "--port", str(port),
                                   "--model-name", "bench", "--max-batch-size", str(args.max_batch_size)],
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                       "OMP_NUM_THREADS": str(args.threads)})
        try:
            import httpx

            while True:
                if server.poll() is not None:
                    raise SystemExit(f"hf-llava serve exited with {server.returncode}")
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.5)
            print(f"model: {args.model or 'tiny random hf_llava (hf_llava.tiny sizes)'}; {args.clients} requests, "
                  f"max_tokens {args.max_tokens}, greedy, streamed; server max batch {args.max_batch_size}, "
                  f"{args.threads} torch thread(s)\n")
            asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.clients, args.max_tokens))
        finally:
            server.terminate()
            server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
