"""One `hf-llava generate-data` run: COCO -> requests -> (live | Batch API) -> cache -> outputs -> Hub.

Design notes
- Requests are (image, type) pairs; the conversation type sees captions only, detail and complex also boxes
  (`hf_llava.data.coco.symbolic_context`). Keys already finished in the cache are never sent again.
- Input: COCO annotation files (+ `--image-dir` for the images), or the dataset written by
  datasets_scripts/coco_captions_boxes.py (`--dataset`, its `captions`/`boxes` columns and embedded images).
- Images without captions have no context to give the teacher: they are counted in stats (`no_context`), not
  requested. No captioned image at all is an error.
- Detail and complex prompts are written around the boxes, so their requests are never sent without them: captions
  and instances files that share no image id are refused; images missing from the instances file are warned about
  (count and some ids) and their box requests counted in stats (`no_boxes`), unless `--allow-missing-boxes`.
- `--max-cost` is checked against the whole bill recorded in this output directory (earlier runs included),
  so repeating a run with the same cap never spends more than the cap in total.
- Cached responses of the same prompt version but different prompt files (fingerprint) are refused: edit the
  prompts under a new version instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.coco import CocoImage, load_coco, symbolic_context
from ..errors import UserError
from . import TYPES
from .cache import Key, ResponseCache
from .engine import Progress, Request, Settings, send_requests
from .export import collect, judge, reject_counts, write_outputs
from .pricing import CostBudget, PriceTable
from .prompts import DEFAULT_VERSION, USES_BOXES, load_prompts

logger = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    output_dir: str
    captions: str | None = None
    instances: str | None = None
    dataset: str | None = None  # the COCO builder's save_to_disk folder, instead of captions/instances
    split: str = "train"
    types: tuple[str, ...] = TYPES
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    concurrency: int = 16
    limit: int | None = None
    prompt_version: str = DEFAULT_VERSION
    prompts_dir: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.7
    timeout: float = 120.0
    max_retries: int = 5
    max_cost: float | None = None
    price_table: str | None = None
    batch_api: bool = False
    batch_size: int = 50_000
    poll_interval: float = 30.0
    image_dir: str | None = None
    allow_missing_boxes: bool = False  # send detail/complex requests with captions only where boxes are unknown
    push_to_hub: str | None = None
    private: bool = False
    progress: bool | None = None  # None: tqdm decides (off when not a terminal)


def _check_fingerprints(cache: ResponseCache, version: str, fingerprint: str) -> None:
    for key, record in cache.ok.items():
        if key.prompt_version == version and record.get("prompt_fingerprint") not in (fingerprint, None):
            raise ValueError(
                f"{cache.path}: {key} was generated with different prompt files for version {version!r} "
                f"(fingerprint {record['prompt_fingerprint']}, now {fingerprint}); put edited prompts under a "
                "new version directory and pass --prompt-version")


def _from_dataset(path: str, split: str):
    """COCO images (and a lookup of their embedded image) from the COCO builder's saved dataset."""
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r} (has {sorted(ds)})")
        ds = ds[split]
    missing = {"image_id", "file_name", "width", "height", "captions", "boxes", "images"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{path}: not a COCO captions+boxes dataset (datasets_scripts/coco_captions_boxes.py); "
                         f"missing columns {sorted(missing)}")
    meta = ds.select_columns(["image_id", "file_name", "width", "height", "captions", "boxes"])
    images = [CocoImage(row["image_id"], row["file_name"], row["width"], row["height"], list(row["captions"]),
                        [(b["category"], list(b["bbox"])) for b in row["boxes"]]) for row in meta]
    index = {str(image.image_id): i for i, image in enumerate(images)}
    stored = ds.select_columns(["images"]).cast_column("images", datasets.List(datasets.Image(decode=False)))
    return images, lambda image, row_id: stored[index[str(image.image_id)]]["images"][0]


