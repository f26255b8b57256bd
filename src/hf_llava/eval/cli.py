"""`hf-llava eval BENCHMARK`: one sub-subcommand per benchmark, plus `probe`: linear probes at the answer position of
the shapes questions (what a model knows but does not say).

Each module in BENCHMARK_MODULES exposes `add_parser(benchmarks_subparsers)`; `add_answer_arguments` gives them the
same answer flags (--model or --answers, --output-dir, --limit, ...) and `answers_from_args` the same behaviour
(generate the answer file resumably, or read the given one). Heavy imports (torch, transformers, datasets) stay
inside the functions so `hf-llava --help` stays fast.
"""

import argparse
from importlib import import_module

from ..errors import at_least

BENCHMARK_MODULES: list[str] = ["hf_llava.eval.llava_bench", "hf_llava.eval.scienceqa", "hf_llava.eval.pope"]
ANSWER_FILE = "answers.jsonl"


def add_answer_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int = 128,
                         output_dir: str = "outputs/eval", required: bool = True) -> None:
    """--model / --answers (one of them, `required` unless the benchmark has another mode), --model-id,
    --output-dir, --limit, --batch-size, --max-new-tokens."""
    group = parser.add_argument_group("answers")
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument("--model", help="hf_llava checkpoint folder or Hub id: answer the questions with it (greedy; "
                                        f"written to OUT/{ANSWER_FILE}, resumed when rerun)")
    source.add_argument("--answers", metavar="FILE",
                        help="score this answer file instead of generating (JSON Lines with question_id and text: "
                             "the original LLaVA scripts', lmms-eval's or a server's)")
    group.add_argument("--model-id", help="model_id written into the answer file (default: the --model path's name)")
    group.add_argument("--output-dir", default=output_dir, help="OUT (default: %(default)s)")
    group.add_argument("--limit", type=at_least(1), help="only the first N questions (quick runs)")
    group.add_argument("--batch-size", type=at_least(1), default=16, help="generation batch (default: %(default)s)")
    group.add_argument("--max-new-tokens", type=at_least(1), default=max_new_tokens,
                       help="answer length cap (default: %(default)s)")


def answers_from_args(args: argparse.Namespace, rows) -> dict[str, dict]:
    """{question_id: answer record}: the --answers file, or the --model's answers to `rows` (the first --limit),
    generated into OUT/answers.jsonl (kept and extended when rerun)."""
    from pathlib import Path

    from .answers import generate_answer_file, read_answer_file

    if args.answers:
        return read_answer_file(args.answers)
    from .generate import load_model

    model_id = args.model_id or Path(args.model.rstrip("/")).name
    records = generate_answer_file(None, None, rows, Path(args.output_dir) / ANSWER_FILE, model_id=model_id,
                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, limit=args.limit,
                                   load=lambda: load_model(args.model))
    return {str(record["question_id"]): record for record in records}


