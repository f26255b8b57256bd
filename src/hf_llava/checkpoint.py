"""Write a complete checkpoint folder: weights (safetensors), processor, chat template, remote code, model card.

Every command that produces a model (build, convert, train) saves through `save_checkpoint`, so every folder that
reaches the Hub loads with `trust_remote_code=True` and explains itself in its README.md (rendered by hf_llava.hub
from the package's model_card_template.md, with the card's inputs kept in hf_llava_card.json).

Commands write through `staged_output`: a non-empty output folder is refused unless the user asked to overwrite it,
an output that is (or contains) an input always, and the files go to a staging folder next to the output that is
renamed into place only when everything was written, so a failure leaves nothing half-written.

Commands that load a model first call `check_hf_llava_checkpoint`: `HfLlavaConfig.from_pretrained` on any other folder
would fill in a default 7B text config and build a random model of that size before anything failed.
"""

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError, check_source


def clear_call_state(tokenizer) -> None:
    """Forget the truncation/padding of the last tokenizer call before saving.

    A fast tokenizer keeps the last call's `truncation=True, max_length=N` in its backend and writes it into
    tokenizer.json; the reloaded tokenizer then carries `max_length=N` (transformers warns "max_length is ignored"
    on every generate). Training calls it with the run's `max_length`, so the saved checkpoint must not keep it.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    for key in ("max_length", "stride", "truncation_strategy"):
        tokenizer.init_kwargs.pop(key, None)


def save_checkpoint(model, processor, output_dir: str | Path, state_dict: dict | None = None, **card_info) -> Path:
    """Save model + processor + remote code + README.md model card (and its inputs, hf_llava_card.json) into
    `output_dir`. `card_info`: the keyword arguments of `hf_llava.hub.card_inputs` (parts, training, ...).

    `state_dict` (optional) replaces the model's own tensors, e.g. the full weights gathered from ZeRO-3/FSDP shards.
    """
    from .hub import card_inputs, render_model_card, write_card_inputs

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, state_dict=state_dict)
    clear_call_state(processor.tokenizer)
    processor.save_pretrained(output_dir)
    inputs = card_inputs(model, **card_info)
    render_model_card(inputs).save(output_dir / "README.md")
    write_card_inputs(inputs, output_dir)
    return output_dir


def check_output_dir(out: str | Path, *, overwrite: bool, sources=(), name: str = "OUT") -> Path:
    """`out`, resolved, if a command may write it: never a local input or a folder holding one, empty unless
    `overwrite`."""
    out = Path(out).expanduser().resolve()
    for source in map(Path, sources):
        if not source.expanduser().exists():  # a Hub id
            continue
        source = source.expanduser().resolve()
        if source == out or source.is_relative_to(out):
            raise UserError(f"{name} {out}: is (or contains) the input {source}; write to another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{name} {out}: is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{name} {out}: exists and is not empty; pass --overwrite to replace it, or choose another")
    return out


@contextmanager
def staged_output(out: str | Path, *, overwrite: bool, sources=(), name: str = "OUT") -> Iterator[Path]:
    """Yield an empty staging folder next to `out`; it replaces `out` when the block succeeds, and is removed if not."""
    out = check_output_dir(out, overwrite=overwrite, sources=sources, name=name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    except OSError as error:  # a parent that is a file, a read-only folder
        raise UserError(f"{name} {out}: cannot write there ({error.strerror or error})") from error
    try:
        yield staging
        previous = out.with_name(f"{staging.name}.previous")
        if out.exists():  # only an empty folder or, with overwrite, the one being replaced
            out.rename(previous)
        staging.rename(out)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def checkpoint_kind(config: dict) -> str:
    """What a config.json describes: hf_llava, original_llava, native_llava, vision_tower, llm or unknown."""
    model_type = config.get("model_type")
    if model_type == "hf_llava":
        return "hf_llava"
    if "mm_vision_tower" in config:  # original LLaVA (LlavaLlamaForCausalLM) also says model_type "llava"
        return "original_llava"
    if model_type == "llava":
        return "native_llava"
    if "vision_config" in config or {"image_size", "patch_size"} <= config.keys():  # CLIP/SigLIP, full or vision
        return "vision_tower"
    if any(name.endswith("ForCausalLM") for name in config.get("architectures") or []):
        return "llm"
    return "unknown"


WHAT_TO_DO = {
    "original_llava": "an original LLaVA checkpoint: convert it first with `hf-llava convert --from llava {path} OUT`",
    "native_llava": "a transformers-native llava checkpoint: convert it first with "
                    "`hf-llava convert --from llava-hf {path} OUT`",
    "vision_tower": "a vision tower ({model_type}): compose a model with "
                    "`hf-llava build --vision-tower {path} --llm LLM OUT`",
    "llm": "a language model ({model_type}): compose a model with "
           "`hf-llava build --vision-tower TOWER --llm {path} OUT`",
    "unknown": "model_type {model_type!r}, not a hf_llava checkpoint",
}


def check_hf_llava_checkpoint(name_or_path: str, revision: str | None = None, what: str = "model") -> None:
    """Refuse, before anything is built, a folder or Hub repo that is not a hf_llava checkpoint, naming what it is
    and what to do with it instead."""
    from transformers.utils import cached_file

    check_source(name_or_path, what)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            is_dataset = any((path / name).is_file() for name in ("dataset_dict.json", "dataset_info.json"))
            found = "a saved dataset" if is_dataset else "no config.json"
            raise UserError(f"{what} {name_or_path}: {found}, so not a checkpoint folder; expected a hf_llava checkpoint")
    else:
        try:
            config_file = Path(cached_file(name_or_path, "config.json", revision=revision))
        except OSError as error:
            raise UserError(f"{what} {name_or_path}: cannot read its config.json ({error})") from error
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{config_file}: not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a JSON object, found a {type(config).__name__}")
    kind = checkpoint_kind(config)
    if kind != "hf_llava":
        found = WHAT_TO_DO[kind].format(path=name_or_path, model_type=config.get("model_type"))
        raise UserError(f"{what} {name_or_path}: expected a hf_llava checkpoint, found {found}")