def load_inputs(cfg: GenerateConfig):
    """(COCO images, image_of(image, row_id) or None when the run has no image bytes)."""
    if (cfg.dataset is None) == (cfg.captions is None):
        raise ValueError("give either --captions [--instances] (COCO annotation files) or --dataset (the COCO builder's output)")
    if cfg.dataset:
        return _from_dataset(cfg.dataset, cfg.split)
    images = load_coco(cfg.captions, cfg.instances)
    if cfg.image_dir is None:
        return images, None
    from ..data.images import read_image

    return images, lambda image, row_id: read_image(cfg.image_dir, image.file_name, "COCO images", row_id)


def _without_boxes(cfg: GenerateConfig, images: list[CocoImage]) -> set[str]:
    """Ids of the captioned `images` whose box requests must not be sent: boxes unknown (not in --instances, or no
    --instances at all), unless the user allows captions only. Raises when no image has boxes at all."""
    box_types = [kind for kind in cfg.types if USES_BOXES[kind]]
    if cfg.dataset or not box_types or cfg.allow_missing_boxes:  # the COCO builder joined captions and boxes itself
        return set()
    missing = [str(image.image_id) for image in images if not image.in_instances]
    advice = f"or --types without {'/'.join(box_types)}, or --allow-missing-boxes to send them with captions only"
    if cfg.instances is None:
        raise UserError(f"--types {','.join(box_types)} need the boxes: pass --instances (COCO instances_*.json), "
                        + advice)
    if len(missing) == len(images):
        raise UserError(f"--captions {cfg.captions} and --instances {cfg.instances} share no image id (captions has "
                        f"e.g. {', '.join(missing[:3])}): give both files of the same split, " + advice)
    if missing:
        logger.warning("%d of %d captioned images are not in --instances %s (e.g. ids %s): their %s requests are "
                       "not sent (stats: no_boxes); --allow-missing-boxes sends them with captions only",
                       len(missing), len(images), cfg.instances, ", ".join(missing[:5]), "/".join(box_types))
    return set(missing)


