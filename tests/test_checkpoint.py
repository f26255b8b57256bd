"""save_checkpoint: a complete, self-describing folder; staged_output: outputs that are written whole or not at all;
check_hf_llava_checkpoint: any other folder is named for what it is before a model is built from it."""

import json

import pytest
from huggingface_hub import ModelCard

from hf_llava.checkpoint import check_hf_llava_checkpoint, save_checkpoint, staged_output
from hf_llava.errors import UserError
from hf_llava.testing import tiny_llava


def test_checkpoint_folder_has_weights_code_and_a_rendered_card(tmp_path):
    model, processor = tiny_llava()
    out = save_checkpoint(model, processor, tmp_path / "ckpt", repo_id="me/tiny", llm="HuggingFaceTB/SmolLM2-135M",
                          vision_tower=str(tmp_path), training="2 steps on shapes.", chat_template="vicuna_v1")
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja",
            "configuration_hf_llava.py", "modeling_hf_llava.py", "processing_hf_llava.py", "README.md"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)  # no pickles
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model == ["HuggingFaceTB/SmolLM2-135M"]  # local paths are not Hub base models
    assert "hf-llava" in card.data.tags
    text = card.text
    assert 'from_pretrained("me/tiny", trust_remote_code=True)' in text
    assert f"{model.config.image_seq_length} tokens per image" in text
    assert "`mlp2x_gelu`" in text and "2 steps on shapes." in text
    assert "{{" not in text  # every placeholder rendered


def test_checkpoint_does_not_keep_the_last_calls_truncation(tmp_path):
    # the collator tokenises with truncation=True, max_length=...; before the fix that length landed in
    # tokenizer.json and every later load carried max_length (and generate warned "max_length is ignored")
    import json

    from hf_llava import HfLlavaProcessor

    model, processor = tiny_llava()
    processor.tokenizer("some training text", truncation=True, max_length=7)
    out = save_checkpoint(model, processor, tmp_path / "ckpt")
    assert json.loads((out / "tokenizer.json").read_text())["truncation"] is None
    assert "max_length" not in json.loads((out / "tokenizer_config.json").read_text())
    reloaded = HfLlavaProcessor.from_pretrained(out).tokenizer
    assert len(reloaded("word " * 50)["input_ids"]) >= 50  # nothing truncates a plain call


def test_staged_output_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "trained"
    out.mkdir()
    (out / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(UserError, match=f"OUT {out}: exists and is not empty; pass --overwrite"):
        with staged_output(out, overwrite=False):
            pass
    with staged_output(out, overwrite=True) as staging:
        (staging / "model.safetensors").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # the stale index is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained"]  # no staging or previous folder left


def test_staged_output_leaves_the_old_folder_when_the_write_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_output(out, overwrite=True) as staging:
            (staging / "half.safetensors").write_text("half")
            raise RuntimeError("disk full")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("out_of", [lambda src: src, lambda src: src.parent])
def test_staged_output_never_writes_over_an_input(tmp_path, out_of):
    src = tmp_path / "models" / "src"
    src.mkdir(parents=True)
    (src / "config.json").write_text("{}")
    with pytest.raises(UserError, match="is \\(or contains\\) the input"):
        with staged_output(out_of(src), overwrite=True, sources=["org/hub-id", src]):
            pass
    assert (src / "config.json").read_text() == "{}"


def test_staged_output_names_an_output_that_cannot_be_a_folder(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=f"OUT {a_file}: is a file"):
        with staged_output(a_file, overwrite=True):
            pass
    with pytest.raises(UserError, match="cannot write there"):
        with staged_output(a_file / "out", overwrite=False):
            pass


NOT_HF_LLAVA = {
    "native llava": ({"model_type": "llava", "text_config": {}, "vision_config": {}}, "convert --from llava-hf"),
    "original LLaVA": ({"model_type": "llava", "mm_vision_tower": "openai/clip"}, "convert --from llava "),
    "CLIP tower": ({"model_type": "clip_vision_model", "image_size": 224, "patch_size": 14},
                   "vision tower \\(clip_vision_model\\).*hf-llava build --vision-tower"),
    "full CLIP": ({"model_type": "clip", "vision_config": {}, "text_config": {}}, "hf-llava build --vision-tower"),
    "LLM": ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "language model \\(llama\\).*--llm"),
    "other": ({"model_type": "bert", "architectures": ["BertModel"]}, "model_type 'bert', not a hf_llava"),
}


@pytest.mark.parametrize("kind", NOT_HF_LLAVA)
def test_a_folder_that_is_not_hf_llava_is_named_with_what_to_do(tmp_path, kind):
    config, expected = NOT_HF_LLAVA[kind]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"model {tmp_path}: expected a hf_llava checkpoint, found .*{expected}"):
        check_hf_llava_checkpoint(str(tmp_path))


def test_an_hf_llava_folder_passes_and_non_checkpoints_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hf_llava"}))
    check_hf_llava_checkpoint(str(tmp_path))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset_dict.json").write_text("{}")
    with pytest.raises(UserError, match="a saved dataset, so not a checkpoint folder"):
        check_hf_llava_checkpoint(str(dataset))
    with pytest.raises(UserError, match="no such folder"):
        check_hf_llava_checkpoint(str(tmp_path / "missing" / "model"))


def test_training_refuses_a_model_name_or_path_that_is_not_hf_llava_before_building(tmp_path, monkeypatch):
    """A tower folder as `model_name_or_path` used to fill in a default 7B text config and build it."""
    from types import SimpleNamespace

    import transformers

    from hf_llava.training import model as training_model

    (tmp_path / "config.json").write_text(json.dumps(NOT_HF_LLAVA["CLIP tower"][0]))
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("nothing may be built")))
    args = SimpleNamespace(model_name_or_path=str(tmp_path), model_revision=None, load_in_8bit=False,
                           load_in_4bit=False)
    with pytest.raises(UserError, match=f"model_name_or_path {tmp_path}: .*hf-llava build --vision-tower"):
        training_model._load_checkpoint(args)
