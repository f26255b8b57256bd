"""Training throughput, one run, printed as ratios: the stage-1 feature cache, our recipe vs TRL's stock VLM path,
and the collator.

Design notes
- Vision-heavy, tiny-ish stage 1 (CPU): a ViT-S/16-sized CLIP tower at 224 px (196 image tokens, 12 layers, random
  init) and a small 4-layer Llama, batch 8, `plain` captions; only the projector trains.
- Samples/s are measured between the end of the first step and the end of the last (the first step's warm-up is
  left out) with a TrainerCallback; every run trains the same rows in the same order (seed 0).
- Cache: `recipes/sft.py` with and without `cache_image_features`; the one-off cost of building the cache is reported
  next to the ratio (how many steps it pays for itself in).
- Stock: TRL's native VLM path on transformers' `LlavaForConditionalGeneration`, the same weights (our stage-1
  output exported with `hf_llava.convert.to_llava_hf`), the same rows (`images` + `messages`), SFTTrainer's own
  collator (`DataCollatorForVisionLanguageModeling`) with `assistant_only_loss=True`, only the projector trainable.
- Collator rows/s: ours (`MultimodalCollator`) and TRL's on the same rows, batches of 8, no model.
"""

import argparse
import importlib.util
import logging
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6, image_size=224,
              patch_size=16)
TEXT = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=1024)
BATCH = 8
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


class StepTimer(TrainerCallback):
    """Wall time from the end of the first step to the end of the last."""

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if state.global_step == 1:
            self.start = now
        self.steps, self.end = state.global_step, now

    def samples_per_second(self) -> float:
        return (self.steps - 1) * BATCH / (self.end - self.start)


def make_parts(root: Path, rows: int) -> dict:
    import datasets
    from PIL import Image
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llava.data.schema import features
    from hf_llava.training.model import save_random_clip_tower
    from hf_llava.testing import tiny_tokenizer

    tower = save_random_clip_tower(root / "tower", seed=0, **VISION)
    tokenizer = tiny_tokenizer(chat_template=None)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    generator = torch.Generator().manual_seed(0)
    data = [{"id": str(i), "images": [Image.fromarray(
        torch.randint(0, 256, (256, 320, 3), generator=generator, dtype=torch.uint8).numpy())], "messages": [
        {"role": "user", "content": [{"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"A {COLOURS[i % 6]} square on a grey field."}]}]}
        for i in range(rows)]
    datasets.Dataset.from_list(data, features=features()).save_to_disk(str(root / "data"))
    return {"tower": str(tower), "llm": str(root / "llm"), "data": str(root / "data")}


def load_sft():
    spec = importlib.util.spec_from_file_location("hf_llava_recipe_sft", ROOT / "recipes" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def common_args(steps: int) -> list[str]:
    return ["--use_cpu", "true", "--bf16", "false", "--per_device_train_batch_size", str(BATCH), "--max_steps",
            str(steps), "--logging_steps", "1000", "--report_to", "none", "--seed", "0", "--save_strategy", "no",
            "--activation_checkpointing", "false", "--disable_tqdm", "true", "--learning_rate", "1e-3"]


def run_ours(sft, parts: dict, out: Path, steps: int, *extra: str):
    timer = StepTimer()
    start = time.perf_counter()
    trainer = sft.main(["--vision_tower", parts["tower"], "--llm", parts["llm"], "--chat_template", "plain",
                        "--stage", "1", "--datasets", parts["data"], "--output_dir", str(out), *common_args(steps),
                        *extra], callbacks=[timer])
    return trainer, timer, time.perf_counter() - start


def run_stock(native_dir: Path, dataset, out: Path, steps: int):
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    model = LlavaForConditionalGeneration.from_pretrained(native_dir)
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    config = SFTConfig(output_dir=str(out), max_length=None, assistant_only_loss=True, use_cpu=True, bf16=False,
                       per_device_train_batch_size=BATCH, max_steps=steps, logging_steps=1000, report_to="none",
                       seed=0, save_strategy="no", activation_checkpointing=False, disable_tqdm=True,
                       learning_rate=1e-3)
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoProcessor.from_pretrained(native_dir), callbacks=[timer])
    trainer.train()
    return trainer, timer


def collator_rows_per_second(collator, rows: list[dict], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(0, len(rows), BATCH):
            collator(rows[k:k + BATCH])
        best = min(best, time.perf_counter() - start)
    return len(rows) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (the first is warm-up)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import datasets

    from hf_llava import MultimodalCollator
    from hf_llava.convert import to_llava_hf

    datasets.disable_progress_bars()
    sft = load_sft()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        parts = make_parts(root, args.steps * BATCH)
        pixels, pixel_timer, _ = run_ours(sft, parts, root / "pixels", args.steps)
        cached, cached_timer, cached_total = run_ours(sft, parts, root / "cached", args.steps,
                                                      "--cache_image_features", "true")
        build = cached_total - (cached_timer.end - cached_timer.start) * args.steps / (args.steps - 1)
        native = to_llava_hf(root / "pixels", root / "native")
        dataset = datasets.load_from_disk(parts["data"]).select_columns(["images", "messages"])
        stock, stock_timer = run_stock(native, dataset, root / "stock", args.steps)
        rows = list(datasets.load_from_disk(parts["data"]))
        ours_collator = MultimodalCollator(pixels.processing_class)
        ours_rows, stock_rows = (collator_rows_per_second(c, rows) for c in (ours_collator, stock.data_collator))

    ours, cache, trl = (t.samples_per_second() for t in (pixel_timer, cached_timer, stock_timer))
    tokens = (VISION["image_size"] // VISION["patch_size"]) ** 2
    print(f"stage 1, CLIP ViT-S/16-sized tower at {VISION['image_size']} px ({tokens} image tokens) + "
          f"{TEXT['num_hidden_layers']}-layer {TEXT['hidden_size']}-wide Llama, batch {BATCH}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"  ours, pixels            {ours:7.2f} samples/s")
    print(f"  ours, feature cache     {cache:7.2f} samples/s   (one-off cache build ~{build:.1f} s for "
          f"{args.steps * BATCH} images)")
    print(f"  TRL stock VLM (native)  {trl:7.2f} samples/s")
    print(f"  collator rows/s: ours {ours_rows:.0f}, TRL's {stock_rows:.0f}")
    print(f"ratio cache / pixels:       {cache / ours:.2f}x  (goal >= 3)")
    print(f"ratio ours / TRL stock:     {ours / trl:.2f}x  (goal >= 1)")
    print(f"ratio collator ours / TRL:  {ours_rows / stock_rows:.2f}x")


if __name__ == "__main__":
    main()
