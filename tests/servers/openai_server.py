"""A loopback OpenAI-compatible server for tests and benchmarks of the data engine (stdlib only).

Design notes
- Endpoints: `POST /v1/chat/completions` (also `stream: true`, as SSE), `POST /v1/files` (multipart),
  `GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches[/{id}]`,
  `POST /v1/batches/{id}/cancel`. Binds 127.0.0.1 only.
- Outputs are type-appropriate and built from the query context (the last user message): conversation =
  `Question:`/`Answer:` blocks separated by `===`, detail = prose with counts and positions from the boxes,
  complex = one question with a step-by-step answer. The type comes from the `X-Datagen-Key` header (or the
  Batch API `custom_id`), else from the system prompt.
- Faults (`Faults`): bursts of 429 with Retry-After, a 500 rate, keys that always fail, first attempts that
  sleep past the client's timeout, malformed or leaking outputs for chosen image ids, and `kill()` which
  drops every connection like a dead process. `responder(body) -> str` replaces the generated content (a judge
  model's replies in the evaluation tests). Every request is appended to `log` (and to `log_file` as JSONL)
  with its key, attempt number and status: tests use it to prove that no finished key was requested twice.
- Run standalone: `python tests/servers/openai_server.py --port 8000 --latency 0.2`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_HEADER = "X-Datagen-Key"
_BOX_LINE = re.compile(r"^(?P<category>[^:\[\]]+):\s*\[(?P<coords>[-\d.,\s]+)\]\s*$")


@dataclass
class Faults:
    rate_limit_burst: int = 0  # this many consecutive chat requests get 429 ...
    rate_limit_at: int = 0  # ... starting at this request index (0-based)
    retry_after: float = 0.05  # seconds, sent as Retry-After with 429s and 500s
    error_rate: float = 0.0  # fraction of chat requests answered 500 (seeded, reproducible)
    fail_images: frozenset = frozenset()  # image ids whose requests always fail (500; batch: error lines)
    slow_attempts: int = 0  # the first N attempts of every key sleep `slow_latency` before answering
    slow_latency: float = 1.0
    malformed_images: frozenset = frozenset()  # image ids answered with output the parser must reject
    leak_images: frozenset = frozenset()  # image ids answered with mentions of captions/boxes/coordinates
    seed: int = 0


@dataclass
class _State:
    faults: Faults
    latency: float
    api_key: str | None
    batch_delay: float
    log_file: str | None
    responder: object = None  # callable(body) -> str that replaces fake_output (judges in eval tests)
    log: list = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    requests: int = 0
    files: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = None

    def record(self, **entry) -> None:
        entry["time"] = time.time()
        with self.lock:
            self.log.append(entry)
            if self.log_file:
                with open(self.log_file, "a") as f:
                    f.write(json.dumps(entry) + "\n")


# ---------------------------------------------------------------- fake teacher outputs

def _split_context(context: str) -> tuple[list[str], list[tuple[str, list[float]]]]:
    captions, boxes = [], []
    for line in context.splitlines():
        match = _BOX_LINE.match(line.strip())
        if match:
            boxes.append((match["category"].strip(), [float(v) for v in match["coords"].split(",")]))
        elif line.strip():
            captions.append(line.strip().rstrip("."))
    return captions or ["an everyday scene"], boxes


def _where(box: list[float]) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    horizontal = "on the left" if cx < 0.33 else "on the right" if cx > 0.66 else "in the centre"
    vertical = "near the top" if cy < 0.33 else "near the bottom" if cy > 0.66 else "at mid height"
    return f"{horizontal}, {vertical}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def fake_output(kind: str, context: str) -> str:
    """A plausible, valid teacher output of `kind` for a symbolic context."""
    captions, boxes = _split_context(context)
    counts = Counter(category for category, _ in boxes)
    if kind == "detail":
        parts = [f"The picture shows {captions[0][:1].lower() + captions[0][1:]}."]
        parts += [_sentence(c) for c in captions[1:3]]
        if counts:
            listing = ", ".join(f"{n} {c}{'s' if n > 1 else ''}" for c, n in sorted(counts.items()))
            parts.append(f"Looking more closely, I can count {listing} in the scene.")
            parts += [f"One {c} is {_where(b)} of the frame." for c, b in boxes[:3]]
        parts.append("The overall scene feels natural and ordinary, like a moment captured from daily life, "
                     "with the main subjects clearly visible and nothing that looks staged or out of place.")
        return " ".join(parts)
    if kind == "complex":
        subject = max(counts, key=counts.get) if counts else "scene"
        return ("Question:\nWhat is most likely going on here, and why?\n===\nAnswer:\n"
                f"First, look at the main elements: {captions[0][:1].lower() + captions[0][1:]}. "
                f"The {subject} is the most prominent part of the view. "
                "Putting these details together, the situation is an everyday activity rather than anything "
                "unusual, so the most likely explanation is that people are simply going about their routine "
                "in this place.")
    questions = ["What is happening in this picture?", "What else can you see?", "Describe the setting briefly."]
    blocks = []
    for question, caption in zip(questions, captions + captions):
        blocks += ["Question:", question, "===", "Answer:", _sentence(caption), "==="]
    return "\n".join(blocks[:-1])


def _kind_from(key: str | None, messages: list[dict]) -> str:
    if key and key.count("|") >= 3:
        return key.split("|")[1]
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "").lower()
    if "one question" in system:
        return "complex"
    if "detailed description" in system:
        return "detail"
    return "conversation"


def _answer(state: _State, key: str | None, body: dict) -> tuple[str, dict]:
    """Content + usage for one chat request (after fault checks that change the status)."""
    messages = body.get("messages") or []
    context = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    if isinstance(context, list):  # content parts
        context = "\n".join(p.get("text", "") for p in context if isinstance(p, dict))
    kind = _kind_from(key, messages)
    image_id = key.split("|")[0] if key else None
    text = state.responder(body) if state.responder else fake_output(kind, context)
    if image_id in state.faults.malformed_images:
        text = "Question:\nWhat is in the picture?"
    elif image_id in state.faults.leak_images:
        text = text.replace(".", " (as the captions and the bounding box [0.120, 0.340, 0.560, 0.780] say).", 1)
    prompt_chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0 for m in messages)
    usage = {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(text) // 4 + 1}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return text, usage


def _completion(body: dict, text: str, usage: dict) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": usage,
    }


def _error(status: int, message: str) -> dict:
    kind = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "code": kind, "param": None}}


# ---------------------------------------------------------------- HTTP

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hf-llava-loopback-openai/1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, *args):  # keep test output clean
        pass

    @property
    def state(self) -> _State:
        return self.server.state

    def _drop(self) -> None:
        """Behave like a killed process: no response, connection gone."""
        self.close_connection = True

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        if self.state.api_key and self.headers.get("Authorization") != f"Bearer {self.state.api_key}":
            self.state.record(endpoint="auth", key=self.headers.get(KEY_HEADER), status=401)
            self._send_json(401, _error(401, "Incorrect API key provided."))
            return False
        return True

    def do_POST(self):
        self._dispatch("POST")

    def do_GET(self):
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._body() if method == "POST" else b""
            if self.state.dead:
                return self._drop()
            if not self._authorised():
                return
            path = self.path.split("?")[0].rstrip("/")
            routes = [
                ("POST", r"/v1/chat/completions", self._chat),
                ("POST", r"/v1/files", self._upload),
                ("GET", r"/v1/files/(?P<fid>[\w-]+)", self._file),
                ("GET", r"/v1/files/(?P<fid>[\w-]+)/content", self._file_content),
                ("POST", r"/v1/batches", self._create_batch),
                ("GET", r"/v1/batches", self._list_batches),
                ("GET", r"/v1/batches/(?P<bid>[\w-]+)", self._batch),
                ("POST", r"/v1/batches/(?P<bid>[\w-]+)/cancel", self._cancel_batch),
            ]
            for route_method, pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if match and route_method == method:
                    return handler(body, **match.groupdict())
            self._send_json(404, _error(404, f"no route {method} {path}"))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) before we answered
            self.close_connection = True

    # -- chat
    def _chat(self, raw: bytes) -> None:
        state, faults = self.state, self.state.faults
        body = json.loads(raw or b"{}")
        key = self.headers.get(KEY_HEADER)
        with state.lock:
            index = state.requests
            state.requests += 1
            state.attempts[key] += 1
            attempt = state.attempts[key]
            fail_500 = faults.error_rate and state.rng.random() < faults.error_rate
        image_id = key.split("|")[0] if key else None
        entry = dict(endpoint="chat", key=key, attempt=attempt)
        if faults.rate_limit_at <= index < faults.rate_limit_at + faults.rate_limit_burst:
            state.record(**entry, status=429)
            return self._send_json(429, _error(429, "Rate limit reached (loopback burst)."),
                                   {"Retry-After": f"{faults.retry_after:g}"})
        if fail_500 or image_id in faults.fail_images:
            state.record(**entry, status=500)
            return self._send_json(500, _error(500, "The server had an error (loopback fault)."),
                                   {"Retry-After": f"{faults.retry_after:g}"})
        slow = attempt <= faults.slow_attempts
        time.sleep(faults.slow_latency if slow else state.latency)
        if state.dead:
            state.record(**entry, status="dropped")
            return self._drop()
        text, usage = _answer(state, key, body)
        state.record(**entry, status=200, slow=slow)
        if body.get("stream"):
            return self._stream(body, text, usage)
        self._send_json(200, _completion(body, text, usage))

    def _stream(self, body: dict, text: str, usage: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "loopback")}
        pieces = re.findall(r"\S+\s*", text)
        for i, piece in enumerate(pieces):
            delta = {"content": piece} if i else {"role": "assistant", "content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if (body.get("stream_options") or {}).get("include_usage"):
            final["usage"] = usage
        self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    # -- files
    def _file_object(self, fid: str) -> dict:
        f = self.state.files[fid]
        return {"id": fid, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    def _store_file(self, data: bytes, filename: str, purpose: str) -> str:
        fid = f"file-{uuid.uuid4().hex[:24]}"
        with self.state.lock:
            self.state.files[fid] = {"data": data, "filename": filename, "purpose": purpose,
                                     "created_at": int(time.time())}
        return fid

    def _upload(self, raw: bytes) -> None:
        header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields:
            return self._send_json(400, _error(400, "multipart field 'file' is required"))
        filename, data = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        fid = self._store_file(data, filename or "upload.jsonl", purpose)
        self.state.record(endpoint="files", key=None, status=200, file_id=fid)
        self._send_json(200, self._file_object(fid))

    def _file(self, raw: bytes, fid: str) -> None:
        if fid not in self.state.files:
            return self._send_json(404, _error(404, f"No such File object: {fid}"))
        self._send_json(200, self._file_object(fid))

    def _file_content(self, raw: bytes, fid: str) -> None:
        if fid not in self.state.files:
            return self._send_json(404, _error(404, f"No such File object: {fid}"))
        data = self.state.files[fid]["data"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- batches
    def _create_batch(self, raw: bytes) -> None:
        body = json.loads(raw or b"{}")
        if body.get("input_file_id") not in self.state.files:
            return self._send_json(400, _error(400, f"input file {body.get('input_file_id')!r} not found"))
        bid = f"batch_{uuid.uuid4().hex[:24]}"
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        with self.state.lock:
            self.state.batches[bid] = batch
        self.state.record(endpoint="batches", key=None, status=200, batch_id=bid)
        threading.Thread(target=_run_batch, args=(self.state, bid), daemon=True).start()
        self._send_json(200, batch)

    def _list_batches(self, raw: bytes) -> None:
        data = sorted(self.state.batches.values(), key=lambda b: b["created_at"], reverse=True)
        self._send_json(200, {"object": "list", "data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    def _batch(self, raw: bytes, bid: str) -> None:
        if bid not in self.state.batches:
            return self._send_json(404, _error(404, f"No such Batch object: {bid}"))
        self._send_json(200, self.state.batches[bid])

    def _cancel_batch(self, raw: bytes, bid: str) -> None:
        if bid not in self.state.batches:
            return self._send_json(404, _error(404, f"No such Batch object: {bid}"))
        batch = self.state.batches[bid]
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        self._send_json(200, batch)


def _run_batch(state: _State, bid: str) -> None:
    """Process a batch in the background: every input line becomes an output or error line."""
    batch = state.batches[bid]
    time.sleep(state.batch_delay / 2)
    batch.update(status="in_progress", in_progress_at=int(time.time()))
    lines = [json.loads(line) for line in state.files[batch["input_file_id"]]["data"].splitlines() if line.strip()]
    batch["request_counts"]["total"] = len(lines)
    outputs, errors = [], []
    for line in lines:
        key = line["custom_id"]
        with state.lock:
            state.attempts[key] += 1
            attempt = state.attempts[key]
        record = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": key, "error": None}
        if key.split("|")[0] in state.faults.fail_images:
            record["response"] = {"status_code": 500, "request_id": uuid.uuid4().hex, "body": _error(500, "loopback fault")}
            errors.append(record)
            state.record(endpoint="batch", key=key, attempt=attempt, status=500, batch_id=bid)
            continue
        text, usage = _answer(state, key, line["body"])
        record["response"] = {"status_code": 200, "request_id": uuid.uuid4().hex,
                              "body": _completion(line["body"], text, usage)}
        outputs.append(record)
        state.record(endpoint="batch", key=key, attempt=attempt, status=200, batch_id=bid)
    time.sleep(state.batch_delay / 2)
    if batch["status"] == "cancelled" or state.dead:
        return

    def store(records):
        fid = f"file-{uuid.uuid4().hex[:24]}"
        state.files[fid] = {"data": b"".join(json.dumps(r).encode() + b"\n" for r in records),
                            "filename": f"{bid}_output.jsonl", "purpose": "batch_output", "created_at": int(time.time())}
        return fid

    batch.update(status="completed", completed_at=int(time.time()),
                 output_file_id=store(outputs) if outputs else None, error_file_id=store(errors) if errors else None,
                 request_counts={"total": len(lines), "completed": len(outputs), "failed": len(errors)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog; the default 5 drops SYNs when 32+ clients connect at once


class OpenAIServer:
    """`with OpenAIServer(latency=0.01) as server: AsyncOpenAI(base_url=server.url, api_key=server.api_key)`."""

    def __init__(self, port: int = 0, *, latency: float = 0.0, faults: Faults | None = None,
                 api_key: str | None = "sk-loopback", batch_delay: float = 0.2, log_file: str | None = None,
                 responder=None):
        self.api_key = api_key
        self.state = _State(faults=faults or Faults(), latency=latency, api_key=api_key,
                            batch_delay=batch_delay, log_file=log_file, responder=responder)
        self.state.rng = random.Random(self.state.faults.seed)
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.state = self.state
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def log(self) -> list[dict]:
        with self.state.lock:
            return list(self.state.log)

    def requests_by_key(self, status=200, endpoints=("chat", "batch")) -> Counter:
        """How many requests per key got `status` (200: delivered answers; None: any status)."""
        return Counter(e["key"] for e in self.log
                       if e["endpoint"] in endpoints and (status is None or e["status"] == status))

    def start(self) -> "OpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Die like a killed process: stop listening and drop every in-flight request without an answer."""
        self.state.dead = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def stop(self) -> None:
        if not self.state.dead:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _ids(text: str) -> frozenset:
    return frozenset(x.strip() for x in text.split(",") if x.strip())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python tests/servers/openai_server.py",
                                     description="Loopback OpenAI-compatible server with fault injection.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    parser.add_argument("--api-key", default="sk-loopback", help="required bearer key ('' accepts any)")
    parser.add_argument("--batch-delay", type=float, default=1.0, help="seconds a batch takes to complete")
    parser.add_argument("--log-file", help="append every request as a JSON line here")
    parser.add_argument("--rate-limit-burst", type=int, default=0)
    parser.add_argument("--rate-limit-at", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=0.5)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--slow-attempts", type=int, default=0)
    parser.add_argument("--slow-latency", type=float, default=30.0)
    parser.add_argument("--fail-images", type=_ids, default=frozenset(), help="comma-separated image ids")
    parser.add_argument("--malformed-images", type=_ids, default=frozenset())
    parser.add_argument("--leak-images", type=_ids, default=frozenset())
    args = parser.parse_args(argv)
    faults = Faults(rate_limit_burst=args.rate_limit_burst, rate_limit_at=args.rate_limit_at,
                    retry_after=args.retry_after, error_rate=args.error_rate, fail_images=args.fail_images,
                    slow_attempts=args.slow_attempts, slow_latency=args.slow_latency,
                    malformed_images=args.malformed_images, leak_images=args.leak_images)
    server = OpenAIServer(args.port, latency=args.latency, faults=faults, api_key=args.api_key or None,
                          batch_delay=args.batch_delay, log_file=args.log_file)
    print(f"serving an OpenAI-compatible API on {server.url} (key: {server.api_key or 'any'})", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
