"""Live requests: async, bounded concurrency, through the real `openai` client (`AsyncOpenAI`).

Design notes
- `concurrency` workers pull from one shared iterator of pending requests, so at most that many requests are in
  flight and a stop (cost cap, fatal error) takes effect before the next request is sent.
- The request body is built once (`request_body`) and shared with the Batch API path. It is sent with
  `client.post("/chat/completions", cast_to=ChatCompletion)`, the client's documented call for a ready JSON
  body: same auth, retries, timeouts and typed response as `chat.completions.create`, minus the per-call walk
  of every few-shot message through its TypedDict transform (~1.5-3 ms of CPU per request; on 2 cores that
  took concurrency 32 from ~115-127 down to ~90-104 records/s in benchmarks/bench_datagen.py).
- Retries with exponential backoff on 429/5xx/timeouts, honouring Retry-After, are the client's own
  (`max_retries`); `timeout` bounds every attempt. A request that still fails is appended to the cache as
  `failed` with its error (the next run retries it). Errors that would fail every request the same way
  (bad key, unknown model or endpoint) stop the run with an error naming the record instead, and so does a run of
  `UNREACHABLE_AFTER` requests in a row that could not connect at all (a wrong --base-url or a server that is
  down would otherwise retry every remaining request before the summary).
- A response is appended to the cache (fsync) before it counts as finished; a response that comes back empty,
  truncated or unusable is still a paid, finished response: it is cached and shows up as a reject, never resent.
- `Progress` (a tqdm bar with done/failed/rejected/cost) is shared with the Batch API path.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from tqdm.auto import tqdm

from .cache import Key, ResponseCache
from .pricing import CostBudget

KEY_HEADER = "X-Datagen-Key"
# consecutive connection failures (each after the client's own retries) that mean the endpoint is unreachable; a few,
# so that one network blip among many good answers does not stop a run
UNREACHABLE_AFTER = 5


@dataclass(frozen=True)
class Request:
    key: Key
    messages: list[dict]

    @property
    def prompt_chars(self) -> int:
        return sum(len(m["content"]) for m in self.messages)


@dataclass(frozen=True)
class Settings:
    model: str
    max_tokens: int = 1024
    temperature: float = 0.7
    concurrency: int = 16
    timeout: float = 120.0
    max_retries: int = 5
    prompt_fingerprint: str = ""


class FatalRequestError(RuntimeError):
    """An error that would repeat for every request (authentication, unknown model/endpoint)."""


class Progress:
    """Counts finished records (done = valid, rejected, failed) and shows them with the running cost."""

    def __init__(self, total: int, budget: CostBudget, judge: Callable[[Key, dict], str | None], desc: str,
                 disable: bool | None = None):
        self.budget, self.judge = budget, judge
        self.done = self.rejected = self.failed = 0
        self.bar = tqdm(total=total, desc=desc, unit="req", dynamic_ncols=True, disable=disable)

    def add(self, key: Key, record: dict) -> None:
        if record["status"] == "failed":
            self.failed += 1
        elif self.judge(key, record):
            self.rejected += 1
        else:
            self.done += 1
        cost = f"${self.budget.spent:.4f}" if self.budget.known else "n/a"
        self.bar.set_postfix(done=self.done, failed=self.failed, rejected=self.rejected, cost=cost, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def ok_record(*, content: str | None, finish_reason: str | None, usage: dict | None, cost: float,
              response_id: str | None, response_model: str | None, settings: Settings, via: str) -> dict:
    """The cache record of a finished response (shared by the live and Batch API paths)."""
    return {"status": "ok", "content": content, "finish_reason": finish_reason, "usage": usage, "cost": cost,
            "response_id": response_id, "response_model": response_model,
            "prompt_fingerprint": settings.prompt_fingerprint, "via": via, "time": time.time()}


def failed_record(error: str, via: str) -> dict:
    return {"status": "failed", "error": error, "via": via, "time": time.time()}


def describe_error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"  # openai's status errors read "Error code: 429 - {...}"


def request_body(request: Request, settings: Settings) -> dict:
    return {"model": settings.model, "messages": request.messages, "max_tokens": settings.max_tokens,
            "temperature": settings.temperature}


def make_client(base_url: str | None, settings: Settings):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url, max_retries=settings.max_retries, timeout=settings.timeout)


def send_requests(todo: list[Request], *, base_url: str | None, settings: Settings, cache: ResponseCache,
                  budget: CostBudget, progress: Progress, batch_api: bool = False, work_dir=None,
                  poll_interval: float = 30.0, batch_size: int = 50_000) -> str | None:
    """Send `todo` live or through the Batch API (in `work_dir`), recording every outcome in `cache`; returns why
    the run stopped early (the cost cap), else None. Shared by the data engine and the evaluation judge."""
    if not todo:
        return None
    client = make_client(base_url, settings)
    if batch_api:
        from .batch import run_batch

        return asyncio.run(run_batch(todo, client=client, cache=cache, budget=budget, settings=settings,
                                     progress=progress, work_dir=work_dir, poll_interval=poll_interval,
                                     batch_size=batch_size))
    return asyncio.run(run_live(todo, client=client, cache=cache, budget=budget, settings=settings,
                                progress=progress))


async def run_live(requests: Iterable[Request], *, client, cache: ResponseCache, budget: CostBudget,
                   settings: Settings, progress: Progress) -> str | None:
    """Send every request once; returns why it stopped early ("cost cap") or None when all were tried."""
    import openai
    from openai.types.chat import ChatCompletion

    fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    pending = iter(requests)
    stop: list[str] = []
    connection_failures = 0  # in a row; any answer resets it
    settled = asyncio.Condition()

    async def reserve(request: Request) -> float | None:
        """Worst-case reservation; waits for requests in flight to settle before declaring the cap reached."""
        async with settled:
            while not stop:
                reservation = budget.reserve(request.prompt_chars)
                if reservation is not None:
                    return reservation
                if not budget.open:
                    stop.append("cost cap")
                    break
                await settled.wait()
            return None

    async def send(request: Request, reservation: float) -> dict:
        """One request (with the client's retries) -> its durable cache record."""
        nonlocal connection_failures
        try:
            response = await client.post("/chat/completions", cast_to=ChatCompletion,
                                         body=request_body(request, settings),
                                         options={"headers": {KEY_HEADER: str(request.key)}})
        except fatal as err:
            budget.release(reservation)
            stop.append("fatal")
            raise FatalRequestError(f"request {request.key}: {describe_error(err)}") from err
        except (openai.APIError, ValueError) as err:  # retries exhausted, or a response we cannot read
            budget.release(reservation)
            record = await asyncio.to_thread(cache.append, request.key, failed_record(describe_error(err), "live"))
            if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                connection_failures += 1
                if connection_failures >= UNREACHABLE_AFTER and not stop:
                    stop.append("unreachable")
                    raise FatalRequestError(
                        f"{connection_failures} requests in a row could not connect to {client.base_url} (last: "
                        f"request {request.key}: {describe_error(err)}); check --base-url and that the server is "
                        "running, then rerun (finished responses are kept)") from err
            return record
        connection_failures = 0
        choice = response.choices[0] if response.choices else None
        usage = response.usage.model_dump(exclude_none=True) if response.usage else None
        cost = budget.settle(reservation, usage, request.prompt_chars)
        return await asyncio.to_thread(cache.append, request.key, ok_record(
            content=choice.message.content if choice else None,
            finish_reason=choice.finish_reason if choice else None, usage=usage, cost=cost,
            response_id=response.id, response_model=response.model, settings=settings, via="live"))

    async def worker() -> None:
        for request in pending:
            if stop or (reservation := await reserve(request)) is None:
                return
            try:
                progress.add(request.key, await send(request, reservation))
            finally:  # wake workers waiting for budget (or for the stop)
                async with settled:
                    settled.notify_all()

    async with client:
        # return_exceptions: on a fatal error the other workers finish (and cache) what they have in flight
        results = await asyncio.gather(*(worker() for _ in range(max(1, settings.concurrency))),
                                       return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return stop[0] if stop else None
