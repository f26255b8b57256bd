"""User errors: bad input that a command reports in a line or two, never as a traceback.

Design notes
- A `UserError` is raised where the bad input is recognised, with a message that names the file, record, flag or key
  at fault and what to do about it. `hf-llava`'s `main()` prints it and exits with code 2 (argparse's code for bad
  usage); `--debug` or `HF_LLAVA_DEBUG=1` shows its traceback as well.
- Anything that is not a `UserError` is a bug in hf-llava (or its libraries) and keeps its traceback, so catch-all
  handlers must not turn unexpected exceptions into friendly one-liners.
- `UserError` is a `ValueError`: library callers that already catch bad values (and the earlier error types now
  derived from it, `ConversionError` and `BadRecordError`) keep working unchanged.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEBUG_ENV = "HF_LLAVA_DEBUG"


class UserError(ValueError):
    """Bad input from the user; the message says what is wrong with which file/record/flag/key and what to do."""


def debug_requested() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


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
