"""Saved checkpoints load through every Auto class with trust_remote_code where hf_llava is not installed."""

import json

import torch

from hf_llava.testing import random_image, run_without_hf_llava, tiny_llava

LOAD_AND_GENERATE = '''
import json, sys, torch
from PIL import Image
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,
                          AutoProcessor)
path = sys.argv[1]
report = {"config": type(AutoConfig.from_pretrained(path, trust_remote_code=True)).__name__}
for auto in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
    report[auto.__name__] = type(auto.from_pretrained(path, trust_remote_code=True)).__name__
model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
report["processor"] = type(processor).__name__
report["module"] = type(model).__module__
conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt", processor_kwargs={"images": [Image.open(sys.argv[2])]})
report["input_ids"] = inputs["input_ids"][0].tolist()
report["tokens"] = model.generate(**inputs, max_new_tokens=10, do_sample=False)[0].tolist()
print(json.dumps(report))
'''


def test_checkpoint_loads_with_remote_code_and_generates_the_same(tmp_path):
    model, processor = tiny_llava(seed=7)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    image_path = tmp_path / "image.png"
    random_image(3).save(image_path)
    for name in ("configuration_hf_llava.py", "modeling_hf_llava.py", "processing_hf_llava.py",
                 "model.safetensors", "chat_template.jinja"):
        assert (tmp_path / "ckpt" / name).exists(), name
    assert set(json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoProcessor"}

    result = run_without_hf_llava(LOAD_AND_GENERATE, str(tmp_path / "ckpt"), str(image_path))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")  # really the copied remote code
    assert report["config"] == "HfLlavaConfig"
    assert report["AutoModel"] == "HfLlavaModel"
    assert report["AutoModelForCausalLM"] == report["AutoModelForImageTextToText"] == "HfLlavaForConditionalGeneration"
    assert report["processor"] == "HfLlavaProcessor"

    from PIL import Image

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [Image.open(image_path)]})
    assert report["input_ids"] == inputs["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=10, do_sample=False)[0].tolist()
    assert report["tokens"] == expected


def test_in_process_auto_classes_need_no_remote_code(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = tiny_llava()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)  # hf_llava registered itself on import
    assert type(loaded).__module__ == "hf_llava.modeling_hf_llava"
    assert type(AutoProcessor.from_pretrained(tmp_path)).__name__ == "HfLlavaProcessor"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_pushed_checkpoint_loads_from_the_hub_with_remote_code(tmp_path, hub_server):
    model, processor = tiny_llava(seed=8)
    repo_id = f"{hub_server.user}/tiny-hf-llava-remote"
    model.push_to_hub(repo_id, token=hub_server.token)
    processor.push_to_hub(repo_id, token=hub_server.token)
    image_path = tmp_path / "image.png"
    random_image(4).save(image_path)
    report = json.loads(run_without_hf_llava(LOAD_AND_GENERATE, repo_id, str(image_path)).stdout.splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")
    assert report["processor"] == "HfLlavaProcessor"

    from PIL import Image

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [Image.open(image_path)]})
    with torch.no_grad():
        assert report["tokens"] == model.generate(**inputs, max_new_tokens=10, do_sample=False)[0].tolist()
