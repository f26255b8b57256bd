"""Training throughput as ratios from interleaved repeats: the stage-1 feature cache, our recipe vs TRL's stock VLM
path, and the collator.

Design notes
- Vision-heavy, tiny-ish stage 1 (CPU): a ViT-S/16-sized CLIP tower at 224 px (196 image tokens, 12 layers, random
  init) and a small 2-layer Llama, batch 8, `plain` captions; only the projector trains.
- Samples/s are measured between the end of the first step and the end of the last (the first step's warm-up is
  left out) with a TrainerCallback; every run trains the same rows in the same order (seed 0).
- Repeats are interleaved (ours with pixels, ours with the cache, TRL stock; the next repeat in reverse order), and
  each ratio is taken within one repeat: on a shared machine, background load then slows both sides of a ratio
  alike, and a trend over the run cancels out. The report gives each run's median samples/s and each ratio's
  median with its spread (min-max over repeats); a 10% difference needs a spread narrower than that, which a
  handful of ~1 s steps on a busy machine does not give. The ours/stock ratio is also given in samples per CPU-second
  of the process (all its threads): where other jobs take most of the cores, wall time measures the scheduler more
  than the code, and CPU time much less so (it still counts cache misses and spin-waits caused by the other load).
- Cache: the recipe's `main` with and without `cache_image_features`; the one-off cost of building the cache is
  reported next to the ratio (the run's setup, so an upper bound).
- Stock: TRL's native VLM path on transformers' `LlavaForConditionalGeneration`, the same weights (our first stage-1
  output exported with `hf_llava.convert.to_llava_hf`), the same rows (`images` + `messages`), SFTTrainer's own
  collator (`DataCollatorForVisionLanguageModeling`) with `assistant_only_loss=True`, only the projector trainable.
- Collator rows/s: ours (`MultimodalCollator`) and TRL's on the same rows, batches of 8, no model, one pass each
  per repeat (interleaved as well).
"""

import argparse
import contextlib
import importlib.util
import io
import logging
import shutil
import statistics
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
    """Wall time and this process's CPU time (all threads) from the end of the first step to the end of the last."""

    def on_step_end(self, args, state, control, **kwargs):
        now, cpu_now = time.perf_counter(), time.process_time()
        if state.global_step == 1:
            self.start, self.cpu_start = now, cpu_now
        self.steps, self.end, self.cpu_end = state.global_step, now, cpu_now

    def samples_per_second(self) -> float:
        return (self.steps - 1) * BATCH / (self.end - self.start)

    def samples_per_cpu_second(self) -> float:
        return (self.steps - 1) * BATCH / (self.cpu_end - self.cpu_start)


def make_parts(root: Path, rows: int) -> dict:
    import datasets
    from PIL import Image
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llava.data.schema import features
    from hf_llava.tiny import tiny_tokenizer
    from hf_llava.training.model import save_random_clip_tower

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
    start = time.perf_counter()
    trainer.train()
    return trainer, timer, time.perf_counter() - start


def collator_rows_per_second(collator, rows: list[dict]) -> float:
    start = time.perf_counter()
    for k in range(0, len(rows), BATCH):
        collator(rows[k:k + BATCH])
    return len(rows) / (time.perf_counter() - start)


