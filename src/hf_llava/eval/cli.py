"""`hf-llava eval BENCHMARK`: one sub-subcommand per benchmark (shapes now; llava-bench and scienceqa later), plus
`probe`: linear probes at the answer position of the shapes questions (what a model knows but does not say).

Heavy imports (torch, transformers, datasets) stay inside the functions so `hf-llava --help` stays fast.
"""

import argparse


def run_shapes(args: argparse.Namespace) -> int:
    from .generate import load_model
    from .report import write_report
    from .shapes import evaluate, load_rows, markdown_table, save_results

    rows = load_rows(args.data, None if args.data else args.num_images, args.image_size, args.seed)
    model, processor = load_model(args.model)
    result = evaluate(model, processor, rows, args.batch_size, args.max_new_tokens, blank_image=args.blank_image)
    paths = save_results(result, args.output_dir, model=args.model)
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
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (shapes VQA, answer-position probes)",
                                   description="Evaluate a hf_llava checkpoint on a benchmark.")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
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