def generate(cfg: GenerateConfig) -> dict:
    """Run the data engine; returns the stats that are also written to OUT/stats.json."""
    unknown = set(cfg.types) - set(TYPES)
    if unknown:
        raise ValueError(f"unknown type(s) {sorted(unknown)}; choose from {', '.join(TYPES)}")
    if cfg.push_to_hub and not (cfg.image_dir or cfg.dataset):
        raise ValueError("--push-to-hub needs the images (--image-dir, or --dataset): the pushed dataset embeds them")
    started = time.time()
    out = Path(cfg.output_dir)
    prompts = load_prompts(cfg.prompt_version, cfg.prompts_dir)
    images, image_of = load_inputs(cfg)
    images = images[: cfg.limit]
    by_id = {str(image.image_id): image for image in images}
    settings = Settings(model=cfg.model, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                        concurrency=cfg.concurrency, timeout=cfg.timeout, max_retries=cfg.max_retries,
                        prompt_fingerprint=prompts.fingerprint)
    captioned = [image for image in images if image.captions]
    if not captioned:
        source = cfg.dataset or cfg.captions
        raise UserError(f"{source}: none of its {len(images)} image(s) (after --limit) has a caption, so there is "
                        "nothing to ask the teacher" if images else f"{source}: no images (after --limit)")
    without_boxes = _without_boxes(cfg, captioned)
    requests, no_boxes = [], 0
    no_context = len(images) - len(captioned)
    for image in captioned:
        for kind in cfg.types:
            if USES_BOXES[kind] and str(image.image_id) in without_boxes:
                no_boxes += 1
                continue
            key = Key(str(image.image_id), kind, prompts.version, cfg.model)
            context = symbolic_context(image, with_boxes=USES_BOXES[kind])
            requests.append(Request(key, prompts.types[kind].messages(context)))

    with ResponseCache(out / "cache.jsonl") as cache:
        _check_fingerprints(cache, prompts.version, prompts.fingerprint)
        todo = [r for r in requests if not cache.is_done(r.key)]
        spent_before = sum(record.get("cost") or 0.0 for record in cache.ok.values())
        budget = CostBudget(PriceTable.load(cfg.price_table), cfg.model, cfg.max_cost, cfg.max_tokens,
                            batch=cfg.batch_api, spent=spent_before)
        progress = Progress(len(todo), budget, lambda key, record: judge(key, record, prompts)[1],
                            desc="batch api" if cfg.batch_api else "generate", disable=None if cfg.progress is None else not cfg.progress)
        try:
            stopped = send_requests(todo, base_url=cfg.base_url, settings=settings, cache=cache, budget=budget,
                                    progress=progress, batch_api=cfg.batch_api, work_dir=out / "batches",
                                    poll_interval=cfg.poll_interval, batch_size=cfg.batch_size)
        finally:
            progress.close()

        rows, rejects, by_type, usage = collect([r.key for r in requests], cache, prompts, by_id,
                                                image_of or (lambda image, row_id: image.file_name))
        failures = [{"key": str(k), "error": cache.failed[k]["error"]} for k in (r.key for r in requests)
                    if k in cache.failed]
        stats = {
            "model": cfg.model, "base_url": cfg.base_url, "prompt_version": prompts.version,
            "prompt_fingerprint": prompts.fingerprint, "mode": "batch" if cfg.batch_api else "live",
            "images": len(images), "no_context": no_context, "no_boxes": no_boxes, "requested": len(requests),
            "rows": len(rows),
            "rejected": len(rejects), "failed": len(failures),
            "pending": sum(c["pending"] for c in by_type.values()), "by_type": by_type,
            "rejects_by_reason": reject_counts(rejects),
            "tokens": {"prompt": usage["prompt_tokens"], "completion": usage["completion_tokens"]},
            "cost_usd": round(usage["cost"], 6) if budget.known else None,
            "cost_usd_this_run": round(budget.spent - spent_before, 6) if budget.known else None,
            "stopped": stopped, "sent_this_run": progress.done + progress.rejected + progress.failed,
            "seconds": round(time.time() - started, 2), "failures": failures,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
        }
        stats["dataset_dir"] = str(out / "dataset") if image_of else None
        write_outputs(out, rows, rejects, stats, with_dataset=image_of is not None)
    if cfg.push_to_hub:
        from .hub import push_dataset

        stats["hub_url"] = push_dataset(out, cfg.push_to_hub, stats, private=cfg.private)
    return stats


def summary(stats: dict) -> str:
    cost = "n/a (no price for this model)" if stats["cost_usd"] is None else f"${stats['cost_usd']:.4f}"
    lines = [f"{stats['rows']} rows from {stats['requested']} requests ({stats['images']} images, "
             f"model {stats['model']}, prompts {stats['prompt_version']}, {stats['mode']})",
             f"  rejected {stats['rejected']}, failed {stats['failed']}, pending {stats['pending']}, "
             f"sent this run {stats['sent_this_run']}, {stats['seconds']} s",
             f"  tokens: {stats['tokens']['prompt']} prompt + {stats['tokens']['completion']} completion, cost {cost}"]
    for kind, counts in stats["by_type"].items():
        lines.append(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if stats["rejects_by_reason"]:
        lines.append("  rejects: " + ", ".join(f"{k} {v}" for k, v in stats["rejects_by_reason"].items()))
    if stats.get("no_boxes"):
        lines.append(f"  {stats['no_boxes']} detail/complex request(s) not sent: their images are not in --instances "
                     "(--allow-missing-boxes sends them with captions only)")
    if stats["stopped"] == "cost cap":
        lines.append("  stopped before the cost cap (--max-cost); rerun with a higher cap to continue")
    if stats["dataset_dir"] is None:
        lines.append("  no images (--image-dir or --dataset): wrote llava_instruct.json only; rerun with --image-dir "
                     "COCO_IMAGES (sends no request) to write the canonical dataset/")
    if stats["failed"]:
        lines.append(f"  first failure: {stats['failures'][0]['key']}: {stats['failures'][0]['error']}")
        lines.append("  failed requests are retried by the next run")
    return "\n".join(lines)
