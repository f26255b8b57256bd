"""HfLlava vs transformers' native LlavaForConditionalGeneration, identical weights, CPU, same run.

Design notes
- One HfLlavaConfig and the equivalent LlavaConfig at a small but non-trivial size (ViT-S/16-like CLIP tower at
  224 px -> 196 image tokens; 6-layer, 512-wide Llama with a 32064 vocabulary). The native model loads our state dict
  with strict=True (same module names), and the logits and greedy tokens are checked equal before timing.
- Timing: the two models alternate within every repetition (the order flips each time) and medians are reported, so
  drift in a shared machine's load hits both alike. Prefill = one forward over image + prompt with a KV cache and
  `logits_to_keep=1` (what `generate` does first); decode tokens/s = (N - 1) / (t(generate N) - t(generate 1)).
- Memory: torch's CPU allocator has no peak counter and glibc keeps freed memory, so each model is measured in a fresh
  subprocess: peak RSS above the loaded-model baseline (psutil, sampled every 0.5 ms) during prefill + generation.
- Ratios are ours/native for throughput (tokens/s: higher is better, goal >= 0.95) and native/ours for latency, so
  every ratio >= 1 means "ours is at least as fast".
"""

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import torch

VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6, image_size=224,
              patch_size=16)
TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8,
            vocab_size=32064, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)
IMAGE_TOKEN_ID = 32000
PROMPT_TEXT_TOKENS = 48


