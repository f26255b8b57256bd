"""`hf-llava` command line: one subcommand per module.

Each module listed in SUBCOMMANDS exposes `add_parser(subparsers)`, which registers its subcommand and sets
`func(args) -> int | None` as the parser default. Those modules keep heavy imports (torch, transformers) inside the
function, so `hf-llava --help` stays fast.
"""

import argparse
import sys
from importlib import import_module

SUBCOMMANDS = [
    "hf_llava.convert",
    "hf_llava.build",
    "hf_llava.demo",
    "hf_llava.training.cli",
    "hf_llava.datagen.cli",
    "hf_llava.eval.cli",
    "hf_llava.inference.chat",
    "hf_llava.inference.serve",
    "hf_llava.inference.web",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-llava",
        description="LLaVA (Visual Instruction Tuning) on the HuggingFace stack: build, convert, train, generate data, "
        "chat, serve and evaluate.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a `UserError` ends it with its message and exit code 2 (see `hf_llava.errors`)."""
    from .errors import DEBUG_ENV, run_command

    parser = build_parser()
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of user errors too (as does {DEBUG_ENV}=1)")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(f"hf-llava {args.command}", lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
