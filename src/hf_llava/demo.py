"""`hf-llava demo`: the main job, a whole LLaVA in miniature trained on a CPU.

    data -> vision tower (contrastive) -> stage 1 (feature alignment) -> stage 2 (instruction tuning)
         -> eval (+ blank image) -> chat -> report

Design notes
- Every step is the public tool a user would run: the synthetic-shapes builder (hf_llava.data.synthetic_shapes,
  the class behind datasets_scripts/synthetic_shapes.py), the contrastive tower trainer (hf_llava.training.contrastive
  with recipes/shapes-smollm2/tower.yaml), the training entry point (`hf-llava train`, hf_llava.training.sft, with
  recipes/shapes-smollm2/{pretrain,finetune}.yaml; the demo only points the recipes' paths into --output-dir),
  `hf_llava.eval.shapes` and `hf_llava.eval.report`. The recipes ship inside the package (hf_llava/recipes/, which
  the checkout's recipes/shapes-smollm2 links to), so an installed wheel runs the demo from any directory.
- The tower is a small CLIP trained contrastively on the captions first (LLaVA's tower is a pretrained CLIP), then
  frozen: trained from random init through the frozen LLM in stage 1 instead, it learned a soft prompt that ignores
  the picture (see recipes/shapes-smollm2/pretrain.yaml).
- Stage 2 mixes LLaVA-style instruction conversations (sentence answers) with short-answer VQA on the training
  scenes (the `vqa` config's train split: every question type, + "Answer the question using a single word or
  phrase."), as LLaVA-1.5 mixes academic VQA into its 665K set: the held-out evaluation scores short answers by exact
  match, and a model that never saw that format answers in sentences. Text-only rows (the `text` config: the same
  questions about a scene described in words) teach the LLM the matching the questions need, which it did not
  find from pixels alone. The mixture and the step counts are the recipes' (recipes/shapes-smollm2); the demo only
  points them at its data. Training and held-out scenes come from different random streams.
- Resumable per stage: each stage works in its own folder under --output-dir and writes `demo_stage.json`
  (settings, inputs, seconds, summary) last. A folder with that file is reused as is; one without it is an
  interrupted stage and is cleared and redone; a finished stage made with other settings is an error (never
  silently mixed). `inputs` fingerprints what the stage was made from: its recipe or data-builder files and the
  previous stage's marker. So an edited recipe (or a newer hf-llava's data builder) redoes that stage and every
  later one, and a redone stage redoes the ones after it, instead of reusing results made from something else.
- `--quick` runs the same pipeline with a tiny random LLM and tower (hf_llava.tiny sizes) for a few steps: the
  CI smoke test. The numbers it prints are meaningless; the full run's are in docs/demo.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "demo_stage.json"
STAGES = ("data", "tower", "stage1-pretrain", "stage2-finetune", "eval")
RECIPES = Path(__file__).parent / "recipes" / "shapes_smollm2"  # package data; recipes/shapes-smollm2 in a checkout
CHAT_QUESTION = "Describe this image in detail."


@dataclass(frozen=True)
class DemoSettings:
    """What the stages' outputs depend on (stored in each stage's marker)."""

    quick: bool = False
    num_images: int = 4000  # training scenes (the tower and stage 1 see their captions, stage 2 their questions)
    num_eval_images: int = 200  # held-out scenes, 5 questions each, asked twice (image, blank image)
    image_size: int = 64
    seed: int = 0
    eval_batch_size: int = 32
    precision: str = "fp32"  # "bf16": autocast where the recipes ask for it; "fp32": nowhere (see training.precision)


def stage_sources() -> dict[str, list[Path]]:
    """The files each stage is made from (besides the previous stage), fingerprinted in its marker."""
    from .data import instructions, shapes, synthetic_shapes

    return {"data": [Path(synthetic_shapes.__file__), Path(shapes.__file__), Path(instructions.__file__)],
            "tower": [RECIPES / "tower.yaml"], "stage1-pretrain": [RECIPES / "pretrain.yaml"],
            "stage2-finetune": [RECIPES / "finetune.yaml"], "eval": []}


def fingerprint(files: list[Path], previous: dict | None) -> str:
    """sha256 of the files and the previous stage's marker. A YAML recipe counts by its parsed settings, so editing
    its comments does not redo a stage; other files count by their bytes."""
    import yaml

    digest = hashlib.sha256(json.dumps(previous, sort_keys=True).encode())
    for path in files:
        content = path.read_bytes()
        if path.suffix in (".yaml", ".yml"):
            content = json.dumps(yaml.safe_load(content), sort_keys=True).encode()
        digest.update(path.name.encode() + b"\0" + content)
    return digest.hexdigest()


QUICK = dict(quick=True, num_images=16, num_eval_images=2, eval_batch_size=5)
QUICK_TRAINING = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1"]
QUICK_TOWER = ["--steps", "2", "--batch_size", "4", "--heldout", "2"]


def train_tower(recipe: Path, out: Path, data: Path, extra: list[str], step_callback=None) -> dict:
    """The contrastive tower trainer on the demo's caption rows; returns its summary (steps, losses, retrieval)."""
    from .training.contrastive import main as contrastive_main

    argv = ["--config", str(recipe), "--output_dir", str(out),
            "--datasets", *map(json.dumps, recipe_datasets(recipe, data)), *extra]
    print("  python -m hf_llava.training.contrastive " + " ".join(argv))
    summary = contrastive_main(argv, step_callback=step_callback)
    return {key: value for key, value in summary.items() if key != "seconds"}  # the stage marker times the stage


