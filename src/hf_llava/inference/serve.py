"""`hf-llava serve`: an OpenAI-compatible HTTP server over the generation core (FastAPI + uvicorn).

Design notes
- `/v1/chat/completions` translates OpenAI's request into `Engine.prepare` + `Engine.submit` and the engine's
  stream back into `chat.completion` / `chat.completion.chunk` objects built with the `openai` package's own types,
  so the shapes are the ones its client parses. Concurrent requests batch inside the engine, not here.
- Every refusal is an OpenAI-style error body (`{"error": {"message", "type", "param", "code"}}`) with the status
  OpenAI uses, and only fails its own request: 400 bad JSON/schema/model/image/prompt, 401 key, 413 body size,
  429 queue full (with Retry-After).
- A streamed response that loses its client is cancelled by Starlette; the generator's `finally` cancels the
  request in the engine, which drops its row at the next step.
- Images arrive only as `data:` URLs unless `--allow-remote-images`; never as server-side paths. The body size cap
  is enforced while the body is read, so a client cannot make the server buffer more than it allows.
- No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (`request: Request`), and
  fastapi is imported inside `create_app` so that `hf-llava --help` works without the serve extra.
"""

import asyncio
import json
import secrets
import time
import uuid
from pathlib import Path

from .engine import (DEFAULT_MAX_NEW_TOKENS, Engine, QueueFullError, SamplingParams, add_bind_arguments,
                     add_model_arguments)
from .messages import ImageSources, InputError

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def response(self):
        from fastapi.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class BodyTooLarge(Exception):
    pass


class LimitRequestBody:
    """ASGI middleware: 413 when the declared or the received body exceeds `max_bytes`."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = ApiError(413, f"the request body is larger than the server's limit of {self.max_bytes} bytes "
                                  "(--max-request-bytes)", code="request_too_large")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large.response()(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await too_large.response()(scope, receive, send)


def sampling_params(body) -> SamplingParams:
    stop = body.stop if isinstance(body.stop, list) else [body.stop] if body.stop else []
    if len(stop) > 4:
        raise InputError(f"stop takes at most 4 strings, got {len(stop)}")
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_NEW_TOKENS
    temperature = 1.0 if body.temperature is None else body.temperature  # OpenAI's defaults
    top_p = 1.0 if body.top_p is None else body.top_p
    return SamplingParams(max_tokens, temperature, top_p, tuple(stop), body.seed)


def create_app(engine: Engine, model_name: str, api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, allow_remote_images: bool = False):
    """The FastAPI app; run it with uvicorn (see `serve`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse
    from openai.types import CompletionUsage, Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice, ChoiceDelta
    from pydantic import BaseModel, ConfigDict, ValidationError

    class ChatCompletionRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenAI fields the core does not use (user, logprobs=False, ...)
        model: str
        messages: list[dict]
        stream: bool = False
        stream_options: dict | None = None
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        temperature: float | None = None
        top_p: float | None = None
        stop: str | list[str] | None = None
        seed: int | None = None
        n: int = 1

    sources = ImageSources(local_files=False, remote_urls=allow_remote_images)
    created = int(time.time())
    app = FastAPI(title="hf-llava", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return error.response()

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                return ApiError(401, "missing or wrong API key (Authorization: Bearer ...)",
                                code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        model = Model(id=model_name, created=created, object="model", owned_by="hf-llava")
        return {"object": "list", "data": [model.model_dump()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from e
        try:
            body = ChatCompletionRequest.model_validate(payload)
        except ValidationError as e:
            first = e.errors()[0]
            raise ApiError(400, f"invalid request: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                           param=".".join(map(str, first["loc"]))) from e
        if body.model != model_name:
            raise ApiError(400, f"unknown model {body.model!r}; this server serves {model_name!r}",
                           code="model_not_found", param="model")
        if body.n != 1:
            raise ApiError(400, f"n={body.n} is not supported; ask for one choice (n=1)", param="n")
        try:
            params = sampling_params(body)
            prompt = await asyncio.to_thread(engine.prepare, body.messages, (), sources)
            generation = engine.submit(prompt, params, loop=asyncio.get_running_loop())
        except InputError as e:
            raise ApiError(400, str(e)) from e
        except QueueFullError as e:
            raise ApiError(429, f"the server is busy: {e}", type_="rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from e

        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        usage = lambda: CompletionUsage(prompt_tokens=generation.prompt_tokens,  # noqa: E731
                                        completion_tokens=generation.completion_tokens,
                                        total_tokens=generation.prompt_tokens + generation.completion_tokens)

        if not body.stream:
            try:
                async for _ in generation.astream():
                    pass
            finally:
                generation.cancel()  # no-op when finished; frees the row if this handler is cancelled
            completion = ChatCompletion(
                id=completion_id, object="chat.completion", created=int(time.time()), model=model_name,
                choices=[Choice(index=0, finish_reason=generation.finish_reason,
                                message=ChatCompletionMessage(role="assistant", content=generation.text))],
                usage=usage())
            return completion.model_dump(exclude_none=True)

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(delta: ChoiceDelta, finish_reason=None, with_usage=False) -> str:
            choices = [] if with_usage else [ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)]
            event = ChatCompletionChunk(id=completion_id, object="chat.completion.chunk", created=int(time.time()),
                                        model=model_name, choices=choices, usage=usage() if with_usage else None)
            return f"data: {event.model_dump_json(exclude_none=True)}\n\n"

        async def events():
            try:
                yield chunk(ChoiceDelta(role="assistant", content=""))
                async for text in generation.astream():
                    yield chunk(ChoiceDelta(content=text))
                yield chunk(ChoiceDelta(), finish_reason=generation.finish_reason)
                if include_usage:
                    yield chunk(ChoiceDelta(), with_usage=True)
            except Exception as e:  # noqa: BLE001 - the status is already sent: report in-band, as OpenAI does
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
            finally:
                generation.cancel()  # the client went away (or we are done): free the batch row
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.add_middleware(LimitRequestBody, max_bytes=max_request_bytes)
    return app


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions) with request batching",
                              description="Serve a hf_llava checkpoint over an OpenAI-compatible API. "
                                          "Needs the serve extra: pip install 'hf-llava[serve]'.")
    add_model_arguments(p)
    add_bind_arguments(p, port=8000)
    p.add_argument("--model-name", help="the name clients pass as `model` (default: the checkpoint folder's name)")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per generate call")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond this get HTTP 429")
    p.add_argument("--max-images", type=int, default=8, help="images per request")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, help="request body cap (413)")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: no key)")
    p.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs (off: data URLs only)")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    engine = Engine.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                    max_batch_size=args.max_batch_size, max_queue=args.max_queue,
                                    max_images=args.max_images)
    name = args.model_name or Path(args.model.rstrip("/")).name
    app = create_app(engine, name, api_key=args.api_key, max_request_bytes=args.max_request_bytes,
                     allow_remote_images=args.allow_remote_images)
    print(f"hf-llava serve: {name!r} on http://{args.host}:{args.port}/v1 (batch {args.max_batch_size}, "
          f"device {engine.model.device}, {engine.model.dtype})", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        engine.close()
    return 0
