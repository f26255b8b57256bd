"""Read image files for rows: bytes are embedded (the dataset is self-contained after `save_to_disk`/push) and
each file is decoded once so that missing, unreadable and truncated images are caught at build time, naming the
record, instead of crashing a training run hours later."""

from __future__ import annotations

import io
import os

from PIL import Image, UnidentifiedImageError

from .errors import BadRecordError


def read_image(image_root: str | os.PathLike | None, rel_path: str, source: str, record: str) -> dict:
    """Return `{"path": rel_path, "bytes": ...}` (the `datasets.Image` storage) for root/rel_path, verified."""
    if not isinstance(rel_path, str) or not rel_path:
        raise BadRecordError(source, record, f"image path must be a non-empty string, got {rel_path!r}",
                             "bad image path")
    full = os.path.join(image_root, rel_path) if image_root is not None else rel_path
    try:
        with open(full, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadRecordError(source, record, f"image file not found: {full}", "missing image") from None
    except OSError as e:
        raise BadRecordError(source, record, f"cannot read image file {full}: {e}", "unreadable image") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            # JPEG draft mode decodes at 1/8 scale: the whole stream is still read (truncation is caught), faster
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except UnidentifiedImageError:
        raise BadRecordError(source, record, f"not a readable image file: {full}", "corrupt image") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadRecordError(source, record, f"unreadable or corrupt image {full}: {e}", "corrupt image") from None
    return {"path": rel_path, "bytes": data}


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a row's image: a PIL image (datasets' decoded Image feature) or {"bytes": ...}."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