class Stage:
    """One resumable stage: `OUT/<name>/`, finished when its marker exists."""

    def __init__(self, out: Path, name: str, settings: DemoSettings, number: int):
        self.dir, self.name, self.settings, self.number = out / name, name, settings, number

    @property
    def marker(self) -> Path:
        return self.dir / MARKER

    def finished(self, inputs: str) -> dict | None:
        """The marker of a finished stage made with these settings from these `inputs` (a fingerprint); None when
        the stage must (re)run."""
        if not self.marker.is_file():
            if self.dir.exists():
                print(f"[{self.number}/{len(STAGES)}] {self.name}: clearing an unfinished earlier attempt")
                shutil.rmtree(self.dir)
            return None
        info = json.loads(self.marker.read_text())
        if info["settings"] != asdict(self.settings):
            raise ValueError(
                f"{self.dir} was made with other settings ({info['settings']}, now {asdict(self.settings)}); use "
                "another --output-dir or delete that folder"
            )
        if info.get("inputs") != inputs:
            print(f"[{self.number}/{len(STAGES)}] {self.name}: made from another recipe, data builder or earlier "
                  "stage; redoing it")
            shutil.rmtree(self.dir)
            return None
        return info

    def finish(self, seconds: float, inputs: str, **summary) -> dict:
        info = {"stage": self.name, "settings": asdict(self.settings), "inputs": inputs, "seconds": round(seconds, 1),
                **summary}
        self.marker.write_text(json.dumps(info, indent=2) + "\n")
        return info


def build_data(out: Path, settings: DemoSettings) -> dict:
    """The synthetic-shapes builder's caption (tower, stage 1), instruct + vqa + text train (stage 2) and vqa test
    (held-out)."""
    from .data.builder import build_to_disk
    from .data.synthetic_shapes import SyntheticShapes

    report = build_to_disk(SyntheticShapes, str(out), configs=["caption", "instruct", "vqa", "text"],
                           command="hf-llava demo", num_images=settings.num_images,
                           num_eval_images=settings.num_eval_images, image_size=settings.image_size,
                           seed=settings.seed)
    return {name: info["splits"] for name, info in report["configs"].items()}


def recipe_datasets(recipe: Path, data: Path) -> list[dict]:
    """The recipe's training mixture (configs, splits, weights) with its paths pointed at the demo's data folder."""
    import yaml

    return [{**spec, "path": str(data)} for spec in yaml.safe_load(recipe.read_text())["datasets"]]


def train(recipe: Path, out: Path, data: Path, extra: list[str], callbacks: list | None = None) -> dict:
    """One training run (`hf-llava train`) on the demo's data; returns its step count and first/last logged losses."""
    from .training.sft import main as train_main

    argv = ["--config", str(recipe), "--output_dir", str(out),
            "--datasets", *map(json.dumps, recipe_datasets(recipe, data)), *extra]
    print("  hf-llava train " + " ".join(argv))
    trainer = train_main(argv, callbacks=callbacks)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None}


