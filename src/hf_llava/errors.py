"""User errors: bad input that a command reports in a line or two, never as a traceback.

Design notes
- A `UserError` is raised where the bad input is recognised, with a message that names the file, record, flag or key
  at fault and what to do about it. Every entry point (`hf-llava`, recipes/sft.py, the contrastive tower script,
  the datasets_scripts/ builders) runs its body through `run_command`, which prints it as `PROG: error: MESSAGE`
  and exits with code 2 (argparse's code for bad usage); `--debug` or `HF_LLAVA_DEBUG=1` shows its traceback too.
- Anything that is not a `UserError` is a bug in hf-llava (or its libraries) and keeps its traceback, so catch-all
  handlers must not turn unexpected exceptions into friendly one-liners.
- `UserError` is a `ValueError`: library callers that already catch bad values (and the earlier error types now
  derived from it, `ConversionError` and `BadRecordError`) keep working unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "HF_LLAVA_DEBUG"


class UserError(ValueError):
    """Bad input from the user; the message says what is wrong with which file/record/flag/key and what to do."""


def debug_requested() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_command(prog: str, body: Callable[[], object], debug: bool = False) -> int:
    """Run an entry point's `body`; returns its exit code: what it returns if that is an int, else 0. A `UserError`
    is printed as `PROG: error: MESSAGE` and gives 2, unless `debug` (or HF_LLAVA_DEBUG) lets it propagate with its
    traceback. Other exceptions always propagate: they are bugs, and their traceback is what a report needs."""
    try:
        code = body()
    except UserError as error:
        if debug or debug_requested():
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


def take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """`argv` without a bare `--debug`, and whether there was one. A `--debug VALUE` is left alone: scripts parsed by
    TRL also have transformers' `--debug OPTIONS` (TrainingArguments.debug), which always takes a value."""
    rest = [arg for k, arg in enumerate(argv)
            if not (arg == "--debug" and (k + 1 == len(argv) or argv[k + 1].startswith("-")))]
    return rest, len(rest) < len(argv)


def script_main(prog: str, main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """A script's `if __name__ == "__main__":` body: `main(argv)` (default sys.argv[1:], less `--debug`) through
    `run_command`, then exit with its code."""
    argv, debug = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    sys.exit(run_command(prog, lambda: main(argv), debug))


def check_source(name_or_path: str, flag: str) -> None:
    """Refuse a `name_or_path` that is neither an existing folder nor a possible Hub id.

    transformers treats a path that does not exist as a Hub id and reports it as "Repo id must be in the form ...",
    which hides the real problem (a typo in a path).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise UserError(f"{flag} {name_or_path}: is a file, expected a checkpoint folder (or a Hub id)")
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        raise UserError(f"{flag} {name_or_path}: no such folder (and not a Hub id either)") from None



def at_least(minimum: float, kind: type = int):
    """An argparse `type` refusing values below `minimum`, so argparse names the flag and exits with code 2."""

    def parse(text: str):
        value = kind(text)  # a ValueError becomes argparse's "invalid int value: ..."
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse
