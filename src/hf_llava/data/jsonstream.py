"""Stream records from a JSON array file or a JSON Lines file without loading the whole file.

LLaVA's instruction files are single JSON arrays up to ~1 GB (the 665K mix); `json.load` would hold the text and
every parsed object at once. `iter_json_records` reads 1 MiB chunks and decodes one array element at a time with
`json.JSONDecoder.raw_decode`, so memory stays at one chunk plus one record. A file whose first non-blank character
is not `[` is read as JSON Lines. Malformed input (or text that is not UTF-8) raises a `UserError` naming the file
and the record index / line. One array record may be at most `_MAX_RECORD` long (so that a malformed 1 GB file is
not read whole into memory); a longer one is refused with that cap named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from ..errors import UserError

_CHUNK = 1 << 20
_MAX_RECORD = 64 << 20
_WS = " \t\r\n"


def _array_records(f, path) -> Iterator[dict]:
    decoder = json.JSONDecoder()
    buf, pos, index = "", 0, 0

    def fill() -> bool:
        nonlocal buf, pos
        try:
            chunk = f.read(_CHUNK)
        except UnicodeDecodeError as e:
            fail(f"not UTF-8 text ({e.reason} at byte {e.start} of a {_CHUNK >> 20} MiB chunk); save it as UTF-8")
        buf, pos = buf[pos:] + chunk, 0
        return bool(chunk)

    def skip_ws():
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf) or not fill():
                return

    def fail(problem):
        raise UserError(f"{path}: malformed JSON at record {index}: {problem}")

    skip_ws()
    pos += 1  # the '[' checked by the caller
    skip_ws()
    if buf[pos:pos + 1] == "]":
        return
    while True:
        skip_ws()
        if pos >= len(buf):
            fail("unexpected end of file")
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                # probably a record cut by the chunk boundary: read more and retry, unless the record would be
                # implausibly large (then it is malformed, and we must not read the rest of a 1 GB file into memory)
                if len(buf) - pos < _MAX_RECORD and fill():
                    continue
                if len(buf) - pos >= _MAX_RECORD:
                    fail(f"{e.msg} within its first {_MAX_RECORD >> 20} MiB, the cap on one record: a larger record "
                         "is not read (split it, or convert the file to JSON Lines, which has no cap)")
                fail(e.msg)
            # a record ending exactly at the buffer end could be a truncated number: make sure a delimiter follows
            if end == len(buf) and fill():
                continue
            break
        pos = end
        yield value
        index += 1
        skip_ws()
        sep = buf[pos:pos + 1]
        pos += 1
        if sep == "]":
            skip_ws()
            if pos < len(buf):
                fail(f"unexpected data after the closing ']': {buf[pos:pos + 20]!r}")
            return
        if sep != ",":
            fail(f"expected ',' or ']' after the record, found {sep or 'end of file'!r}")


def _jsonl_records(f, path) -> Iterator[dict]:
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: malformed JSON on line {lineno}: {e.msg} (read as JSON Lines, one "
                                    "record per line, because the file does not start with '[')") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: line {lineno + 1} is not UTF-8 text ({e.reason}); save the file as UTF-8") from None


def iter_json_records(path: str | os.PathLike) -> Iterator:
    """Yield the elements of a top-level JSON array, or the lines of a JSON Lines file, one at a time."""
    with open(path, encoding="utf-8") as f:
        try:
            head = f.read(4096).lstrip(_WS + "\ufeff")
        except UnicodeDecodeError as e:  # in the file's first decoded block, so e.start is a file offset
            with open(path, "rb") as raw:
                line = raw.read(e.start).count(b"\n") + 1
            raise UserError(f"{path}: line {line} is not UTF-8 text ({e.reason}); save the file as UTF-8") from None
        f.seek(0)
        if head.startswith("["):
            if f.read(1) != "\ufeff":  # skip a BOM, else rewind
                f.seek(0)
            yield from _array_records(f, path)
        else:
            yield from _jsonl_records(f, path)
