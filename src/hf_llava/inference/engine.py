"""The generation core: validated prompts in, streamed text out, concurrent requests batched.

Design notes
- One worker thread owns the model. Requests queue up; each round the worker takes the oldest one and every queued
  request that can share its `generate` call (same sampling settings, up to `max_batch_size`), so whatever arrives
  while the model is busy joins the next call. Static batching: a call runs until its last row is done; simple, and
  on a CPU or one GPU at these sizes the rounds are short.
- The batch is built by `hf_llava.eval.generate.prompt_inputs`, the same left-padded inputs evaluation uses, so a
  row continues exactly as it would alone: a greedy answer is the same in any batch (tested).
- Rows finish one by one: a `StoppingCriteria` sees each new token of every row, decodes it into that request's
  stream, and reports the row done at its end-of-sequence token, a stop string, its own `max_new_tokens`, or when
  its client went away. `generate` stops as soon as every row is done, so a cancelled request frees the call.
- Text is streamed by decoding a row's whole answer each step and sending the new suffix (as TextIteratorStreamer
  does): multi-byte characters are held until complete, and text that could be the start of a stop string is held
  until it is known not to be one, so streamed chunks always concatenate to the final answer.
- Requests are checked before they queue (images decode, image count matches the `<image>` slots, the prompt fits
  the context), so a bad request fails alone with an `InputError` that names the problem.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

from ..eval.generate import load_model, prompt_inputs, prompt_messages
from .messages import ImageSources, InputError, canonical_messages

DEFAULT_MAX_NEW_TOKENS = 512
_END = object()


def add_model_arguments(parser) -> None:
    """The checkpoint, dtype and device arguments every inference command takes."""
    parser.add_argument("model", help="hf_llava checkpoint folder or Hub id")
    parser.add_argument("--dtype", help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")


def add_bind_arguments(parser, port: int) -> None:
    """Where a server listens: loopback unless told otherwise."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=port)


class QueueFullError(RuntimeError):
    """More requests are waiting than the engine's `max_queue` allows (serve answers HTTP 429)."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not 0 <= self.temperature <= 100:
            raise InputError(f"temperature must be between 0 and 100, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InputError(f"stop must be non-empty strings, got {list(self.stop)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict:
        if self.greedy:  # clear the checkpoint's sampling defaults so they neither apply nor warn
            return dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        return dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=None)

    def batch_key(self) -> tuple:
        """Requests with equal keys can share a `generate` call (one sampling setup and seed per call)."""
        return ("greedy",) if self.greedy else ("sample", self.temperature, self.top_p, self.seed)


@dataclass
class Prompt:
    """A checked request: canonical messages (ending with a user turn), decoded images, its length in tokens."""

    messages: list
    images: list
    num_tokens: int


@dataclass(eq=False)
class Generation:
    """One request's handle: iterate it (or `async for` over `astream()`) for text deltas; `cancel()` to drop it.

    After the stream ends, `text`, `finish_reason` ("stop", "length" or "cancelled") and the token counts hold."""

    prompt: Prompt
    params: SamplingParams
    decode: object  # token ids -> text (the engine's, which serialises tokenizer use across threads)
    eos_token_ids: frozenset
    loop: asyncio.AbstractEventLoop | None = None
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: BaseException | None = None
    _token_ids: list = field(default_factory=list)
    _cancelled: bool = False

    def __post_init__(self):
        self._events = asyncio.Queue() if self.loop else queue.Queue()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    @property
    def prompt_tokens(self) -> int:
        return self.prompt.num_tokens

    def cancel(self) -> None:
        """Stop generating for this request (its row stops at the next step; a queued one never starts)."""
        self._cancelled = True

    def __iter__(self):
        if self.loop:
            raise TypeError("this Generation was submitted with an event loop: use `async for ... in astream()`")
        while (event := self._events.get()) is not _END:
            yield event
        if self.error:
            raise self.error

    async def astream(self):
        while (event := await self._events.get()) is not _END:
            yield event
        if self.error:
            raise self.error

    def result(self) -> str:
        """Wait for the whole answer (synchronous handles only)."""
        for _ in self:
            pass
        return self.text

    # --- called by the worker thread ---
    def _emit(self, event) -> None:
        if self.loop:
            self.loop.call_soon_threadsafe(self._events.put_nowait, event)
        else:
            self._events.put(event)

    def _push_token(self, token_id: int) -> None:
        if self._cancelled:
            return self._finish("cancelled")
        if token_id in self.eos_token_ids:
            return self._finish("stop")
        self._token_ids.append(token_id)
        self.completion_tokens += 1
        decoded = self.decode(self._token_ids)
        stop_at = min((i for i in (decoded.find(s) for s in self.params.stop) if i >= 0), default=-1)
        if stop_at >= 0:
            return self._finish("stop", decoded[:stop_at])
        if self.completion_tokens >= self.params.max_new_tokens:
            return self._finish("length", decoded)
        if decoded.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its next token
            return
        self._send(decoded[:len(decoded) - _held_back(decoded, self.params.stop)])

    def _send(self, text: str) -> None:
        if len(text) > len(self.text):
            self._emit(text[len(self.text):])
            self.text = text

    def _finish(self, reason: str, text: str | None = None) -> None:
        if text is None:
            text = self.decode(self._token_ids)
        self._send(text)
        self.finish_reason = reason
        self._emit(_END)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._emit(_END)


def _held_back(text: str, stops) -> int:
    """How many trailing characters of `text` could be the beginning of a stop string."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
               default=0)