def run_shapes(args: argparse.Namespace) -> int:
    from .generate import load_model
    from .report import write_report
    from .shapes import evaluate, load_rows, markdown_table, save_results

    rows = load_rows(args.data, None if args.data else args.num_images, args.image_size, args.seed)
    model, processor = load_model(args.model)
    result = evaluate(model, processor, rows, args.batch_size, args.max_new_tokens, blank_image=args.blank_image)
    settings = {"data": args.data, "num_images": None if args.data else args.num_images,
                "blank_image": args.blank_image, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
    paths = save_results(result, args.output_dir, model=args.model, settings=settings)
    report = write_report(result, rows, args.output_dir, model=args.model)
    print(markdown_table(result))
    print(f"\nwritten to {args.output_dir}/: {', '.join(p.name for p in [*paths.values(), *report.values()])}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .generate import load_model
    from .probe import markdown_table, probe
    from .shapes import load_rows

    test_rows = load_rows(args.data)
    train_rows = load_rows(args.data, split="train", per_type=args.train_questions)
    model, processor = load_model(args.model)
    result = probe(model, processor, train_rows, test_rows, args.layers, args.batch_size, args.blank_image)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "probe.json").write_text(json.dumps({"model": args.model, "probes": result}, indent=2) + "\n")
    table = markdown_table(result)
    (output_dir / "probe.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten to {output_dir}/: probe.json (accuracy per type and layer), probe.md")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint or score answer files (LLaVA-Bench, ScienceQA, "
                                               "POPE, shapes VQA, answer-position probes)",
                                   description="Evaluate a hf_llava checkpoint on a benchmark, or score existing "
                                   "answer files. Each benchmark writes results.json, results.md and per-question "
                                   "records to --output-dir; see docs/evaluation.md.")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module_name in BENCHMARK_MODULES:
        import_module(module_name).add_parser(benchmarks)
    shapes = benchmarks.add_parser(
        "shapes", help="held-out synthetic-shapes VQA: exact-match accuracy per question type",
        description="Ask a checkpoint the held-out synthetic-shapes questions (colour, shape, count, position, "
        "existence) and score its short answers by exact match. Writes predictions.jsonl, results.json, "
        "results.md, report.md and grid.png to --output-dir.",
    )
    shapes.add_argument("--model", required=True, help="hf_llava checkpoint folder or Hub id")
    source = shapes.add_mutually_exclusive_group()
    source.add_argument("--data", help="a datasets_scripts/synthetic_shapes.py output folder (or its vqa/ folder)")
    source.add_argument("--num-images", type=int, default=50,
                        help="without --data: generate this many held-out scenes, 5 questions each (default 50, "
                             "as the demo; SmolLM2-sized models answer ~2 questions/s on 2 CPU cores)")
    shapes.add_argument("--image-size", type=int, default=64, help="generated scenes: image side (default 64)")
    shapes.add_argument("--seed", type=int, default=0, help="generated scenes: dataset seed (default 0)")
    shapes.add_argument("--blank-image", action="store_true",
                        help="also answer every question with a blank (mean-grey) image, to show that the answers "
                             "depend on the picture")
    shapes.add_argument("--output-dir", default="outputs/eval-shapes", help="default: outputs/eval-shapes")
    shapes.add_argument("--batch-size", type=int, default=16)
    shapes.add_argument("--max-new-tokens", type=int, default=10)
    shapes.set_defaults(func=run_shapes)

    probe = benchmarks.add_parser(
        "probe", help="linear probes at the answer position: does the model know answers it does not give?",
        description="Fit a logistic-regression probe per question type and layer on the hidden state where a "
        "checkpoint starts its answer (training-scene questions of the synthetic-shapes vqa config) and score it on "
        "the held-out questions. A probe well above the generated answers' accuracy (hf-llava eval shapes) means the "
        "model has the information but has not learned to say it. Writes probe.json and probe.md to --output-dir.",
    )
    probe.add_argument("--model", required=True, help="hf_llava checkpoint folder or Hub id")
    probe.add_argument("--data", required=True,
                       help="a datasets_scripts/synthetic_shapes.py output folder with the vqa config's train and "
                            "test splits (e.g. outputs/demo/data)")
    probe.add_argument("--train-questions", type=int, default=1000,
                       help="training questions per type to fit each probe on (default 1000; SmolLM2 runs "
                            "~12 questions/s on 2 CPU cores: the demo's 5 types take ~8 min, twice with "
                            "--blank-image)")
    probe.add_argument("--layers", type=int, nargs="+", default=None,
                       help="hidden-state layers to probe, 0 = embeddings (default: every 4th and the last)")
    probe.add_argument("--blank-image", action="store_true",
                       help="also probe with blank (mean-grey) images: a probe that still beats chance reads the "
                            "question text, not the picture")
    probe.add_argument("--output-dir", default="outputs/eval-probe", help="default: outputs/eval-probe")
    probe.add_argument("--batch-size", type=int, default=16)
    probe.set_defaults(func=run_probe)
