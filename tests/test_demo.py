"""The interim main job (`hf-llava demo`) end to end on a tiny LLM: build, save, reload, stream one answer."""

from tiny_checkpoints import save_llama

from hf_llava.demo import red_circle, run_demo
from hf_llava.testing import VISION_CONFIGS


def test_demo_builds_saves_reloads_and_chats(tmp_path, capsys):
    llm = save_llama(tmp_path / "llm")
    answer = run_demo(tmp_path / "demo", llm=str(llm), vision_config=VISION_CONFIGS["clip_vision_model"],
                      max_new_tokens=6, chat_template="vicuna_v1")
    out = capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "modeling_hf_llava.py", "processor_config.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert "reloaded with AutoModelForImageTextToText" in out and "HfLlavaForConditionalGeneration" in out
    assert "untrained" in out and "ignores the image" in out
    assert answer and answer in out  # streamed, then returned


def test_red_circle_is_red_in_the_middle_and_white_at_the_corner():
    image = red_circle(64)
    assert image.getpixel((32, 32)) == (220, 30, 30)
    assert image.getpixel((0, 0)) == (255, 255, 255)
