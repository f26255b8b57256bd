"""Batched greedy generation for evaluation, shared by every benchmark.

Design notes
- Input rows are canonical (`images`, `messages`); the prompt is the conversation without its trailing assistant
  turn(s), so a VQA row that carries its gold answer as the last message is asked exactly what it was built to ask.
- Left padding makes every row of a batch end at the same position, so `generate` continues each prompt as if it
  were alone (tested: batched answers equal one-by-one answers). Greedy decoding (`do_sample=False`), sampling
  knobs from the checkpoint's generation_config (temperature, top_p, ...) cleared so they neither warn nor apply.
- `blank_image` is a flat image in the processor's normalisation mean (CLIP: (122, 116, 104)), i.e. all-zero pixel
  values after preprocessing: it carries no information, not even the mean colour of the real image.
"""

from __future__ import annotations

from PIL import Image


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its trailing assistant turn(s)."""
    end = len(messages)
    while end and messages[end - 1]["role"] == "assistant":
        end -= 1
    if not end:
        raise ValueError("a row to answer needs at least one user turn before its assistant turn(s)")
    return messages[:end]


def blank_image(image: Image.Image, processor) -> Image.Image:
    """An image of the same size filled with the image processor's mean colour (zero after normalisation)."""
    mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return Image.new("RGB", image.size, tuple(round(255 * m) for m in mean))


def prompt_inputs(model, processor, rows, blank_images: bool = False):
    """The left-padded model inputs that ask `rows` their questions (images replaced by `blank_image` when asked)."""
    images = [[blank_image(im, processor) if blank_images else im for im in row["images"]] for row in rows]
    processor_kwargs = {"padding": True, "padding_side": "left"}
    if any(images):
        processor_kwargs["images"] = images
    inputs = processor.apply_chat_template(
        [prompt_messages(row["messages"]) for row in rows], add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt", processor_kwargs=processor_kwargs,
    ).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def map_prompt_batches(model, processor, rows, fn, batch_size: int = 16, blank_images: bool = False,
                       desc: str = "generating", on_batch=None) -> list:
    """`fn(inputs)` (a list, one item per row) for each left-padded prompt batch of `rows`, concatenated in order;
    in eval mode and `torch.inference_mode`, with a progress bar. Shared by generation and the probes.
    `on_batch(batch_rows, batch_results)` runs after each batch (answer files are saved batch by batch)."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    results = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(rows), desc=desc, unit="q") as bar:
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size]
                batch_results = fn(prompt_inputs(model, processor, batch, blank_images))
                if on_batch is not None:
                    on_batch(batch, batch_results)
                results += batch_results
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return results


def generate_answers(model, processor, rows, batch_size: int = 16, max_new_tokens: int = 16,
                     blank_images: bool = False, desc: str = "generating", on_batch=None) -> list[str]:
    """Greedy answers (stripped text) for `rows`, in order, `batch_size` prompts at a time, with a progress bar.

    `blank_images=True` replaces every image by `blank_image` (same size, mean grey); `on_batch(rows, answers)`
    runs after each batch."""
    pad_token_id = processor.tokenizer.pad_token_id
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                  pad_token_id=pad_token_id if pad_token_id is not None else processor.tokenizer.eos_token_id)

    def answer(inputs):
        output = model.generate(**inputs, **greedy)
        return [a.strip() for a in processor.decode_generated(output, inputs["input_ids"].shape[1])]

    return map_prompt_batches(model, processor, rows, answer, batch_size, blank_images, desc, on_batch)


def load_model(path: str, dtype: str = "float32", device: str = "cpu"):
    """(model in eval mode on `device`, processor) from a hf_llava checkpoint folder or Hub id."""
    from .. import HfLlavaForConditionalGeneration, HfLlavaProcessor
    from ..checkpoint import check_hf_llava_checkpoint

    check_hf_llava_checkpoint(path)  # anything else would first build a random default-size (7B) model
    try:
        model = HfLlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise OSError(f"cannot load a hf_llava checkpoint from {path!r}: {e}") from e
    return model.to(device).eval(), HfLlavaProcessor.from_pretrained(path)
