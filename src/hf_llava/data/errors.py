"""Bad input handling shared by every importer and builder.

A bad record is either a clear error (`BadRecordError`, naming the source file, the record and the problem) or,
when the caller opted in with `--skip-bad`, a counted skip: `SkipReport` keeps per-problem counts and a few
examples, logs each skip, and its summary goes into the build report and the dataset card. Nothing is dropped
without being counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from ..errors import UserError

logger = logging.getLogger(__name__)


class BadRecordError(UserError):
    """A record that cannot be converted. `kind` is a short stable label used to count skips."""

    def __init__(self, source: str, record: str, problem: str, kind: str = "invalid record"):
        self.source, self.record, self.problem, self.kind = str(source), str(record), problem, kind
        super().__init__(f"{self.source}: record {self.record}: {problem}")


@dataclass
class SkipReport:
    """Raise bad records (skip_bad=False) or count and log them (skip_bad=True)."""

    skip_bad: bool = False
    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def bad(self, error: BadRecordError) -> None:
        if not self.skip_bad:
            raise error
        self.counts[error.kind] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))
        logger.warning("skipped: %s", error)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"{self.total} record(s) skipped ({kinds})"

    def to_dict(self) -> dict:
        return {"skipped": self.total, "by_problem": dict(self.counts), "examples": list(self.examples)}
