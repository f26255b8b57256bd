"""`hf-llava demo`: the INTERIM main job, until the training demo exists.

It shows the whole checkpoint life cycle on the embedded default: compose a LLaVA from the bundled SmolLM2-135M-Instruct
and a small randomly initialised CLIP tower (`hf_llava.build`), save it, reload it the way a user would
(`AutoModelForImageTextToText` / `AutoProcessor` with `trust_remote_code=True`), draw an image and chat one streamed
turn about it. Nothing is trained, so the answer cannot depend on the image; the output says so.
"""

import argparse
import tempfile
from pathlib import Path

DEMO_VISION = dict(
    hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, image_size=112, patch_size=16
)
QUESTION = "What shape is in this image, and what colour is it?"


def save_random_clip_tower(out_dir: str | Path, seed: int = 0, **config) -> Path:
    """A randomly initialised CLIP vision tower plus its image processor, saved like a pretrained one."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    vision_config = CLIPVisionConfig(**config)
    torch.manual_seed(seed)
    CLIPVisionModel(vision_config).save_pretrained(out_dir)
    size = vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        out_dir
    )
    return Path(out_dir)


def red_circle(size: int = 256):
    """A red disc on a white background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    margin = size // 5
    ImageDraw.Draw(image).ellipse((margin, margin, size - margin, size - margin), fill=(220, 30, 30))
    return image


def run_demo(
    out_dir: str | Path = "outputs/demo",
    llm: str = "smollm2",
    vision_config: dict | None = None,
    max_new_tokens: int = 40,
    chat_template: str = "chatml",
) -> str:
    """Build, save, reload and chat once; returns the generated answer."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, TextStreamer

    from .build import build_llava, describe, save_llava

    vision_config = vision_config or DEMO_VISION
    out_dir = Path(out_dir)
    llm_name = "SmolLM2-135M-Instruct (bundled)" if llm == "smollm2" else llm
    print("hf-llava demo (interim): compose, save, reload and chat with an UNTRAINED LLaVA")
    with tempfile.TemporaryDirectory() as tower_dir:
        save_random_clip_tower(tower_dir, **vision_config)
        print(f"[1/4] building: random CLIP tower ({vision_config['num_hidden_layers']} layers, "
              f"{vision_config['hidden_size']} wide, {vision_config['image_size']} px) + {llm_name}, "
              f"chat template {chat_template!r}")
        model, processor = build_llava(tower_dir, llm, projector_type="mlp2x_gelu", chat_template=chat_template)
    print(describe(model))
    save_llava(model, processor, out_dir)
    print(f"[2/4] saved to {out_dir}/ (safetensors + remote code)")

    model = AutoModelForImageTextToText.from_pretrained(out_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)
    print(f"[3/4] reloaded with AutoModelForImageTextToText/AutoProcessor(trust_remote_code=True): "
          f"{type(model).__name__}, {type(processor).__name__}")

    image = red_circle()
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [image]})
    print(f"[4/4] image: a red circle on white ({image.width}x{image.height} px, "
          f"{model.config.image_seq_length} image tokens); prompt {inputs['input_ids'].shape[1]} tokens")
    print(f"USER: <image>\n{QUESTION}\nASSISTANT: ", end="", flush=True)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    answer = processor.decode_generated(output, inputs["input_ids"].shape[1])[0]
    print(
        "\nNOTE: the projector (and this small vision tower) are untrained, so the answer ignores the image: it is the "
        "language model talking about noise. The training demo (synthetic shapes) replaces this interim demo."
    )
    return answer


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, llm=args.llm, max_new_tokens=args.max_new_tokens)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="interim main job: build, save, reload and chat with an untrained LLaVA",
        description="Build a LLaVA from the bundled SmolLM2 and a small random CLIP tower, save it, reload it with "
        "trust_remote_code and chat one turn about a generated image (untrained: the answer ignores the image).",
    )
    parser.add_argument("--out", default="outputs/demo", help="where to save the checkpoint (default outputs/demo)")
    parser.add_argument("--llm", default="smollm2", help="LLM (Hub id or path; default: the bundled SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.set_defaults(func=run)
