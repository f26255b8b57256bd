"""Durable JSONL cache of teacher responses: the single source of truth for what has been paid for.

Design notes
- One JSON object per line, appended with write + flush + fsync before the record counts as finished; a rerun
  after a crash or `kill -9` reads it back and skips every key with an `ok` record. Outputs (dataset, rejects,
  stats) are always rebuilt from the cache, so they can never disagree with it.
- Key = (image id, type, prompt version, model), rendered as `image_id|type|version|model` (the model comes last
  and may itself contain `|`). The same string is sent as the `X-Datagen-Key` header and as the Batch API
  `custom_id`, so servers and logs can name the record.
- `failed` records keep the error of a request that exhausted its retries; they are history, not results: a
  later run retries that key. A second `ok` for a key (it cannot happen through this package) is ignored on load.
- `append` is thread-safe (one lock around write + flush + fsync), so the async engine runs it in a worker thread
  and a slow disk never stalls the event loop.
- A torn last line (power loss mid-write) is a record whose fsync never returned: it is cut off on open. A broken
  line anywhere else is corruption and raises an error naming the file and line.
- One process at a time per output dir: `open()` takes an exclusive `flock` on `<dir>/.lock`.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Key:
    image_id: str
    type: str
    prompt_version: str
    model: str

    def __post_init__(self):
        for field in ("image_id", "type", "prompt_version"):
            if "|" in getattr(self, field):
                raise ValueError(f"{field} may not contain '|': {getattr(self, field)!r}")

    def __str__(self) -> str:
        return f"{self.image_id}|{self.type}|{self.prompt_version}|{self.model}"

    @classmethod
    def parse(cls, text: str) -> "Key":
        parts = text.split("|", 3)
        if len(parts) != 4:
            raise ValueError(f"not a datagen key: {text!r}")
        return cls(*parts)


class CacheLockedError(RuntimeError):
    pass


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ok: dict[Key, dict] = {}
        self.failed: dict[Key, dict] = {}  # last failure of keys that have no ok record
        self._file = None
        self._write_lock = threading.Lock()
        self._lock = None

    def open(self) -> "ResponseCache":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.parent / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CacheLockedError(f"another hf-llava generate-data run is using {self.path.parent}") from None
        self._load()
        self._file = open(self.path, "ab")
        return self

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
        if self._lock:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            data = data[:keep]
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = Key.parse(record["key"])
            except (ValueError, KeyError) as err:
                raise ValueError(f"{self.path}:{lineno}: corrupt cache record ({err})") from None
            self._remember(key, record)

    def _remember(self, key: Key, record: dict) -> None:
        if record["status"] == "ok":
            if key in self.ok:
                return
            self.ok[key] = record
            self.failed.pop(key, None)
        elif key not in self.ok:
            self.failed[key] = record

    def is_done(self, key: Key) -> bool:
        return key in self.ok

    def append(self, key: Key, record: dict) -> dict:
        """Durably append one record (status "ok" or "failed"); returns the stored record."""
        if record.get("status") not in ("ok", "failed"):
            raise ValueError(f"{key}: cache record needs status ok|failed, got {record.get('status')!r}")
        line = json.dumps({"key": str(key), **record}, ensure_ascii=False).encode() + b"\n"
        with self._write_lock:
            if record["status"] == "ok" and key in self.ok:
                raise RuntimeError(f"{key}: already has a finished response in {self.path}; refusing a duplicate")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            record = {"key": str(key), **record}
            self._remember(key, record)
        return record
