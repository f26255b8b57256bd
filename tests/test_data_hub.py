"""Push a built dataset to the loopback Hub and load it back with `load_dataset(repo_id)`: same rows, same pixels."""

import datasets
from data_helpers import builder_module, pixels, write_image, write_json
from huggingface_hub import DatasetCard

from hf_llava.data.builder import build_to_disk, push_to_hub


def _same_rows(a, b):
    assert a.column_names == b.column_names and len(a) == len(b)
    for ra, rb in zip(a, b):
        for name in a.column_names:
            if name == "images":
                assert [pixels(x) for x in ra[name]] == [pixels(x) for x in rb[name]]
                assert [x.size for x in ra[name]] == [x.size for x in rb[name]]
            else:
                assert ra[name] == rb[name], name


def test_single_config_push_and_load(hub_server, tmp_path):
    write_image(tmp_path / "img" / "a.png", (1, 2, 3), size=(5, 4))
    src = write_json(tmp_path / "d.json", [
        {"id": 1, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                      {"from": "gpt", "value": "a"}]},
        {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])
    out = tmp_path / "out"
    build_to_disk(builder_module("llava_instruct").LlavaInstruct, str(out), json=src, image_root=str(tmp_path / "img"))
    repo = "tester/llava-instruct-roundtrip"
    push_to_hub(str(out), repo, token=hub_server.token)
    back = datasets.load_dataset(repo, token=hub_server.token)
    _same_rows(datasets.load_from_disk(str(out))["train"], back["train"])
    card = DatasetCard.load(repo, token=hub_server.token)
    assert card.data.license == "cc-by-4.0" and "| default | train | 2 | 0 |" in card.text
    assert card.data.to_dict().get("dataset_info")  # datasets' own metadata kept next to ours


def test_multi_config_push_and_load(hub_server, tmp_path):
    out = tmp_path / "shapes"
    build_to_disk(builder_module("synthetic_shapes").SyntheticShapes, str(out), num_images=3, num_eval_images=2,
                  image_size=32)
    repo = "tester/shapes-roundtrip"
    push_to_hub(str(out), repo, token=hub_server.token)
    for config in ("caption", "instruct", "vqa", "text", "scenes"):
        local = datasets.load_from_disk(str(out / config))
        back = datasets.load_dataset(repo, config, token=hub_server.token)
        assert sorted(back) == sorted(local)
        for split in local:
            _same_rows(local[split], back[split])