def build(kind: str):
    """Our model (seeded random init) or the native one with the same config values (weights loaded separately)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from hf_llava import HfLlavaConfig, HfLlavaForConditionalGeneration

    common = dict(vision_feature_layer=-2, vision_feature_select_strategy="default")
    if kind == "ours":
        config = HfLlavaConfig(vision_config=dict(VISION, model_type="clip_vision_model"),
                               text_config=dict(TEXT, model_type="llama"), image_token_id=IMAGE_TOKEN_ID,
                               projector_type="mlp2x_gelu", **common)
        torch.manual_seed(0)
        return HfLlavaForConditionalGeneration(config).eval()
    config = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=LlamaConfig(**TEXT),
                         image_token_id=IMAGE_TOKEN_ID, projector_hidden_act="gelu",
                         image_seq_length=(VISION["image_size"] // VISION["patch_size"]) ** 2, **common)
    return LlavaForConditionalGeneration(config).eval()


def inputs(batch: int = 1) -> dict:
    generator = torch.Generator().manual_seed(1)
    image_tokens = (VISION["image_size"] // VISION["patch_size"]) ** 2
    text = torch.randint(3, 32000, (batch, PROMPT_TEXT_TOKENS), generator=generator)
    input_ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, image_tokens), IMAGE_TOKEN_ID),
                           text], dim=1)
    pixel_values = torch.randn(batch, 3, VISION["image_size"], VISION["image_size"], generator=generator)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values)


def prefill(model, batch_inputs):
    with torch.inference_mode():
        return model(**batch_inputs, use_cache=True, logits_to_keep=1)


def generate(model, batch_inputs, new_tokens: int):
    with torch.inference_mode():
        return model.generate(**batch_inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def check_equivalent(ours, native, batch_inputs, new_tokens: int) -> float:
    with torch.inference_mode():
        difference = (ours(**batch_inputs).logits - native(**batch_inputs).logits).abs().max().item()
    if difference > 1e-4:
        raise SystemExit(f"the two models disagree (max |logit difference| {difference:.2e}): not a fair comparison")
    if not torch.equal(generate(ours, batch_inputs, new_tokens), generate(native, batch_inputs, new_tokens)):
        raise SystemExit("greedy generations differ: not a fair comparison")
    return difference


def measure_speed(models: dict, batch: int, new_tokens: int, repeats: int) -> dict:
    batch_inputs = inputs(batch)
    results = {name: {"prefill": [], "generate_1": [], "generate_n": []} for name in models}
    for name, model in models.items():  # warm-up: first calls pay one-off costs
        prefill(model, batch_inputs)
        generate(model, batch_inputs, 2)
    for repeat in range(repeats):
        order = list(models) if repeat % 2 == 0 else list(reversed(models))
        for name in order:
            results[name]["prefill"].append(timed(prefill, models[name], batch_inputs))
            results[name]["generate_1"].append(timed(generate, models[name], batch_inputs, 1))
            results[name]["generate_n"].append(timed(generate, models[name], batch_inputs, new_tokens))
    summary = {}
    for name, times in results.items():
        generate_1 = statistics.median(times["generate_1"])
        generate_n = statistics.median(times["generate_n"])
        summary[name] = {
            "prefill_ms": 1000 * statistics.median(times["prefill"]),
            "decode_tok_s": batch * (new_tokens - 1) / (generate_n - generate_1),
        }
    return summary


def rss() -> int:
    return psutil.Process().memory_info().rss


def memory_worker(kind: str, weights: str, batch: int, new_tokens: int) -> None:
    """Child process: load one model, then print its peak RSS growth during prefill + generation (bytes)."""
    from safetensors.torch import load_file

    model = build(kind)
    model.load_state_dict(load_file(weights), strict=True)
    batch_inputs = inputs(batch)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = peak = rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    prefill(model, batch_inputs)
    generate(model, batch_inputs, new_tokens)
    done.set()
    sampler.join()
    print(json.dumps({"peak_mb": (max(peak, rss()) - baseline) / 2**20}))


def measure_memory(weights: str, batch: int, new_tokens: int, repeats: int, threads: int) -> dict:
    peaks = {"ours": [], "native": []}
    for repeat in range(repeats):
        for kind in (["ours", "native"] if repeat % 2 == 0 else ["native", "ours"]):
            command = [sys.executable, __file__, "--memory-worker", kind, "--weights", weights, "--batch", str(batch),
                       "--new-tokens", str(new_tokens), "--threads", str(threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            peaks[kind].append(json.loads(output.strip().splitlines()[-1])["peak_mb"])
    return {kind: statistics.median(values) for kind, values in peaks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise when shared)")
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--memory-worker", choices=["ours", "native"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args.memory_worker, args.weights, args.batch, args.new_tokens)
        return

    from safetensors.torch import save_file
    from transformers.utils import logging

    logging.set_verbosity_error()
    ours = build("ours")
    native = build("native")
    native.load_state_dict(ours.state_dict(), strict=True)
    difference = check_equivalent(ours, native, inputs(1), 4)
    parameters = sum(p.numel() for p in ours.parameters()) / 1e6
    print(f"HfLlava vs native Llava, identical weights ({parameters:.1f} M parameters, max |logit diff| "
          f"{difference:.1e}, same greedy tokens); torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.repeats} interleaved repeats, medians; prompt = 196 image + {PROMPT_TEXT_TOKENS + 1} text tokens, "
          f"{args.new_tokens} new tokens\n")
    rows = []
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as weights:
        save_file({name: tensor.contiguous() for name, tensor in ours.state_dict().items()}, weights.name)
        for batch in args.batches:
            speed = measure_speed({"ours": ours, "native": native}, batch, args.new_tokens, args.repeats)
            memory = measure_memory(weights.name, batch, args.new_tokens, args.memory_repeats, args.threads)
            rows.append((f"batch {batch}: prefill ms", speed["ours"]["prefill_ms"], speed["native"]["prefill_ms"],
                         speed["native"]["prefill_ms"] / speed["ours"]["prefill_ms"]))
            rows.append((f"batch {batch}: decode tokens/s", speed["ours"]["decode_tok_s"],
                         speed["native"]["decode_tok_s"], speed["ours"]["decode_tok_s"] / speed["native"]["decode_tok_s"]))
            rows.append((f"batch {batch}: peak RSS growth MB", memory["ours"], memory["native"],
                         memory["native"] / memory["ours"]))
    print(f"| {'metric':<34} | {'ours':>9} | {'native':>9} | {'ratio':>6} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    for metric, ours_value, native_value, ratio in rows:
        print(f"| {metric:<34} | {ours_value:9.1f} | {native_value:9.1f} | {ratio:6.3f} |")
    print("\nratio: native/ours for ms and MB, ours/native for tokens/s (>= 1: ours no slower, no bigger)")


if __name__ == "__main__":
    main()
