"""`hf-llava chat`: a terminal conversation with a checkpoint, answers printed as they are generated.

Design notes
- As the original CLI: one image per conversation, attached to the first user turn; a new image (`/image PATH`)
  starts a new conversation; defaults temperature 0.2, max_new_tokens 512.
- The history is canonical messages, so `/save FILE` writes a row in the project's schema (`id`, `images` as file
  paths, `messages`) that the data loaders and `hf-llava eval` read back.
- A request the core refuses (unreadable image, prompt over the context) prints the reason; that turn is dropped
  and the session goes on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data.schema import assistant_message, image_block, text_block
from .engine import Engine, SamplingParams, add_model_arguments
from .messages import ImageSources, InputError, load_image

HELP = ("commands: /image PATH (new conversation about that image), /reset (same image, empty history), "
        "/save FILE, /exit (or EOF)")


class ChatSession:
    """The conversation state and one method per command; `ask` streams the answer to `out`."""

    def __init__(self, engine: Engine, params: SamplingParams, out=sys.stdout):
        self.engine, self.params, self.out = engine, params, out
        self.reset()

    def reset(self, image_path: str | None = None, image=None) -> None:
        self.messages: list[dict] = []
        self.image_path, self.image = image_path, image

    def set_image(self, path: str) -> None:
        """Start a new conversation about the image at `path` (InputError if it cannot be read)."""
        self.reset(path, load_image(path, f"image {path}", ImageSources(local_files=True)))

    def ask(self, text: str) -> str:
        """Stream the answer to `text` (with the history) to `out`; the turn joins the history once answered."""
        content = [text_block(text)]
        if self.image is not None and not self.messages:
            content.insert(0, image_block())
        messages = [*self.messages, {"role": "user", "content": content}]
        prompt = self.engine.prepare(messages, [self.image] if self.image is not None else [])
        generation = self.engine.submit(prompt, self.params)
        for delta in generation:
            self.out.write(delta)
            self.out.flush()
        self.messages = [*messages, assistant_message(generation.text)]
        return generation.text

    def save(self, path: str) -> None:
        row = {"id": Path(path).stem, "images": [self.image_path] if self.image_path else [],
               "messages": self.messages}
        Path(path).write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a checkpoint in the terminal (streamed, multi-turn)",
                              description="Terminal chat with a hf_llava checkpoint. " + HELP)
    add_model_arguments(p)
    p.add_argument("--image", help="image for the first conversation")
    p.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (default: 0.2, as the original)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.set_defaults(func=run)


def run(args) -> int:
    engine = Engine.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_batch_size=1)
    try:
        session = ChatSession(engine, SamplingParams(args.max_new_tokens, args.temperature, args.top_p))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"hf-llava chat: {args.model} ({HELP})", flush=True)
    if args.image:
        command(session, f"/image {args.image}")
    try:
        while True:
            try:
                line = input("USER: ").strip()
            except EOFError:
                print()
                return 0
            if line == "/exit":
                return 0
            if line.startswith("/"):
                command(session, line)
            elif line:
                print("ASSISTANT: ", end="", flush=True)
                try:
                    session.ask(line)
                except InputError as e:
                    print(f"[error] {e}")
                    continue
                print(flush=True)
    finally:
        engine.close()


def command(session: ChatSession, line: str) -> None:
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    try:
        if name == "/image" and argument:
            session.set_image(argument)
            print(f"[new conversation about {argument}]")
        elif name == "/reset":
            session.reset(session.image_path, session.image)
            print("[conversation cleared]")
        elif name == "/save" and argument:
            session.save(argument)
            print(f"[saved {len(session.messages)} messages to {argument}]")
        else:
            print(f"[unknown command {line!r}; {HELP}]")
    except InputError as e:
        print(f"[error] {e}")
    except OSError as e:
        print(f"[error] cannot write {argument}: {e.strerror or e}")
