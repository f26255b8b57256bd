"""Judge calls for evaluation, through the data engine: its OpenAI client, retries, durable cache and cost cap.

Design notes
- `run_judge` sends each chat request (a key -> messages dict) to any OpenAI-compatible endpoint with the data
  engine (`hf_llava.datagen.engine.send_requests`: live or Batch API): bounded concurrency, the client's retries
  with backoff on 429/5xx/timeouts, `--judge-max-cost` never passed. Every reply is appended to
  `<cache_dir>/judge_cache.jsonl` (fsync) before it counts, so a rerun after a crash or kill -9 re-pays nothing
  that finished; calls that failed after their retries are retried by the next run.
- The cache key holds the caller's key (e.g. the question id), a hash of the request (messages, temperature,
  max_tokens) and the judge model: an edited rule prompt, another answer file or another judge is a new request,
  never a stale cached reply.
- A reply is returned as its text even when empty or unusable (it was paid for; the benchmark counts it as a judge
  failure); None means no reply (the call failed after retries, or the cost cap stopped the run first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, at_least

CACHE_FILE = "judge_cache.jsonl"
KEY_TYPE = "judge"


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    base_url: str | None = None
    temperature: float = 0.2
    max_tokens: int = 1024
    concurrency: int = 8
    max_cost: float | None = None
    timeout: float = 120.0
    max_retries: int = 5
    price_table: str | None = None
    batch_api: bool = False
    poll_interval: float = 30.0
    progress: bool | None = None  # None: tqdm decides (off when not a terminal)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "JudgeSettings":
        if not args.judge_model:
            raise UserError("--judge-model is needed to judge the answers (the LLaVA paper used gpt-4-0314; name "
                            "the model your endpoint serves, and report it with the scores)")
        return cls(model=args.judge_model, base_url=args.judge_base_url, temperature=args.judge_temperature,
                   max_tokens=args.judge_max_tokens, concurrency=args.judge_concurrency,
                   max_cost=args.judge_max_cost, timeout=args.judge_timeout, max_retries=args.judge_max_retries,
                   price_table=args.judge_price_table, batch_api=args.judge_batch_api,
                   poll_interval=args.judge_poll_interval)

    def describe(self) -> dict:
        """The settings that change a judgement (results.json)."""
        return {"model": self.model, "base_url": self.base_url, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "batch_api": self.batch_api}


class JudgeReplies(dict):
    """{key: reply text or None}, plus what happened: `errors` {key: why there is no reply}, `stopped`
    ("cost cap" or None), `response_models` (the model ids the endpoint reported), `cost_usd` (all replies of these
    requests, earlier runs included; None without a price for the model) and `sent` (requests sent by this run)."""

    errors: dict[str, str]
    stopped: str | None
    response_models: list[str]
    cost_usd: float | None
    sent: int


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("judge (any OpenAI-compatible endpoint; key from OPENAI_API_KEY)")
    group.add_argument("--judge-model", help="judge model name, e.g. gpt-4o-2024-08-06 (the paper: gpt-4-0314)")
    group.add_argument("--judge-base-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                                "(default: OPENAI_BASE_URL or api.openai.com)")
    group.add_argument("--judge-temperature", type=at_least(0.0, float), default=0.2,
                       help="default: %(default)s (the original's)")
    group.add_argument("--judge-max-tokens", type=at_least(1), default=1024, help="default: %(default)s")
    group.add_argument("--judge-concurrency", type=at_least(1), default=8, help="requests in flight (default: "
                                                                                 "%(default)s)")
    group.add_argument("--judge-max-cost", type=at_least(0.0, float), metavar="USD",
                       help="stop cleanly before the judge bill recorded in --output-dir (all runs) could pass this")
    group.add_argument("--judge-price-table", metavar="FILE.json",
                       help='prices for --judge-max-cost: {"model": {"input": USD/1M, "output": USD/1M}}')
    group.add_argument("--judge-timeout", type=at_least(0.001, float), default=120.0,
                       help="seconds per attempt (default: %(default)s)")
    group.add_argument("--judge-max-retries", type=at_least(0), default=5,
                       help="client retries with backoff on 429/5xx/timeouts (default: %(default)s)")
    group.add_argument("--judge-batch-api", action="store_true",
                       help="send the judge requests through the OpenAI Batch API (half price; rerun to resume)")
    group.add_argument("--judge-poll-interval", type=at_least(0.0, float), default=30.0,
                       help="--judge-batch-api: seconds between status polls (default: %(default)s)")


def request_hash(messages: list[dict], settings: JudgeSettings) -> str:
    body = {"messages": messages, "temperature": settings.temperature, "max_tokens": settings.max_tokens}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def run_judge(requests: dict[str, list[dict]], settings: JudgeSettings, cache_dir: str | os.PathLike,
              desc: str = "judging") -> JudgeReplies:
    """Send every request that has no cached reply; returns {key: reply text, or None where there is none}."""
    from openai import OpenAIError

    from ..datagen.batch import BatchError
    from ..datagen.cache import CacheLockedError, Key, ResponseCache
    from ..datagen.engine import FatalRequestError, Progress, Request, Settings, send_requests
    from ..datagen.pricing import CostBudget, PriceTable

    for key in requests:
        if "|" in key:
            raise ValueError(f"judge request key {key!r} may not contain '|'")
    keys = {k: Key(k, KEY_TYPE, request_hash(messages, settings), settings.model) for k, messages in requests.items()}
    engine_settings = Settings(model=settings.model, max_tokens=settings.max_tokens,
                               temperature=settings.temperature, concurrency=settings.concurrency,
                               timeout=settings.timeout, max_retries=settings.max_retries)
    cache_dir = Path(cache_dir)
    cache = ResponseCache(cache_dir / CACHE_FILE)
    try:
        prices = PriceTable.load(settings.price_table)
        cache.open()
    except CacheLockedError:
        raise UserError(f"another hf-llava run is using {cache_dir}; wait for it or use another --output-dir") from None
    except (OSError, ValueError) as e:  # an unreadable price table, a corrupt cache line
        raise UserError(f"judge: {e}") from None
    try:
        todo = [Request(key, requests[k]) for k, key in keys.items() if not cache.is_done(key)]
        spent_before = sum(record.get("cost") or 0.0 for record in cache.ok.values())
        try:
            budget = CostBudget(prices, settings.model, settings.max_cost, settings.max_tokens,
                                batch=settings.batch_api, spent=spent_before)
        except ValueError as e:
            raise UserError(f"--judge-max-cost: {e}") from None
        progress = Progress(len(todo), budget, lambda key, record: None, desc=desc,
                            disable=None if settings.progress is None else not settings.progress)
        try:
            stopped = send_requests(todo, base_url=settings.base_url, settings=engine_settings, cache=cache,
                                    budget=budget, progress=progress, batch_api=settings.batch_api,
                                    work_dir=cache_dir / "judge_batches", poll_interval=settings.poll_interval)
        except (FatalRequestError, BatchError) as e:
            raise UserError(f"judge {settings.model}: {e} (check --judge-base-url, --judge-model and "
                            "OPENAI_API_KEY; finished judgements are kept)") from None
        except OpenAIError as e:  # e.g. no API key at all
            raise UserError(f"judge: {e}") from None
        finally:
            progress.close()
        replies = JudgeReplies()
        replies.errors, replies.stopped, replies.sent = {}, stopped, progress.done + progress.rejected + progress.failed
        models, cost = set(), 0.0
        for k, key in keys.items():
            record = cache.ok.get(key)
            if record is None:
                failed = cache.failed.get(key)
                replies[k] = None
                replies.errors[k] = failed["error"] if failed else f"not sent ({stopped or 'no reply'})"
                continue
            replies[k] = record.get("content") or ""
            cost += record.get("cost") or 0.0
            if record.get("response_model"):
                models.add(record["response_model"])
        replies.response_models = sorted(models)
        replies.cost_usd = round(cost, 6) if budget.known else None
    finally:
        cache.close()
    return replies
