"""MultimodalCollator: canonical rows -> a training batch for HfLlava.

Design notes
- Each row is rendered by the processor's chat template; the loss mask comes from the template's `{% generation %}`
  spans (`assistant_masks`), never from index arithmetic, so labels are exactly the assistant answers + end token.
- Rows are processed one at a time and padded here: a bad row (truncation would cut its image tokens, or nothing is
  left to supervise) is reported by its `id`, and with `skip_bad_samples=True` dropped from the batch and counted.
- The paper's augmentation (image before or after the question in the first turn) is optional and seeded.
- With a `feature_cache` (hf_llava.training.feature_cache), rows carry `image_feature_ids` instead of `images`: the
  text is rendered exactly as with images (placeholder images through a processor copy whose image processor makes
  no pixels) and the batch gets the cached `vision_features` instead of `pixel_values`.
"""

import copy
import random

import numpy as np
import torch
from PIL import Image

from .data.errors import BadRecordError, SkipReport
from .errors import UserError

IGNORE_INDEX = -100
PLACEHOLDER_IMAGE = Image.new("RGB", (1, 1))


class _NoPixels:
    """Stands in for the image processor when features come from a cache: markers expand, no pixels are made."""

    def fetch_images(self, images):
        return images

    def __call__(self, images, **kwargs) -> dict:
        return {}


class MultimodalCollator:
    """Collate canonical rows (`id`, `images`, `messages`) into `input_ids`, `attention_mask`, `labels`, `pixel_values`.

    Args:
        processor: an `HfLlavaProcessor` with a chat template that marks assistant spans.
        max_length: truncate longer samples (an error, or a skip, if that would cut image tokens).
        random_image_placement: put the first turn's image before or after its question at random (LLaVA's
            augmentation); otherwise keep the row's order.
        skip_bad_samples: drop bad samples from the batch and count them in `skips` (a SkipReport) instead of raising.
        seed: seed of the placement RNG.
        feature_cache: `cache[ids]` -> precomputed vision features, for rows with `image_feature_ids`.
    """

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        random_image_placement: bool = False,
        skip_bad_samples: bool = False,
        seed: int = 0,
        feature_cache=None,
    ):
        if processor.chat_template is None or "generation" not in processor.chat_template:
            raise ValueError(
                "The processor's chat template has no {% generation %} markers, so assistant answers cannot be "
                "told apart; use a template from hf_llava.chat_templates"
            )
        self.processor = processor
        self.max_length = max_length
        self.random_image_placement = random_image_placement
        self.skips = SkipReport(skip_bad=skip_bad_samples)
        self.rng = random.Random(seed)
        self.pad_token_id = processor.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = processor.tokenizer.eos_token_id
        self.feature_cache = feature_cache
        if feature_cache is not None:
            self.text_processor = copy.copy(processor)
            self.text_processor.image_processor = _NoPixels()
            self.text_processor.pad_to_square = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        samples = []
        for row in rows:
            try:
                samples.append(self.encode(row))
            except BadRecordError as error:
                self.skips.bad(error)  # raises unless skip_bad_samples
        if not samples:  # with skip_bad_samples (otherwise the first bad row raised): a batch cannot be empty
            example = f", e.g. {self.skips.examples[-1]}" if self.skips.examples else ""
            raise UserError(
                f"every sample of this batch was bad (all {len(rows)}) and skipped (skip_bad_samples; "
                f"{self.skips.summary()} so far{example}). Fix that cause (e.g. raise max_length) or remove those rows "
                "from the data; a batch needs at least one good row")
        return self.pad(samples)

    def encode(self, row: dict) -> dict[str, torch.Tensor]:
        """Tokenise one row; returns 1-D input_ids/labels and (if it has images) pixel_values or vision_features."""
        row_id = str(row.get("id", "<no id>"))
        messages = self.place_images(row["messages"])
        feature_ids = row.get("image_feature_ids")
        if feature_ids is not None:
            if self.feature_cache is None:
                raise ValueError(f"row {row_id} has image_feature_ids but the collator has no feature_cache")
            processor, images = self.text_processor, [PLACEHOLDER_IMAGE] * len(feature_ids)
        else:
            images = row.get("images") or []
            for k, image in enumerate(images):
                if not isinstance(image, Image.Image):  # e.g. None: a row whose image was never stored
                    raise BadRecordError("<batch>", row_id, f"image {k} is {type(image).__name__}, not an image",
                                         "missing image")
            processor, images = self.processor, [image.convert("RGB") for image in images]
        processor_kwargs = {"images": images or None}
        if self.max_length is not None:
            processor_kwargs.update(truncation=True, max_length=self.max_length)
        try:
            # Lists and numpy, not tensors: the assistant-mask pass walks offsets in Python, and per-row tensors
            # would only be copied again when the batch is padded.
            encoded = processor.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                processor_kwargs=processor_kwargs,
            )
        except ValueError as error:  # marker/image count mismatch, truncated image tokens
            kind = "image tokens truncated" if "truncation" in str(error) else "image/marker mismatch"
            raise BadRecordError("<batch>", row_id, str(error), kind) from error
        input_ids = np.asarray(encoded["input_ids"][0], dtype=np.int64)
        supervised = np.asarray(encoded["assistant_masks"][0], dtype=bool)
        supervised &= input_ids != self.processor.image_token_id
        if not supervised.any():
            raise BadRecordError(
                "<batch>", row_id, "no assistant tokens left to train on (no answer, or all truncated away)",
                "nothing to supervise",
            )
        sample = {
            "input_ids": input_ids,
            "attention_mask": np.asarray(encoded["attention_mask"][0], dtype=np.int64),
            "labels": np.where(supervised, input_ids, IGNORE_INDEX),
        }
        if "pixel_values" in encoded:
            sample["pixel_values"] = np.asarray(encoded["pixel_values"], dtype=np.float32)
        if feature_ids:
            sample["vision_features"] = self.feature_cache[feature_ids]
        return sample

    def place_images(self, messages: list[dict]) -> list[dict]:
        """Optionally move the first user turn's images to the start or the end of that turn."""
        if not self.random_image_placement:
            return messages
        messages = [dict(m) for m in messages]
        for message in messages:
            if message["role"] != "user":
                continue
            blocks = message["content"]
            images = [b for b in blocks if b["type"] == "image"]
            texts = [b for b in blocks if b["type"] != "image"]
            if images and texts:
                message["content"] = images + texts if self.rng.random() < 0.5 else texts + images
            break
        return messages

    def pad(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sample; stack every image (or its cached features) of the batch in row order."""
        length = max(len(s["input_ids"]) for s in samples)

        def padded(key, value):
            rows = np.full((len(samples), length), value, dtype=np.int64)
            for row, sample in zip(rows, samples):
                row[: len(sample[key])] = sample[key]
            return torch.from_numpy(rows)

        batch = {
            "input_ids": padded("input_ids", self.pad_token_id),
            "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", IGNORE_INDEX),
        }
        pixel_values = [s["pixel_values"] for s in samples if "pixel_values" in s]
        if pixel_values:
            # numpy's single-threaded copy: torch.cat's intra-op threads stall for ~60 ms on a busy 2-core machine
            batch["pixel_values"] = torch.from_numpy(np.concatenate(pixel_values))
        vision_features = [s["vision_features"] for s in samples if "vision_features" in s]
        if vision_features:  # cached features may be bfloat16, which numpy cannot hold
            batch["vision_features"] = torch.cat(vision_features)
        return batch
