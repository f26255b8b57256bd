"""`hf-llava web`: a Gradio 6 chat demo over the generation core (the `serve` extra).

Design notes
- `gr.ChatInterface` in multimodal mode gives the pieces the original demo had by hand: a messages-format Chatbot,
  a textbox that takes an image, streamed answers (the handler yields the growing text), stop, regenerate, clear,
  examples, and a parameters accordion.
- Concurrency: the interface lets `max_batch_size` events run at once and each handler submits to the shared
  engine, so simultaneous users land in the same left-padded `generate` call.
- As in the original UI, an image starts a new conversation: the model sees the history from the last user turn
  that carries an image (the screen keeps the earlier turns for reading).
- Refusals from the core (`InputError`: an image that does not decode, a prompt over the context) become
  `gr.Error`, shown to the user; the app goes on.
- Examples default to a few held-out synthetic-shapes scenes generated on the spot (the demo's task); `--examples`
  reads them from a built shapes folder instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..data.schema import assistant_message, image_block, text_block
from .engine import Engine, add_bind_arguments, add_model_arguments
from .messages import ImageSources, InputError

TITLE = "hf-llava"
EXAMPLES_PER_TYPE = 1


def _parts(content) -> tuple[list[str], list[str]]:
    """(texts, image paths) of one Gradio chat message's content: a string, a file dict, or a list of those."""
    texts, paths = [], []
    for item in content if isinstance(content, (list, tuple)) else [content]:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            if item.get("type") == "text":
                texts.append(item.get("text") or "")
            path = item.get("path") or (item.get("file") or {}).get("path")
            if path:
                paths.append(path)
    return texts, paths


def conversation(history: list[dict], message: dict) -> tuple[list[dict], list[str]]:
    """Canonical messages and image paths for the model from Gradio's history + the new multimodal message,
    starting at the last user turn that carries an image."""
    turns = [(turn["role"], *_parts(turn["content"])) for turn in history]
    turns.append(("user", [message.get("text") or ""], list(message.get("files") or [])))
    start = max((k for k, (role, _, paths) in enumerate(turns) if role == "user" and paths), default=0)
    messages, images = [], []
    for role, texts, paths in turns[start:]:
        text = "\n".join(t for t in texts if t)
        if role == "assistant":
            messages.append(assistant_message(text))
            continue
        images += paths
        blocks = [image_block() for _ in paths] + ([text_block(text)] if text else [])
        if messages and messages[-1]["role"] == "user":  # back-to-back user turns (one went unanswered) merge
            messages[-1]["content"] += blocks
        elif blocks:
            messages.append({"role": role, "content": blocks})
    return messages, images


def shapes_examples(data_dir: str | None, folder: Path) -> list[dict]:
    """Multimodal examples ({text, files}) from held-out synthetic-shapes scenes, their images saved in `folder`."""
    from ..eval.shapes import load_rows

    rows = load_rows(data_dir, per_type=EXAMPLES_PER_TYPE) if data_dir else load_rows(num_images=1)
    examples = []
    for k, row in enumerate(rows):
        path = folder / f"example-{k}.png"
        row["images"][0].save(path)
        examples.append({"text": row["question"], "files": [str(path)]})
    return examples


def build_app(engine: Engine, examples: list[dict] | None = None, temperature: float = 0.2,
              max_new_tokens: int = 512, title: str = TITLE):
    """The Gradio Blocks app (not launched); its chat endpoint is `/chat` for gradio_client."""
    import gradio as gr

    def respond(message: dict, history: list[dict], temperature: float, top_p: float, max_new_tokens: float):
        messages, images = conversation(history, message)
        try:
            generation = engine.generate(messages, images, ImageSources(local_files=True), temperature=temperature,
                                         top_p=top_p, max_new_tokens=int(max_new_tokens))
        except InputError as e:
            raise gr.Error(str(e)) from e
        try:
            for _ in generation:
                yield generation.text
            yield generation.text  # also when the answer is empty, so the turn still shows
        finally:
            generation.cancel()  # the user pressed stop or left: free the batch row

    context = engine.context_length or 4096
    max_new_tokens = min(max_new_tokens, context - 1)
    return gr.ChatInterface(
        respond, multimodal=True, title=title, api_name="chat", analytics_enabled=False,
        chatbot=gr.Chatbot(height=480, label="hf-llava"),
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="single", sources=["upload"],
                                     placeholder="Attach an image (a new image starts a new conversation) and ask"),
        additional_inputs=[
            gr.Slider(0, 2, value=temperature, step=0.05, label="Temperature (0 = greedy)"),
            gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top p"),
            gr.Slider(1, context - 1, value=max_new_tokens, step=1, label="Max new tokens"),
        ],
        additional_inputs_accordion=gr.Accordion("Parameters", open=False),
        # with additional inputs, each example also carries their values
        examples=[[example, temperature, 1.0, max_new_tokens] for example in examples or []] or None,
        cache_examples=False, concurrency_limit=engine.max_batch_size,
    )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("web", help="Gradio chat demo (image + text, streamed answers)",
                              description="A Gradio web demo of a hf_llava checkpoint. "
                                          "Needs the serve extra: pip install 'hf-llava[serve]'.")
    add_model_arguments(p)
    add_bind_arguments(p, port=7860)
    p.add_argument("--examples", metavar="DATASET_DIR",
                   help="a built synthetic-shapes folder to take example questions from (default: generated scenes)")
    p.add_argument("--max-batch-size", type=int, default=8, help="users answered in one generate call")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.set_defaults(func=run)


def run(args) -> int:
    engine = Engine.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                    max_batch_size=args.max_batch_size)
    with tempfile.TemporaryDirectory(prefix="hf_llava_web_") as folder:
        app = build_app(engine, shapes_examples(args.examples, Path(folder)), args.temperature, args.max_new_tokens,
                        title=f"{TITLE}: {Path(args.model.rstrip('/')).name}")
        try:
            app.queue(default_concurrency_limit=args.max_batch_size).launch(
                server_name=args.host, server_port=args.port, allowed_paths=[folder], show_error=True)
        finally:
            engine.close()
    return 0
