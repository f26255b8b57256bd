#!/usr/bin/env python
"""Data engine throughput: records/s at concurrency 32 vs 1 against the loopback OpenAI server (200 ms per
request), in one run, plus the per-record overhead of the durable cache (write + flush + fsync) and of the
parser + validator.

    python benchmarks/bench_datagen.py [--latency 0.2] [--concurrency 32] [--serial-requests 25]

Both measurements (after a one-request warm-up that pays the client's one-time import cost) drive
`engine.run_live` with the real `AsyncOpenAI` client, a real cache file and the real prompts (a full few-shot
prompt per request); only the teacher is fake, and it runs in its own process (`python
tests/servers/openai_server.py`) so that it does not share this process's GIL. Goal: >= 20x records/s at 32 vs 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hf_llava.data.coco import load_coco, symbolic_context
from hf_llava.datagen import TYPES
from hf_llava.datagen.cache import Key, ResponseCache
from hf_llava.datagen.engine import Progress, Request, Settings, make_client, ok_record, run_live
from hf_llava.datagen.pricing import CostBudget, PriceTable
from hf_llava.datagen.prompts import USES_BOXES, load_prompts
from hf_llava.datagen.validate import check

SERVERS = Path(__file__).resolve().parents[1] / "tests" / "servers"  # test helpers: not part of the package
sys.path.insert(0, str(SERVERS.parent))
from servers.coco_files import write_coco  # noqa: E402
from servers.openai_server import fake_output  # noqa: E402

MODEL = "gpt-4o-mini"


def make_requests(workdir: Path, n: int, tag: str) -> list[Request]:
    prompts = load_prompts()
    captions, instances = write_coco(workdir / f"coco-{tag}", (n + len(TYPES) - 1) // len(TYPES))
    requests = [Request(Key(f"{tag}{im.image_id}", kind, prompts.version, MODEL),
                        prompts.types[kind].messages(symbolic_context(im, USES_BOXES[kind])))
                for im in load_coco(captions, instances) for kind in TYPES]
    return requests[:n]


def records_per_second(base_url: str, workdir: Path, n: int, concurrency: int, tag: str) -> float:
    settings = Settings(model=MODEL, concurrency=concurrency, timeout=30, max_retries=2)
    requests = make_requests(workdir, n, tag)
    with ResponseCache(workdir / tag / "cache.jsonl") as cache:
        budget = CostBudget(PriceTable(), MODEL, None, settings.max_tokens)
        progress = Progress(n, budget, lambda key, record: None, desc=f"concurrency {concurrency}", disable=True)
        started = time.perf_counter()
        asyncio.run(run_live(requests, client=make_client(base_url, settings), cache=cache, budget=budget,
                             settings=settings, progress=progress))
        elapsed = time.perf_counter() - started
        assert len(cache.ok) == n, f"expected {n} finished records, got {len(cache.ok)}"
    return n / elapsed


def overhead_us(workdir: Path, repeat: int, n: int = 2000) -> tuple[float, float]:
    """Mean microseconds per record: durable cache append; parse + validate (mix of the three types)."""
    context = "A man rides a bicycle.\nA cyclist on a street.\nperson: [0.412, 0.281, 0.563, 0.874]"
    outputs = {kind: fake_output(kind, context) for kind in TYPES}
    settings = Settings(model=MODEL)
    with ResponseCache(workdir / f"overhead-{repeat}" / "cache.jsonl") as cache:
        started = time.perf_counter()
        for i in range(n):
            kind = TYPES[i % 3]
            cache.append(Key(str(i), kind, "v1", MODEL), ok_record(
                content=outputs[kind], finish_reason="stop", usage={"prompt_tokens": 900, "completion_tokens": 200},
                cost=0.0002, response_id=f"chatcmpl-{i}", response_model=MODEL, settings=settings, via="live"))
        cache_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for i in range(n):
        kind = TYPES[i % 3]
        turns, reason = check(kind, outputs[kind], "stop", instruction="Describe the image in detail.")
        assert reason is None, reason
    parse_us = (time.perf_counter() - started) / n * 1e6
    return cache_us, parse_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serial-requests", type=int, default=25, help="requests at concurrency 1")
    parser.add_argument("--parallel-requests", type=int, default=None,
                        help="requests at high concurrency (default: 10 x concurrency)")
    args = parser.parse_args()
    n_parallel = args.parallel_requests or 10 * args.concurrency
    os.environ.setdefault("OPENAI_API_KEY", "sk-loopback")
    server = subprocess.Popen([sys.executable, str(SERVERS / "openai_server.py"), "--port", "0",
                               "--latency", str(args.latency), "--api-key", os.environ["OPENAI_API_KEY"]],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = re.search(r"http://\S+/v1", server.stdout.readline()).group(0)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            records_per_second(base_url, workdir, 1, 1, "warmup")  # the client's lazy imports (~1 s, once)
            serial = records_per_second(base_url, workdir, args.serial_requests, 1, "serial")
            parallel = records_per_second(base_url, workdir, n_parallel, args.concurrency, "parallel")
            runs = [overhead_us(workdir, repeat) for repeat in range(3)]
    finally:
        server.terminate()
        server.wait()
    cache_us = statistics.median(r[0] for r in runs)
    parse_us = statistics.median(r[1] for r in runs)
    per_request_us = args.latency * 1e6
    print(f"loopback server latency {args.latency * 1000:.0f} ms, python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"concurrency  1: {serial:7.2f} records/s ({args.serial_requests} requests)")
    print(f"concurrency {args.concurrency:2d}: {parallel:7.2f} records/s ({n_parallel} requests)")
    print(f"speed-up: {parallel / serial:.1f}x (goal >= 20x; ideal {args.concurrency}x)")
    print(f"cache append (write+flush+fsync): {cache_us:8.1f} us/record = {cache_us / per_request_us:.2%} of a request")
    print(f"parse + validate:                 {parse_us:8.1f} us/record = {parse_us / per_request_us:.2%} of a request")


if __name__ == "__main__":
    main()
