"""Inference: one streaming, batching generation core (`Engine`) behind `hf-llava chat`, `web` and `serve`.

`engine.py` batches and streams, `messages.py` turns canonical or OpenAI messages into a checked prompt; the
front ends (`chat.py`, `web.py`, `serve.py`) only translate their protocol into engine calls. See
docs/inference.md.
"""

from .engine import Engine, Generation, Prompt, QueueFullError, SamplingParams
from .messages import ImageSources, InputError, canonical_messages, load_image

__all__ = ["Engine", "Generation", "ImageSources", "InputError", "Prompt", "QueueFullError", "SamplingParams",
           "canonical_messages", "load_image"]