def save_tiny_llm(path: Path) -> Path:
    """--quick: a tiny random Llama (hf_llava.tiny sizes and tokenizer) saved like a pretrained LLM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .tiny import TEXT_CONFIGS, tiny_tokenizer

    tokenizer = tiny_tokenizer(chat_template=None)
    config = LlamaConfig(**TEXT_CONFIGS["llama"], vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def chat(model, processor, image, question: str = CHAT_QUESTION, max_new_tokens: int = 80) -> str:
    """One streamed chat turn about `image`; returns the answer."""
    import torch
    from transformers import TextStreamer

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [image]})
    print(f"USER: <image>\n{question}\nASSISTANT: ", end="", flush=True)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                top_p=None, top_k=None, streamer=streamer)
    return processor.decode_generated(output, inputs["input_ids"].shape[1])[0].strip()


def _timings(infos: dict[str, dict], reused: set[str], chat_seconds: float) -> str:
    lines = ["| stage | seconds | |", "|---|---|---|"]
    for name, info in infos.items():
        detail = f"{info['steps']} steps, loss {info['first_loss']:.3f} -> {info['last_loss']:.3f}" \
            if info.get("first_loss") is not None else ""
        lines.append(f"| {name} | {info['seconds']:.0f} | {'reused from an earlier run; ' if name in reused else ''}"
                     f"{detail} |")
    lines.append(f"| chat + report | {chat_seconds:.0f} | |")
    total = sum(info["seconds"] for info in infos.values()) + chat_seconds
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min) | |")
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "outputs/demo", settings: DemoSettings = DemoSettings(),
             precision_reason: str = "") -> dict:
    """Run (or resume) every stage; returns {stage: marker info} plus "chat" and "report" entries.
    `precision_reason` says why `settings.precision` was chosen (printed, and named in a too-slow warning)."""
    from tqdm.auto import tqdm

    from .demo_timing import DemoClock, StepTimer, step_estimate_callback
    from .eval.generate import load_model
    from .eval.report import write_report
    from .eval.shapes import evaluate, load_rows, markdown_table, save_results

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mode = "QUICK smoke run: tiny random LLM, 2 steps per stage" if settings.quick else \
        "SmolLM2-135M-Instruct + a CLIP tower trained contrastively from scratch"
    print(f"hf-llava demo: a miniature LLaVA on synthetic shapes ({mode}) -> {out}")
    print(f"precision: {settings.precision}" + (f" ({precision_reason})" if precision_reason else ""))
    stages = {name: Stage(out, name, settings, k + 1) for k, name in enumerate(STAGES)}
    sources = stage_sources()
    infos, reused = {}, set()
    # the reference times are the full run's: a --quick run keeps its clock to itself
    clock = DemoClock([*STAGES, "chat"], settings.precision, precision_reason,
                      print_fn=(lambda line: None) if settings.quick else tqdm.write)

    def run_stage(name: str, work) -> dict:
        stage = stages[name]
        inputs = fingerprint(sources[name], next(reversed(infos.values()), None))  # infos: earlier stages, in order
        info = stage.finished(inputs)
        if info is not None:
            print(f"[{stage.number}/{len(STAGES)}] {name}: finished earlier, reusing {stage.dir}")
            reused.add(name)
            clock.finish(name, info["seconds"], reused=True)
        else:
            print(f"[{stage.number}/{len(STAGES)}] {name} ...")
            clock.before(name)
            start = time.perf_counter()
            summary = work(stage.dir)
            info = stage.finish(time.perf_counter() - start, inputs, **summary)
            clock.finish(name, info["seconds"])
            print(f"[{stage.number}/{len(STAGES)}] {name}: done in {info['seconds']:.0f} s")
        infos[name] = info
        return info

    data = out / "data"
    run_stage("data", lambda d: {"splits": build_data(d, settings)})

    tower = out / "tower"
    tower_extra, stage1_extra, stage2_extra = [], ["--vision_tower", str(tower)], []
    if settings.quick:
        from .tiny import VISION_CONFIGS

        llm = out / "tiny-llm"
        if not (llm / "config.json").is_file():
            save_tiny_llm(llm)
        tower_extra = ["--tokenizer", str(llm), "--vision_tower_config",
                       json.dumps(VISION_CONFIGS["clip_vision_model"]), *QUICK_TOWER]
        stage1_extra += ["--llm", str(llm), *QUICK_TRAINING]
        stage2_extra = QUICK_TRAINING
    if settings.precision == "fp32":  # "bf16" keeps each recipe's own setting
        stage1_extra, stage2_extra = [*stage1_extra, "--bf16", "false"], [*stage2_extra, "--bf16", "false"]

    run_stage("tower", lambda d: train_tower(RECIPES / "tower.yaml", d, data, tower_extra,
                                             StepTimer(clock, "tower").step))

    stage1 = out / "stage1-pretrain"
    run_stage("stage1-pretrain", lambda d: train(RECIPES / "pretrain.yaml", d, data, stage1_extra,
                                                 [step_estimate_callback(clock, "stage1-pretrain")]))
    run_stage("stage2-finetune", lambda d: train(RECIPES / "finetune.yaml", d, data,
                                                 ["--model_name_or_path", str(stage1), *stage2_extra],
                                                 [step_estimate_callback(clock, "stage2-finetune")]))
    stage2 = out / "stage2-finetune"

    rows = load_rows(data)
    model, processor = load_model(str(stage2))

    def run_eval(eval_dir: Path) -> dict:
        result = evaluate(model, processor, rows, settings.eval_batch_size, blank_image=True)
        save_results(result, eval_dir, model=str(stage2))
        return {"overall": result["accuracy"]["overall"]["accuracy"],
                "blank_overall": result["blank_accuracy"]["overall"]["accuracy"],
                "chance_overall": result["chance"]["overall"]["accuracy"]}

    run_stage("eval", run_eval)
    result = json.loads((out / "eval" / "results.json").read_text())
    result["records"] = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    print(markdown_table(result))

    start = time.perf_counter()
    clock.before("chat")
    print("\nSample chat (a held-out scene):")
    answer = chat(model, processor, rows[0]["images"][0], max_new_tokens=12 if settings.quick else 80)
    transcript = (f"A held-out scene (`{rows[0]['id'].rsplit('-', 1)[0]}`, the first image of the grid), "
                  f"greedy decoding:\n\n> **USER:** {CHAT_QUESTION}\n>\n> **ASSISTANT:** {answer}")
    title = "hf-llava demo: a miniature LLaVA on synthetic shapes" + (" (QUICK smoke run)" if settings.quick else "")
    paths = write_report(result, rows, out, title=title, model=str(stage2), sections=[
        ("Sample chat", transcript),
        ("Timings", _timings(infos, reused, time.perf_counter() - start)),
        ("Settings", "```json\n" + json.dumps(asdict(settings), indent=2) + "\n```"),
    ])
    from .hub import write_demo_card  # the model's card with these results (the repo's MODEL_CARD.md: hub/README.md)

    card = write_demo_card(out)
    print(f"\nreport: {paths['report']}\ngrid:   {paths['grid']}\ncard:   {card}")
    return {**infos, "chat": answer, "report": paths["report"], "grid": paths["grid"], "card": card}


def run(args: argparse.Namespace) -> int:
    from .training.precision import choose_precision

    overrides = {k: v for k, v in (("num_images", args.num_images), ("num_eval_images", args.num_eval_images))
                 if v is not None}
    precision = choose_precision(args.precision)
    settings = DemoSettings(**{**(QUICK if args.quick else {}), **overrides, "precision": precision.name})
    try:
        run_demo(args.output_dir, settings, precision.reason)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="main job: train and evaluate a miniature LLaVA on synthetic shapes (CPU)",
        description="Build the synthetic-shapes data, train a small CLIP vision tower contrastively on its captions, "
        "then stage 1 (feature alignment) and stage 2 (instruction tuning, LoRA) of that tower + SmolLM2-135M-Instruct "
        "with recipes/shapes-smollm2, evaluate on held-out scenes (with and without the image), chat once and write "
        "report.md + grid.png. It prints an estimate before each stage and warns when the whole run will pass 30 "
        "minutes (docs/demo.md has measured times per kind of CPU). Rerunning reuses finished stages.",
    )
    parser.add_argument("--output-dir", default="outputs/demo", help="everything goes here (default outputs/demo)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny random LLM and tower, a few steps (seconds; numbers meaningless)")
    parser.add_argument("--num-images", type=int, default=None,
                        help=f"training scenes (default {DemoSettings.num_images}; --quick {QUICK['num_images']})")
    parser.add_argument("--num-eval-images", type=int, default=None,
                        help=f"held-out scenes, 5 questions each (default {DemoSettings.num_eval_images})")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto (default): bf16 autocast where a recipe asks for it only if this CPU computes bf16 "
                        "natively (AVX512-BF16/AMX; elsewhere it is emulated and many times slower), else fp32; "
                        "fp32: never autocast; bf16: the recipes' own settings")
    parser.set_defaults(func=run)
