"""Requests in, canonical conversations out: message schemas and image sources.

Design notes
- Every front end hands the core messages in one of two shapes: the canonical schema (content blocks
  `{"type": "image"}` / `{"type": "text", "text": ...}`, images passed separately, in order) or OpenAI's (string
  content, or parts with `image_url`). Both become canonical messages plus a list of decoded RGB images, so the chat
  template and the processor see one shape only.
- An image is decoded when the request arrives, not inside the batch: a bad image fails its own request with a
  message that names it, never the batch it would have joined.
- What a source may be is the caller's choice: `hf-llava chat` reads local files, `hf-llava serve` takes data URLs
  only (a client must not make the server read its disk) and remote `http(s)` URLs only when the operator allows it.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from PIL import Image

from ..data.schema import image_block, text_block

ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
REMOTE_IMAGE_TIMEOUT_S = 10
REMOTE_IMAGE_MAX_BYTES = 20 * 1024 * 1024


class InputError(ValueError):
    """A request the core cannot run; the message says what is wrong (serve answers it as HTTP 400)."""


@dataclass(frozen=True)
class ImageSources:
    """Which image sources a front end accepts besides PIL images and data URLs."""

    local_files: bool = False
    remote_urls: bool = False


def decode_image(data: bytes, name: str) -> Image.Image:
    """An RGB image from encoded bytes; InputError naming `name` when they are not an image PIL can read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")  # convert() loads every pixel, so a truncated file fails here, not later
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{name} does not decode as an image: {e}") from e


def load_image(source, name: str = "image", sources: ImageSources = ImageSources()) -> Image.Image:
    """A PIL image, `data:image/...;base64,` URL, local path (if allowed) or http(s) URL (if allowed) -> RGB image."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, bytes):
        return decode_image(source, name)
    if not isinstance(source, str) or not source:
        raise InputError(f"{name}: expected an image, a data URL or a path, got {type(source).__name__}")
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if not header.endswith(";base64") or not payload:
            raise InputError(f"{name}: a data URL must look like data:image/png;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InputError(f"{name}: the data URL is not valid base64 ({e})") from e
        return decode_image(data, name)
    if source.startswith(("http://", "https://")):
        if not sources.remote_urls:
            raise InputError(f"{name}: remote image URLs are refused (the server was started without "
                             "--allow-remote-images); send the image as a data:image/...;base64 URL")
        return decode_image(_fetch(source, name), name)
    if not sources.local_files:
        raise InputError(f"{name}: only data:image/...;base64 URLs are accepted here, got {source[:40]!r}")
    try:
        with open(source, "rb") as f:
            return decode_image(f.read(), f"{name} ({source})")
    except OSError as e:
        raise InputError(f"{name}: cannot read {source}: {e.strerror or e}") from e


def _fetch(url: str, name: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=REMOTE_IMAGE_TIMEOUT_S, follow_redirects=True) as response:
            response.raise_for_status()
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > REMOTE_IMAGE_MAX_BYTES:
                    raise InputError(f"{name}: {url} is larger than {REMOTE_IMAGE_MAX_BYTES} bytes")
            return data
    except httpx.HTTPError as e:
        raise InputError(f"{name}: cannot fetch {url}: {e}") from e


def canonical_messages(messages, images=(), sources: ImageSources = ImageSources()):
    """(canonical messages, RGB images) from canonical or OpenAI-style `messages`.

    Canonical image blocks without a source of their own take `images` in order; OpenAI `image_url` parts and
    `{"type": "image", "image": ...}` blocks carry theirs. Every image is decoded here (InputError names the
    message and part that failed)."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list")
    pending = list(images)
    out_messages, out_images = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{i}] must be an object with a role and a content")
        role = ROLE_ALIASES.get(message.get("role"))
        if role is None:
            raise InputError(f"messages[{i}] has role {message.get('role')!r}; expected one of "
                             f"{sorted(ROLE_ALIASES)}")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            raise InputError(f"messages[{i}] needs a string content or a non-empty list of parts")
        blocks = []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise InputError(f"{where}: a text part needs a string 'text'")
                blocks.append(text_block(part["text"]))
            elif kind in ("image", "image_url"):
                source = _image_source(part, kind, where)
                if source is None:
                    if not pending:
                        raise InputError(f"{where}: an <image> slot with no image ({len(images)} image(s) given "
                                         "for more <image> slots)")
                    source = pending.pop(0)
                out_images.append(load_image(source, where, sources))
                blocks.append(image_block())
            else:
                raise InputError(f"{where}: unsupported content part type {kind!r}; expected text, image or image_url")
        out_messages.append({"role": role, "content": blocks})
    if pending:
        raise InputError(f"{len(images)} images but the messages have {len(images) - len(pending)} <image> slot(s): "
                         "add an image block where each image goes")
    return out_messages, out_images


def _image_source(part: dict, kind: str, where: str):
    """The image a part carries itself (OpenAI `image_url`, transformers-style `image`/`url`/`path`), else None."""
    if kind == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not url:
            raise InputError(f"{where}: an image_url part needs image_url.url")
        return url
    for key in ("image", "url", "path"):
        if part.get(key) is not None:
            return part[key]
    return None
