"""Versioned prompt sets for the data engine.

Design notes
- A prompt set is a directory `prompts/<version>/` of plain-text files written for this project:
  `<type>/system.txt` and few-shot pairs `<type>/example_<n>.context.txt` / `example_<n>.output.txt`, plus
  `detail_instructions.txt` (the user-side instructions for detailed-description rows, one per line).
- The version name goes into every output record and the cache key. A fingerprint (sha256 of every file) is
  stored with each cached response, so editing a prompt without bumping the version is caught, not mixed in.
- Messages sent to the teacher: system, then each few-shot pair as user (context) / assistant (output), then the
  query context as the last user message. The conversation type sees captions only; detail and complex also boxes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from . import TYPES

PROMPTS_ROOT = Path(__file__).parent / "prompts"
DEFAULT_VERSION = "v1"
# Which prompt types see the object boxes in their context (the paper: conversation uses captions only).
USES_BOXES = {"conversation": False, "detail": True, "complex": True}


@dataclass(frozen=True)
class PromptType:
    name: str
    system: str
    examples: tuple[tuple[str, str], ...]  # (context, output) few-shot pairs

    def messages(self, context: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}]
        for example_context, example_output in self.examples:
            msgs.append({"role": "user", "content": example_context})
            msgs.append({"role": "assistant", "content": example_output})
        msgs.append({"role": "user", "content": context})
        return msgs


@dataclass(frozen=True)
class PromptSet:
    version: str
    fingerprint: str
    types: dict[str, PromptType]
    detail_instructions: tuple[str, ...]

    def detail_instruction(self, seed: str) -> str:
        """The instruction for a detailed-description row, drawn at random but reproducibly per row."""
        return random.Random(f"detail-instruction:{seed}").choice(self.detail_instructions)


def _read(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"prompt file {path} is empty")
    return text


def load_prompts(version: str = DEFAULT_VERSION, root: str | Path | None = None) -> PromptSet:
    """Load `root/version/` (default root: the prompts shipped with the package)."""
    base = Path(root) if root is not None else PROMPTS_ROOT
    directory = base / version
    if not directory.is_dir():
        available = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise FileNotFoundError(f"prompt version {version!r} not found in {base} (available: {available})")
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.txt")):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    types = {}
    for name in TYPES:
        type_dir = directory / name
        examples = []
        for context_path in sorted(type_dir.glob("example_*.context.txt")):
            output_path = context_path.with_name(context_path.name.replace(".context.txt", ".output.txt"))
            if not output_path.exists():
                raise FileNotFoundError(f"few-shot example {context_path} has no {output_path.name}")
            examples.append((_read(context_path), _read(output_path)))
        types[name] = PromptType(name, _read(type_dir / "system.txt"), tuple(examples))
    instructions = tuple(
        line.strip()
        for line in (directory / "detail_instructions.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not instructions:
        raise ValueError(f"{directory / 'detail_instructions.txt'} lists no instructions")
    return PromptSet(version, digest.hexdigest()[:16], types, instructions)
