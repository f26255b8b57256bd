"""A CLIP-style vision tower trained from scratch on image-caption rows: LLaVA's tower is a contrastively trained
CLIP, and the embedded CPU default needs one for synthetic shapes (no downloads).

    python -m hf_llava.training.contrastive --config recipes/shapes-smollm2/tower.yaml [--key value ...]

Design notes
- Configured as recipes/sft.py is: `TrlParser` over dataclasses (`TowerArguments`, `ContrastiveSettings`), so every
  YAML key is also a `--key value` flag that overrides it, and `datasets` is the same list of `DatasetSpec` sources
  (`{path, name, split, ...}`) loaded by the same `load_mixture`.
- transformers' `CLIPModel`: the vision side is the tower being built (any `CLIPVisionConfig`), the text side a
  small `CLIPTextModel` over the LLM's tokenizer (any tokenizer works; it is thrown away after training). The
  caption embedding is the last real token's state (each caption ends with the tokenizer's EOS), not CLIP's
  argmax-id pooling, which assumes CLIP's own vocabulary.
- Rows are canonical rows (the first image, the last assistant message as its caption), e.g. the synthetic-shapes
  `caption` config or LLaVA-Pretrain-style captions.
- Why a contrastive tower at all: a tower trained through the frozen LLM from random init learned a soft prompt
  (the caption loss barely depended on which image was shown); stage 1 on the frozen contrastive tower grounds.
  The measured runs are in docs/demo-log.md.
- Stability: with a higher learning rate and no warm-up the loss sat at ln(batch) (no learning) on tiny configs;
  the defaults warm up over 10% of the steps, clip gradients at 1, decay only weight matrices, and clamp the
  learned temperature at CLIP's 100.
- Positions: LLaVA reads the patch tokens, so each must say where it is. From CLIP's 0.02-std init the learned
  position embeddings stayed tiny next to the patch content: a linear probe could barely read an occupied patch's
  grid cell, and the LLM could not answer "where". `sincos_positions` starts them as MAE's 2D sine-cosine table
  (still learned), which the probe reads far better. It is off by default (CLIP's init): the table's unit scale
  suits patch content of similar size, as the demo's 32-px patches give; on the tests' 7-px patches it swamps the
  content and the contrastive loss ends higher. Mean-pooling the patches instead of the class token, or each image
  with its patches shuffled as a hard negative, did not help.
- The saved folder is a `CLIPVisionModel` + `CLIPImageProcessor`, loadable as any `vision_tower`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data.images import to_pil
from ..errors import UserError, check_source
from .arguments import DatasetSpec, check_at_least, parse_recipe

DEFAULT_TEXT_CONFIG = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "max_position_embeddings": 64}


@dataclass
class TowerArguments:
    """What the tower trains on and where it goes; the optimisation settings are `ContrastiveSettings`."""

    datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "image-caption rows: YAML list of {path|llava_json, name, split, ...} as in recipes/sft.py; "
                          "on the command line paths/Hub ids or JSON objects"})
    vision_tower_config: dict | str | None = field(
        default=None, metadata={"help": "the tower's CLIPVisionConfig fields (YAML mapping or JSON)"})
    tokenizer: str = field(
        default="smollm2", metadata={"help": "tokenizer for the captions (Hub id or path; 'smollm2': the bundled "
                                             "SmolLM2's)"})
    output_dir: str | None = field(
        default=None, metadata={"help": "where the CLIPVisionModel and its image processor are saved (written only "
                                        "when training succeeded)"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty output_dir"})

    def __post_init__(self):
        missing = [name for name in ("datasets", "vision_tower_config", "output_dir") if not getattr(self, name)]
        if missing:
            raise UserError(f"tower training needs {', '.join(missing)}: set each in the --config YAML or as "
                             "--key value on the command line")
        if isinstance(self.vision_tower_config, str):
            self.vision_tower_config = json.loads(self.vision_tower_config)
        self.datasets = [DatasetSpec.parse(item) for item in self.datasets]


@dataclass
class ContrastiveSettings:
    steps: int = field(default=300, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=128, metadata={"help": "captions per step (also the in-batch negatives)"})
    learning_rate: float = 1e-3
    weight_decay: float = field(default=0.1, metadata={"help": "on weight matrices only"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up share of the steps, then cosine"})
    max_grad_norm: float = 1.0
    projection_dim: int = field(default=128, metadata={"help": "shared image-text embedding width"})
    heldout: int = field(
        default=200, metadata={"help": "last rows kept out of training to measure image-to-text retrieval"})
    seed: int = 0
    sincos_positions: bool = field(
        default=False,
        metadata={"help": "start the position embeddings as 2D sine-cosine instead of CLIP's init (see the notes)"})
    text_config: dict | str | None = field(
        default_factory=lambda: dict(DEFAULT_TEXT_CONFIG),
        metadata={"help": "CLIPTextConfig fields of the throw-away text tower (YAML mapping or JSON)"})

    def __post_init__(self):
        check_at_least(self, steps=1, batch_size=2, learning_rate=0, weight_decay=0, warmup_ratio=0,
                       max_grad_norm=0, projection_dim=1, heldout=0)
        if self.warmup_ratio > 1:
            raise UserError(f"warmup_ratio is a share of the steps (0 to 1), got {self.warmup_ratio}")
        if isinstance(self.text_config, str):
            self.text_config = json.loads(self.text_config)


def image_caption_pairs(dataset) -> list[tuple[object, str]]:
    """(image, caption) per row: the row's first image and its last assistant message's text."""
    pairs = []
    for k, row in enumerate(dataset):
        images = row.get("images") or []
        answers = [m for m in row["messages"] if m["role"] == "assistant"]
        if not images or not answers:
            raise UserError(f"row {row.get('id', k)!r} has no image or no assistant caption; contrastive tower "
                             "training needs one of each per row")
        text = " ".join(part.get("text") or "" for part in answers[-1]["content"] if part.get("type") == "text")
        pairs.append((images[0], text.strip()))
    return pairs


def sincos_position_embeddings(grid: int, dim: int) -> torch.Tensor:
    """MAE's 2D sine-cosine position embeddings for a grid x grid patch map, row-major as CLIP flattens its
    patches, after a zero row for the class token: (1 + grid**2, dim)."""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float) / max(quarter, 1))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float), torch.arange(grid, dtype=torch.float),
                                indexing="ij")

    def encode(coordinate):
        angles = coordinate.flatten()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = F.pad(torch.cat([encode(rows), encode(cols)], dim=1), (0, dim - 4 * quarter))
    return torch.cat([torch.zeros(1, dim), table])


def _text_features(model, input_ids, attention_mask):
    hidden = model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    last = attention_mask.sum(1) - 1  # each caption ends with EOS; right padding
    return model.text_projection(hidden[torch.arange(len(last)), last])


def _image_features(model, pixel_values):
    return model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)


def clip_loss(model, pixel_values, input_ids, attention_mask) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE over the batch; returns the loss and the image-to-text in-batch top-1 accuracy."""
    image = F.normalize(_image_features(model, pixel_values), dim=-1)
    text = F.normalize(_text_features(model, input_ids, attention_mask), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
    target = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, (logits.argmax(1) == target).float().mean().item()


class _Batcher:
    """Pixel values and EOS-terminated token ids for a list of pairs."""

    def __init__(self, image_processor, tokenizer, max_length: int):
        self.image_processor, self.tokenizer, self.max_length = image_processor, tokenizer, max_length

    def __call__(self, pairs):
        pixels = self.image_processor([to_pil(image) for image, _ in pairs], return_tensors="pt")["pixel_values"]
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_length - 1]
               + [self.tokenizer.eos_token_id] for _, text in pairs]
        width = max(map(len, ids))
        input_ids = torch.tensor([x + [self.tokenizer.eos_token_id] * (width - len(x)) for x in ids])
        attention_mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        return pixels, input_ids, attention_mask