class Engine:
    """Batched, streaming generation over one hf_llava model (see the module notes).

    `max_batch_size` rows per `generate` call; `max_queue` requests may wait (more raise QueueFullError);
    `max_images` images per request."""

    def __init__(self, model, processor, max_batch_size: int = 8, max_queue: int = 64, max_images: int = 8):
        if max_batch_size < 1 or max_queue < 1 or max_images < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_images >= 0")
        self.model, self.processor = model.eval(), processor
        self.max_batch_size, self.max_queue, self.max_images = max_batch_size, max_queue, max_images
        self.context_length = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        self.eos_token_ids = frozenset([eos] if isinstance(eos, int) else eos or [self.tokenizer.eos_token_id])
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(self.eos_token_ids)
        # a fast tokenizer is not safe to use from two threads at once (padding settings are mutable state)
        self._tokenizer_lock = threading.Lock()
        self._waiting: deque[Generation] = deque()
        self._running: list[Generation] = []
        self._calls, self._largest_batch, self._finished = 0, 0, Counter()
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve_forever, name="hf-llava-generate", daemon=True)
        self._worker.start()

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | None = None, device: str | None = None, **kwargs) -> "Engine":
        """Load a checkpoint folder or Hub id; by default the first GPU in bfloat16, else the CPU in float32."""
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            on_gpu = device.startswith("cuda") and torch.cuda.is_available()
            dtype = "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
        model, processor = load_model(path, dtype=dtype, device=device)
        return cls(model, processor, **kwargs)

    # --- requests ---
    def prepare(self, messages, images=(), sources: ImageSources = ImageSources()) -> Prompt:
        """Check a request and measure it: InputError for a bad image, too many images, or a prompt over the
        context."""
        messages, images = canonical_messages(messages, images, sources)
        if len(images) > self.max_images:
            raise InputError(f"{len(images)} images in one request; this server takes at most {self.max_images}")
        image_token = self.processor.image_token
        for i, message in enumerate(messages):
            if any(image_token in (block.get("text") or "") for block in message["content"]):
                raise InputError(f"messages[{i}] contains the image placeholder {image_token!r} as text; "
                                 "send each image as an image part where it belongs")
        try:
            messages = prompt_messages(messages)
        except ValueError as e:
            raise InputError(str(e)) from e
        if messages[-1]["role"] != "user":
            raise InputError(f"the last message to answer must be a user turn, not {messages[-1]['role']!r}")
        with self._tokenizer_lock:
            num_tokens = prompt_inputs(self.model, self.processor, [{"messages": messages, "images": images}]
                                       )["input_ids"].shape[1]
        if self.context_length and num_tokens >= self.context_length:
            over = num_tokens - self.context_length + 1
            raise InputError(f"the prompt is {num_tokens} tokens ({len(images)} image(s) x "
                             f"{self.processor.image_seq_length}), {over} over the model's context of "
                             f"{self.context_length} tokens (which must leave room for at least one new token)")
        return Prompt(messages, images, num_tokens)

    def submit(self, prompt: Prompt, params: SamplingParams = SamplingParams(),
               loop: asyncio.AbstractEventLoop | None = None) -> Generation:
        """Queue a checked prompt; with `loop`, the handle streams through `astream()` on that event loop."""
        if self.context_length:  # never ask for more tokens than the context has room for
            room = self.context_length - prompt.num_tokens
            if params.max_new_tokens > room:
                params = SamplingParams(room, params.temperature, params.top_p, params.stop, params.seed)
        generation = Generation(prompt, params, self._decode, self.eos_token_ids, loop)
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._drop_cancelled()
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (max_queue={self.max_queue})")
            self._waiting.append(generation)
            self._lock.notify()
        return generation

    def generate(self, messages, images=(), sources: ImageSources = ImageSources(), **params) -> Generation:
        """prepare + submit in one call; `params` are SamplingParams fields."""
        stop = params.pop("stop", ())
        return self.submit(self.prepare(messages, images, sources), SamplingParams(stop=tuple(stop), **params))

    def _decode(self, token_ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def stats(self) -> dict:
        with self._lock:
            return {"running": sum(not g.done for g in self._running), "waiting": len(self._waiting),
                    "generate_calls": self._calls, "largest_batch": self._largest_batch,
                    "finished": dict(self._finished), "max_batch_size": self.max_batch_size,
                    "max_queue": self.max_queue}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._worker.join(timeout=60)

    def _drop_cancelled(self) -> None:
        """Finish the waiting requests that were cancelled, so they hold no queue place (lock held)."""
        for cancelled in [g for g in self._waiting if g._cancelled]:
            self._waiting.remove(cancelled)
            cancelled._finish("cancelled")
            self._finished["cancelled"] += 1

    # --- the worker ---
    def _next_batch(self) -> list[Generation] | None:
        with self._lock:
            while True:
                self._drop_cancelled()
                if self._closed or self._waiting:
                    break
                self._lock.wait(timeout=1.0)  # also wakes to drop requests cancelled while waiting
            if self._closed:
                return None
            key = self._waiting[0].params.batch_key()
            batch = [g for g in self._waiting if g.params.batch_key() == key][:self.max_batch_size]
            for generation in batch:
                self._waiting.remove(generation)
            self._running = batch
            self._calls += 1
            self._largest_batch = max(self._largest_batch, len(batch))
            return batch

    def _serve_forever(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._generate(batch)
            except Exception as e:  # noqa: BLE001 - the requests get the error; the worker keeps serving
                for generation in batch:
                    if not generation.done:
                        generation._fail(e)
            finally:
                with self._lock:
                    self._finished.update(g.finish_reason or "error" for g in batch)
                    self._running = []
        with self._lock:
            for generation in self._waiting:
                generation._fail(RuntimeError("the engine was closed"))

    def _generate(self, batch: list[Generation]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class RowsDone(StoppingCriteria):
            """Feeds each row's newest token to its request; a row is done when its request is."""

            def __call__(self, input_ids, scores, **kwargs):
                for generation, token_id in zip(batch, input_ids[:, -1].tolist()):
                    if not generation.done:
                        generation._push_token(token_id)
                return torch.tensor([g.done for g in batch], device=input_ids.device)

        params = batch[0].params
        with torch.inference_mode():
            with self._tokenizer_lock:
                inputs = prompt_inputs(self.model, self.processor,
                                       [{"messages": g.prompt.messages, "images": g.prompt.images} for g in batch])
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self.model.generate(**inputs, **params.generate_kwargs(), pad_token_id=self.pad_token_id,
                                max_new_tokens=max(g.params.max_new_tokens for g in batch),
                                stopping_criteria=StoppingCriteriaList([RowsDone()]))
        for generation in batch:  # only a row cut by the call's own length limit is still open here
            if not generation.done:
                generation._finish("length")
