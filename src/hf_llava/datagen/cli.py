"""`hf-llava generate-data`: argparse front end of `pipeline.generate` (heavy imports happen in `run`)."""

from __future__ import annotations

import argparse

from ..errors import at_least
from . import TYPES

DESCRIPTION = """\
Generate LLaVA-style visual instruction data (conversation, detailed description, complex reasoning) from COCO
captions + boxes with any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, hf-llava serve).

The API key comes from OPENAI_API_KEY (any non-empty value for local servers that ignore it). Every response is
appended durably to OUT/cache.jsonl first: rerunning the same command after a crash, Ctrl-C or kill -9 sends only
what is not finished yet. OUT then holds dataset/ (canonical schema, save_to_disk), llava_instruct.json,
rejects.jsonl (outputs that failed validation, with reasons) and stats.json.
"""

EPILOG = """\
examples:
  hf-llava generate-data --captions captions_train2017.json --instances instances_train2017.json \\
      --output-dir out/instruct --model gpt-4o-mini --concurrency 32 --limit 1000 --max-cost 5
  hf-llava generate-data ... --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
  hf-llava generate-data ... --batch-api          # OpenAI Batch API: half price, rerun to resume polling
"""


def _types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in types if t not in TYPES]
    if bad or not types:
        raise argparse.ArgumentTypeError(f"unknown type(s) {bad}; choose from {','.join(TYPES)}")
    return types


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate-data", help="generate instruction data with a GPT teacher (data engine)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input / output")
    io.add_argument("--captions", help="COCO captions_*.json")
    io.add_argument("--instances", help="COCO instances_*.json (boxes; used by detail and complex)")
    io.add_argument("--dataset", help="instead of --captions/--instances: the folder written by "
                                      "datasets_scripts/coco_captions_boxes.py (images embedded)")
    io.add_argument("--split", default="train", help="split of --dataset (default: %(default)s)")
    io.add_argument("--output-dir", required=True, help="OUT: cache, dataset, LLaVA JSON, rejects, stats")
    io.add_argument("--types", type=_types, default=TYPES, help=f"comma-separated subset of {','.join(TYPES)}")
    io.add_argument("--limit", type=at_least(1), help="only the first N images")
    io.add_argument("--image-dir", help="COCO image folder: embed image bytes in the dataset (else file names)")
    io.add_argument("--allow-missing-boxes", action="store_true",
                    help="send detail/complex requests with captions only for images missing from --instances "
                         "(default: not sent, counted as no_boxes)")
    teacher = p.add_argument_group("teacher")
    teacher.add_argument("--model", default="gpt-4o-mini", help="teacher model name (default: %(default)s)")
    teacher.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                            "(default: OPENAI_BASE_URL or api.openai.com)")
    teacher.add_argument("--prompt-version", default="v1", help="prompt set under datagen/prompts/ (default: v1)")
    teacher.add_argument("--prompts-dir", help="root of your own versioned prompt sets (same layout)")
    teacher.add_argument("--max-tokens", type=at_least(1), default=1024)
    teacher.add_argument("--temperature", type=at_least(0.0, float), default=0.7)
    robust = p.add_argument_group("requests")
    robust.add_argument("--concurrency", type=at_least(1), default=16, help="requests in flight (default: %(default)s)")
    robust.add_argument("--timeout", type=at_least(0.001, float), default=120.0,
                        help="seconds per attempt (default: %(default)s)")
    robust.add_argument("--max-retries", type=at_least(0), default=5,
                        help="client retries with backoff on 429/5xx/timeouts (default: %(default)s)")
    robust.add_argument("--max-cost", type=at_least(0.0, float), metavar="USD",
                        help="stop cleanly before the bill recorded in OUT (all runs) could pass this")
    robust.add_argument("--price-table", metavar="FILE.json",
                        help='override/extend prices: {"model": {"input": USD/1M, "output": USD/1M}}')
    robust.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch = p.add_argument_group("batch API")
    batch.add_argument("--batch-api", action="store_true",
                       help="submit through /v1/files + /v1/batches instead of live requests (resumable)")
    batch.add_argument("--batch-size", type=at_least(1), default=50_000, help="requests per batch (API max 50000)")
    batch.add_argument("--poll-interval", type=at_least(0.0, float), default=30.0,
                       help="seconds between batch status polls")
    hub = p.add_argument_group("hub")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="push the dataset with a card (token: HF_TOKEN)")
    hub.add_argument("--private", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from .pipeline import GenerateConfig, generate, summary

    cfg = GenerateConfig(
        captions=args.captions, instances=args.instances, dataset=args.dataset, split=args.split,
        output_dir=args.output_dir, types=args.types,
        model=args.model, base_url=args.base_url, concurrency=args.concurrency, limit=args.limit,
        prompt_version=args.prompt_version, prompts_dir=args.prompts_dir, max_tokens=args.max_tokens,
        temperature=args.temperature, timeout=args.timeout, max_retries=args.max_retries, max_cost=args.max_cost,
        price_table=args.price_table, batch_api=args.batch_api, batch_size=args.batch_size,
        poll_interval=args.poll_interval, image_dir=args.image_dir,
        allow_missing_boxes=args.allow_missing_boxes, push_to_hub=args.push_to_hub,
        private=args.private, progress=False if args.no_progress else None)
    from openai import OpenAIError

    from .batch import BatchError
    from .cache import CacheLockedError
    from .engine import FatalRequestError

    try:
        stats = generate(cfg)
    except KeyboardInterrupt:
        print(f"interrupted; finished responses are in {args.output_dir}/cache.jsonl, rerun to continue",
              file=sys.stderr)
        return 130
    except (FatalRequestError, BatchError, CacheLockedError, OpenAIError, OSError, ValueError) as err:
        print(f"hf-llava generate-data: error: {err}", file=sys.stderr)
        return 2
    print(summary(stats))
    if stats.get("hub_url"):
        print(f"pushed to {stats['hub_url']}")
    return 1 if stats["failed"] else 0