@torch.no_grad()
def retrieval_accuracy(model, batcher, pairs, batch_size: int = 200) -> float:
    """Image-to-text top-1 among `batch_size` held-out candidates, averaged over chunks."""
    model.eval()
    hits = total = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        if len(chunk) < 2:
            break
        pixels, ids, mask = batcher(chunk)
        image = F.normalize(_image_features(model, pixels), dim=-1)
        text = F.normalize(_text_features(model, ids, mask), dim=-1)
        hits += ((image @ text.T).argmax(1) == torch.arange(len(chunk))).sum().item()
        total += len(chunk)
    model.train()
    return hits / max(total, 1)


def train_tower(dataset, vision_config: dict, tokenizer, output_dir: str | Path,
                settings: ContrastiveSettings = ContrastiveSettings(), step_callback=None) -> dict:
    """Train a CLIP vision tower from scratch on `dataset`'s image-caption rows (the last `settings.heldout` rows
    only measure retrieval); save it to `output_dir` as a CLIPVisionModel + image processor. Returns a summary
    (losses, held-out retrieval accuracy, seconds). `step_callback(steps_done, total_steps)` runs after each step
    (the demo times its first steps with it)."""
    from tqdm.auto import tqdm
    from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPVisionModel,
                              get_cosine_schedule_with_warmup)

    pairs = image_caption_pairs(dataset)
    heldout = min(settings.heldout, len(pairs) // 5)
    pairs, heldout_pairs = pairs[:len(pairs) - heldout], pairs[len(pairs) - heldout:]
    if len(pairs) < 2:
        raise UserError(f"contrastive training needs at least 2 image-caption rows, got {len(pairs)}")
    batch_size = min(settings.batch_size, len(pairs))
    torch.manual_seed(settings.seed)
    text_config = {**settings.text_config, "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id}
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config,
                                 projection_dim=settings.projection_dim))
    vision_config = model.config.vision_config
    if settings.sincos_positions:
        with torch.no_grad():
            model.vision_model.embeddings.position_embedding.weight.copy_(sincos_position_embeddings(
                vision_config.image_size // vision_config.patch_size, vision_config.hidden_size))
    size = vision_config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    batcher = _Batcher(image_processor, tokenizer, text_config["max_position_embeddings"])

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.learning_rate)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * settings.steps),
                                                settings.steps)
    rng = random.Random(settings.seed)
    order: list[int] = []
    losses, accuracies = [], []
    start = time.perf_counter()
    model.train()
    progress = tqdm(range(settings.steps), desc="contrastive tower")
    for step in progress:
        if len(order) < batch_size:  # reshuffle per epoch; a batch never holds the same pair twice
            order = rng.sample(range(len(pairs)), len(pairs))
        batch, order = [pairs[i] for i in order[:batch_size]], order[batch_size:]
        loss, accuracy = clip_loss(model, *batcher(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        accuracies.append(accuracy)
        progress.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{accuracy:.2f}")
        if step_callback is not None:
            step_callback(step + 1, settings.steps)

    summary = {"steps": settings.steps, "batch_size": batch_size, "rows": len(pairs),
               "first_loss": round(losses[0], 4), "last_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
               "chance_loss": round(math.log(batch_size), 4), "last_batch_accuracy": round(accuracies[-1], 4),
               "seconds": round(time.perf_counter() - start, 1)}
    if len(heldout_pairs) >= 2:
        summary["heldout_i2t_top1"] = round(retrieval_accuracy(model, batcher, heldout_pairs), 4)
        summary["heldout_rows"] = len(heldout_pairs)

    output_dir = Path(output_dir)
    tower = CLIPVisionModel(model.config.vision_config)
    tower.load_state_dict(model.vision_model.state_dict())
    tower.save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)
    (output_dir / "contrastive_training.json").write_text(
        json.dumps({"settings": asdict(settings), "summary": summary}, indent=2) + "\n")
    return summary


def make_parser():
    from trl import TrlParser

    return TrlParser(
        (TowerArguments, ContrastiveSettings), prog="python -m hf_llava.training.contrastive",
        description="Train a CLIP vision tower from scratch on image-caption rows (a small text tower over the "
        "tokenizer is trained alongside and discarded). The folder it writes is a `vision_tower` for recipes/sft.py. "
        "Every key of the --config YAML is also a flag, and flags override the YAML.")


def main(argv: list[str] | None = None, step_callback=None) -> dict:
    """Parse `argv` (default sys.argv[1:]), train and save the tower; returns (and prints) its summary."""
    from transformers import AutoTokenizer

    from ..checkpoint import staged_output
    from .data import load_mixture

    args, settings = parse_recipe(make_parser(), argv)
    sources = [spec.path or spec.llava_json for spec in args.datasets]
    # staged: a refused output_dir stops the run before anything is loaded, and a failed run leaves nothing behind
    with staged_output(args.output_dir, overwrite=args.overwrite, sources=sources, name="output_dir") as staging:
        dataset = load_mixture(args.datasets, settings.seed)
        tokenizer_path = args.tokenizer
        if tokenizer_path == "smollm2":
            from ..smollm2 import smollm2_path
            tokenizer_path = smollm2_path()
        else:
            check_source(tokenizer_path, "tokenizer")
        summary = train_tower(dataset, args.vision_tower_config, AutoTokenizer.from_pretrained(tokenizer_path),
                              staging, settings, step_callback)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from ..errors import script_main

    script_main("python -m hf_llava.training.contrastive", main)
