"""The OpenAI Batch API path (`--batch-api`): half the price, results within the completion window.

Design notes
- Pending requests are written as Batch API JSONL (`custom_id` = the cache key, `url` /v1/chat/completions)
  under OUT/batches/, at most `batch_size` lines per batch (the API allows 50,000). Each batch walks through
  prepared -> uploaded (/v1/files, purpose=batch) -> created (/v1/batches) -> terminal -> collected, and every
  step is recorded in OUT/batches/state.json (written to a temp file, fsync'd, renamed) before the next one.
- Resuming: a rerun first finishes the batches state.json has not collected (never re-submitting their keys).
  A crash between "create" and recording the batch id is the one spot where a batch could be paid twice: the
  create call carries `metadata.hf_llava_batch = <local id>`, and a rerun that finds `create_attempted` without
  an id lists recent batches and adopts the one with that tag before it would create another.
- Collecting appends every result line to the response cache exactly like a live response (keys already done
  are skipped, so a crash mid-collect never duplicates rows); error lines and keys a failed/expired/cancelled
  batch never answered are recorded as failed and retried by the next run.
- `--max-cost` reserves the worst case of every request before its batch is written; batches are billed at the
  discounted price (`pricing.BATCH_DISCOUNT`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterable

from .cache import Key, ResponseCache
from .engine import Progress, Request, Settings, describe_error, failed_record, ok_record, request_body
from .pricing import CostBudget

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
METADATA_TAG = "hf_llava_batch"


class BatchError(RuntimeError):
    """A Batch API call failed after the client's retries; state.json lets a rerun resume."""


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class BatchState:
    """OUT/batches/state.json: one entry per batch, saved after every step."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / "state.json"
        self.entries: list[dict] = json.loads(self.path.read_text())["batches"] if self.path.exists() else []

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_durably(self.path, json.dumps({"batches": self.entries}, indent=1).encode())

    def open_entries(self) -> list[dict]:
        return [e for e in self.entries if not e.get("collected")]

    def input_lines(self, entry: dict) -> list[dict]:
        return [json.loads(line) for line in (self.directory / entry["input_file"]).read_text().splitlines() if line]

    def prepare(self, requests: list[Request], settings: Settings) -> dict:
        local_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        lines = [json.dumps({"custom_id": str(r.key), "method": "POST", "url": ENDPOINT,
                             "body": request_body(r, settings)}, ensure_ascii=False) for r in requests]
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_durably(self.directory / f"{local_id}.jsonl", ("\n".join(lines) + "\n").encode())
        entry = {"local_id": local_id, "input_file": f"{local_id}.jsonl", "requests": len(requests),
                 "prepared_at": time.time(), "status": "prepared"}
        self.entries.append(entry)
        self.save()
        return entry


def _prompt_chars(body: dict) -> int:
    return sum(len(m["content"]) for m in body["messages"])


async def _find_created(client, entry: dict):
    """The batch a crashed run created for `entry` (tagged in metadata), if any."""
    async for batch in client.batches.list(limit=100):
        if (batch.metadata or {}).get(METADATA_TAG) == entry["local_id"]:
            return batch
        if batch.created_at < entry["prepared_at"] - 3600:  # newest first: older ones cannot be ours
            return None
    return None


async def _submit(client, state: BatchState, entry: dict) -> None:
    if not entry.get("file_id"):
        path = state.directory / entry["input_file"]
        uploaded = await client.files.create(file=(path.name, path.read_bytes()), purpose="batch")
        entry.update(file_id=uploaded.id, status="uploaded")
        state.save()
    if not entry.get("batch_id"):
        batch = await _find_created(client, entry) if entry.get("create_attempted") else None
        if batch is None:
            entry["create_attempted"] = True
            state.save()
            batch = await client.batches.create(input_file_id=entry["file_id"], endpoint=ENDPOINT,
                                                completion_window="24h", metadata={METADATA_TAG: entry["local_id"]})
        entry.update(batch_id=batch.id, status=batch.status)
        state.save()


async def _wait(client, state: BatchState, entry: dict, poll_interval: float, progress: Progress):
    while True:
        batch = await client.batches.retrieve(entry["batch_id"])
        if batch.status != entry["status"]:
            entry["status"] = batch.status
            state.save()
        if batch.status in TERMINAL:
            return batch
        counts = batch.request_counts
        progress.bar.set_description(
            f"batch {entry['local_id']} {batch.status}" + (f" {counts.completed}/{counts.total}" if counts else ""))
        await asyncio.sleep(poll_interval)


def _collect_line(item: dict, batch_id: str, settings: Settings, budget: CostBudget, chars: dict,
                  reservations: dict) -> dict:
    response = item.get("response") or {}
    body = response.get("body") or {}
    key = item["custom_id"]
    if response.get("status_code") == 200 and not item.get("error"):
        choice = (body.get("choices") or [None])[0]
        usage = body.get("usage")
        cost = budget.settle(reservations.pop(key, 0.0), usage, chars.get(key, 0))
        return ok_record(content=(choice or {}).get("message", {}).get("content"),
                         finish_reason=(choice or {}).get("finish_reason"), usage=usage, cost=cost,
                         response_id=body.get("id"), response_model=body.get("model"), settings=settings,
                         via=f"batch:{batch_id}")
    error = item.get("error") or body.get("error") or {}
    budget.release(reservations.pop(key, 0.0))
    return failed_record(f"batch {batch_id}: HTTP {response.get('status_code')}: {error.get('message', error)}",
                         f"batch:{batch_id}")


async def _collect(client, state: BatchState, entry: dict, batch, *, cache: ResponseCache, budget: CostBudget,
                   settings: Settings, progress: Progress, chars: dict, reservations: dict) -> None:
    keys = [line["custom_id"] for line in state.input_lines(entry)]
    answered = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await client.files.content(file_id)
        for raw in content.text.splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            key = Key.parse(item["custom_id"])
            answered.add(item["custom_id"])
            if cache.is_done(key):  # collected before a crash
                continue
            progress.add(key, cache.append(key, _collect_line(item, batch.id, settings, budget, chars, reservations)))
    errors = "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) if batch.errors else ""
    for custom_id in keys:
        key = Key.parse(custom_id)
        if custom_id not in answered and not cache.is_done(key):
            budget.release(reservations.pop(custom_id, 0.0))
            message = f"batch {batch.id} ended '{batch.status}' without a result for this request"
            progress.add(key, cache.append(key, failed_record(message + (f" ({errors})" if errors else ""),
                                                              f"batch:{batch.id}")))
    entry.update(collected=True, status=batch.status, collected_at=time.time())
    state.save()


async def run_batch(requests: Iterable[Request], *, client, cache: ResponseCache, budget: CostBudget,
                    settings: Settings, progress: Progress, work_dir: Path, poll_interval: float = 30.0,
                    batch_size: int = 50_000) -> str | None:
    """Submit, poll and collect; returns "cost cap" when the budget left requests unsubmitted, else None."""
    import openai

    state = BatchState(Path(work_dir))
    chars, reservations = {}, {}
    in_flight = set()
    for entry in state.open_entries():  # submitted by an earlier run: already committed money
        for line in state.input_lines(entry):
            in_flight.add(line["custom_id"])
            chars[line["custom_id"]] = _prompt_chars(line["body"])
            reservations[line["custom_id"]] = budget.reserve(chars[line["custom_id"]], force=True)
    stopped, chunk = None, []
    for request in requests:
        if str(request.key) in in_flight or cache.is_done(request.key):
            continue
        reservation = budget.reserve(request.prompt_chars)
        if reservation is None:
            stopped = "cost cap"
            break
        chars[str(request.key)], reservations[str(request.key)] = request.prompt_chars, reservation
        chunk.append(request)
        if len(chunk) == batch_size:
            state.prepare(chunk, settings)
            chunk = []
    if chunk:
        state.prepare(chunk, settings)

    async def finish(entry: dict) -> None:
        try:
            await _submit(client, state, entry)
            batch = await _wait(client, state, entry, poll_interval, progress)
            await _collect(client, state, entry, batch, cache=cache, budget=budget, settings=settings,
                           progress=progress, chars=chars, reservations=reservations)
        except openai.APIError as err:
            raise BatchError(f"batch {entry['local_id']} ({entry.get('batch_id') or 'not created'}): "
                               f"{describe_error(err)}; rerun to resume it") from err

    async with client:
        results = await asyncio.gather(*(finish(e) for e in state.open_entries()), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return stopped