def spread(values: list[float], unit: str = "") -> str:
    """Median and [min-max] of the per-repeat values."""
    return f"{statistics.median(values):7.2f}{unit}  [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run (plus one warm-up step)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of every run")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    logging.disable(logging.WARNING)
    import datasets
    import transformers

    from hf_llava import MultimodalCollator
    from hf_llava.convert import to_llava_hf

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    sft = load_sft()
    steps = args.steps + 1
    speeds = {"pixels": [], "cache": [], "stock": []}
    cpu_speeds = {name: [] for name in speeds}
    cache_builds, collator_speeds = [], {"ours": [], "stock": []}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        parts = make_parts(root, steps * BATCH)
        dataset = datasets.load_from_disk(parts["data"]).select_columns(["images", "messages"])
        rows = list(datasets.load_from_disk(parts["data"]))
        collators = {}

        def run(name: str, out: Path):
            if name == "stock":
                return run_stock(root / "native", dataset, out, steps)
            extra = ("--cache_image_features", "true") if name == "cache" else ()
            return run_ours(sft, parts, out, steps, *extra)

        for repeat in range(args.repeats):
            order = ["pixels", "cache", "stock"] if repeat % 2 == 0 else ["stock", "cache", "pixels"]
            for name in order:
                out = root / f"{name}{repeat}"
                with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's own end-of-run log lines
                    trainer, timer, total = run(name, out)
                if name == "stock":
                    collators.setdefault("stock", trainer.data_collator)
                else:
                    collators.setdefault("ours", MultimodalCollator(trainer.processing_class))
                if name == "cache":
                    cache_builds.append(total - (timer.end - timer.start) * steps / (steps - 1))
                if name == "pixels" and not (root / "native").exists():  # stock starts from our first output
                    to_llava_hf(out, root / "native")
                speeds[name].append(timer.samples_per_second())
                cpu_speeds[name].append(timer.samples_per_cpu_second())
                shutil.rmtree(out, ignore_errors=True)
            for name in ("ours", "stock") if repeat % 2 == 0 else ("stock", "ours"):
                collator_speeds[name].append(collator_rows_per_second(collators[name], rows))
            print(f"repeat {repeat + 1}/{args.repeats}: ours/stock {speeds['pixels'][-1] / speeds['stock'][-1]:.2f}x "
                  f"(per CPU-second {cpu_speeds['pixels'][-1] / cpu_speeds['stock'][-1]:.2f}x), cache/pixels "
                  f"{speeds['cache'][-1] / speeds['pixels'][-1]:.2f}x", flush=True)

    def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
        return [a / b for a, b in zip(numerator, denominator)]

    tokens = (VISION["image_size"] // VISION["patch_size"]) ** 2
    print(f"stage 1, CLIP ViT-S/16-sized tower at {VISION['image_size']} px ({tokens} image tokens) + "
          f"{TEXT['num_hidden_layers']}-layer {TEXT['hidden_size']}-wide Llama, batch {BATCH}, {args.steps} timed "
          f"steps (+1 warm-up) per run, {args.repeats} interleaved repeats, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("runs alternate within each repeat (pixels, cache, stock, then reversed), so background load on a shared "
          "machine hits both sides of a ratio alike; median [min-max] over repeats; ratios are per repeat")
    print(f"  ours, pixels            {spread(speeds['pixels'])} samples/s")
    print(f"  ours, feature cache     {spread(speeds['cache'])} samples/s   (one-off cache build and setup "
          f"~{statistics.median(cache_builds):.1f} s for {steps * BATCH} images)")
    print(f"  TRL stock VLM (native)  {spread(speeds['stock'])} samples/s")
    print(f"  collator, ours          {spread(collator_speeds['ours'])} rows/s")
    print(f"  collator, TRL's         {spread(collator_speeds['stock'])} rows/s")
    print(f"ratio cache / pixels:      {spread(ratios(speeds['cache'], speeds['pixels']), 'x')}  (goal >= 3)")
    print(f"ratio ours / TRL stock:    {spread(ratios(speeds['pixels'], speeds['stock']), 'x')}  (goal >= 1)")
    print(f"  the same in samples per CPU-second of the process, less sensitive to other load: ours "
          f"{statistics.median(cpu_speeds['pixels']):.2f}, stock {statistics.median(cpu_speeds['stock']):.2f}, "
          f"ratio {spread(ratios(cpu_speeds['pixels'], cpu_speeds['stock']), 'x').strip()}")
    print(f"ratio collator ours / TRL: {spread(ratios(collator_speeds['ours'], collator_speeds['stock']), 'x')}")


if __name__ == "__main__":
    main()
