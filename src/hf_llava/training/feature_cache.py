"""Image-feature cache (`cache_image_features`): a frozen vision tower runs once per image, not once per epoch.

Design notes
- Cached is exactly what the model would compute from pixels, `HfLlavaModel.get_vision_features` (tower, feature
  layer(s), CLS dropped; before the projector), from the pixels the collator would make (the processor's own call:
  pad to square, image processor), under the run's mixed-precision autocast, tower in eval mode, without grad.
  Training then feeds `vision_features` to the model, which skips the tower: same losses, no tower cost.
- Storage: `output_dir/image_features/features.bin`, a raw memory-mapped array (num_images, tokens, width) in the
  features' own dtype (bf16 kept as its 16 bits), written in one streaming pass, and `meta.json` with its shape, dtype
  and a key over everything the features depend on (dataset fingerprint, tower weights and config, feature
  selection, image processing, autocast). A run with the same key (a resume, more epochs) reuses the file; any
  change rebuilds it. Size: images x tokens x width x 2 (bf16) or 4 (fp32) bytes.
- The training dataset loses its `images` column (no image decoding per step) and gains `image_feature_ids`, the
  cache rows of its images in order; the collator reads them through `ImageFeatureCache` (opened lazily, so
  dataloader workers map the file instead of receiving a pickled copy).
- Only for a frozen tower (`tune_vision_tower` is refused by `LlavaArguments`). Under DDP and ZeRO-2 the main process
  builds the cache first (`main_process_first`); the other ranks find it complete and reuse it. Not under ZeRO-3,
  whose partitioned tower can only run on all ranks together (refused with a clear error).
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

logger = logging.getLogger(__name__)

CACHE_DIR = "image_features"


def _stored(dtype: torch.dtype) -> torch.dtype:
    """The dtype written to disk: numpy has no bfloat16, so bf16 features are stored as their raw 16 bits."""
    return torch.int16 if dtype == torch.bfloat16 else dtype


class ImageFeatureCache:
    """Read side: `cache[ids]` -> tensor (len(ids), tokens, width) in the features' dtype."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.dtype = getattr(torch, self.meta["dtype"])
        self._array = None

    def __len__(self) -> int:
        return self.meta["shape"][0]

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def __getitem__(self, ids) -> torch.Tensor:
        if self._array is None:
            numpy_dtype = torch.empty(0, dtype=_stored(self.dtype)).numpy().dtype
            self._array = np.memmap(self.folder / "features.bin", dtype=numpy_dtype, mode="r",
                                    shape=tuple(self.meta["shape"]))
        return torch.from_numpy(np.ascontiguousarray(self._array[list(ids)])).view(self.dtype)


def _autocast(training_args, device: torch.device):
    half = torch.bfloat16 if training_args.bf16 else torch.float16
    return torch.autocast(device.type, dtype=half, enabled=bool(training_args.bf16 or training_args.fp16))


# bookkeeping that saving a checkpoint adds or changes, not what the features depend on
_NOT_KEYED = {"auto_map", "processor_class", "_name_or_path", "transformers_version"}


def cache_key(model, processor, dataset, training_args) -> str:
    def settings(config) -> dict:
        return {k: v for k, v in config.to_dict().items() if k not in _NOT_KEYED}

    digest = hashlib.sha256()
    config = model.config
    described = {
        "dataset": dataset._fingerprint, "vision_config": settings(config.vision_config),
        "layer": config.vision_feature_layer, "select": config.vision_feature_select_strategy,
        "image_processor": settings(processor.image_processor), "pad_to_square": processor.pad_to_square,
        "autocast": [bool(training_args.bf16), bool(training_args.fp16)],
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.model.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def _write_features(model, processor, dataset, folder: Path, training_args, batch_size: int):
    """Stream every image's features into features.bin; returns (each row's cache ids, meta)."""
    device = training_args.device
    tower = model.model.vision_tower.to(device)
    was_training = tower.training
    tower.eval()
    row_ids, shape, dtype, count = [], None, None, 0
    with open(folder / "features.bin", "wb") as out:
        for batch in dataset.select_columns(["images"]).iter(batch_size=batch_size):
            rows = [row or [] for row in batch["images"]]
            images = [image.convert("RGB") for row in rows for image in row]
            for row in rows:
                row_ids.append(list(range(count, count + len(row))))
                count += len(row)
            if not images:
                continue
            pixel_values = processor(text=[processor.image_token] * len(images), images=images,
                                     return_tensors="pt")["pixel_values"]
            with _autocast(training_args, device):
                features = model.model.get_vision_features(pixel_values.to(device)).cpu()
            shape, dtype = features.shape[1:], features.dtype
            out.write(features.contiguous().view(_stored(dtype)).numpy().tobytes())
    tower.train(was_training)
    if count == 0:
        raise UserError("cache_image_features: the training data has no images")
    meta = {"shape": [count, *shape], "dtype": str(dtype).removeprefix("torch.")}
    return row_ids, meta


def cache_image_features(model, processor, dataset, training_args, batch_size: int = 32):
    """(dataset with `image_feature_ids` instead of `images`, ImageFeatureCache); builds the cache or reuses it."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise UserError("cache_image_features: under DeepSpeed ZeRO-3 the tower's weights are partitioned across the "
                         "processes, so the main process cannot run it alone to fill the cache; use "
                         "recipes/accelerate_configs/zero2.yaml (LLaVA's stage-1 setting) or "
                         "cache_image_features: false")
    folder = Path(training_args.output_dir) / CACHE_DIR
    key = cache_key(model, processor, dataset, training_args)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("key") == key:
        logger.info("image features: reusing %s (%d images)", folder, meta["shape"][0])
        row_ids = meta["row_ids"]
    else:
        folder.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # written last: a partial cache is never taken for a complete one
        logger.info("image features: computing them once for %d rows into %s", len(dataset), folder)
        row_ids, meta = _write_features(model, processor, dataset, folder, training_args, batch_size)
        meta_path.write_text(json.dumps({**meta, "key": key, "row_ids": row_ids}))
    dataset = dataset.remove_columns("images").add_column("image_feature_ids", row_ids)
    return dataset, ImageFeatureCache(folder)
