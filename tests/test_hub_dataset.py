"""Publishing datasets on the loopback Hub with hub/push_dataset.py: a builder's output (every config and split) and
the data engine's output come back from `datasets.load_dataset(repo, config)` with the same rows and byte-equal
images; the card carries the `configs` metadata; a push keeps the configs it does not carry; dry runs and bad
folders."""

import json
import uuid

import datasets
import pytest
from huggingface_hub import DatasetCard, HfApi

from hf_llava.data.builder import build_to_disk
from hf_llava.data.synthetic_shapes import SyntheticShapes
from hf_llava.datagen.export import write_outputs
from hf_llava.errors import UserError
from hf_llava.hub_scripts import push_dataset_main
from hf_llava.testing import random_image


def _repo(hub_server, name: str) -> str:
    return f"{hub_server.user}/{name}-{uuid.uuid4().hex[:8]}"


def _raw(dataset: datasets.Dataset) -> list[dict]:
    """Rows with the images as their stored bytes (not decoded), so equality means byte-equal files."""
    return dataset.cast_column("images", datasets.List(datasets.Image(decode=False))).to_list()


def _same(local: datasets.Dataset, back: datasets.Dataset) -> None:
    assert back.features == local.features  # the Image feature survives the parquet round trip
    local_rows, back_rows = _raw(local), _raw(back)
    assert len(local_rows) == len(back_rows) > 0
    for a, b in zip(local_rows, back_rows):
        assert [im["bytes"] for im in a["images"]] == [im["bytes"] for im in b["images"]]
        assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "out"
    build_to_disk(SyntheticShapes, str(out), num_images=3, num_eval_images=2, image_size=32)
    return out


def test_builder_output_round_trips_every_config_and_split(shapes, hub_server, capsys):
    repo = _repo(hub_server, "shapes")
    assert push_dataset_main([str(shapes), repo, "--token", hub_server.token]) == 0
    assert f"published {repo}" in capsys.readouterr().out
    configs = json.loads((shapes / "build_report.json").read_text())["configs"]
    assert len(configs) > 1
    for config in configs:
        local = datasets.load_from_disk(str(shapes / config))
        back = datasets.load_dataset(repo, config)
        assert sorted(back) == sorted(local)
        for split in local:
            _same(local[split], back[split])
    card = DatasetCard.load(repo)
    metadata = card.data.to_dict()
    assert {c["config_name"] for c in metadata["configs"]} == set(configs)  # what the dataset viewer reads
    assert {i["config_name"] for i in metadata["dataset_info"]} == set(configs)
    assert metadata["license"] == "apache-2.0" and "## Counts" in card.text
    files = HfApi().list_repo_files(repo, repo_type="dataset")
    assert "build_report.json" in files and "vqa/test-00000-of-00001.parquet" in files
    assert len(HfApi().list_repo_commits(repo, repo_type="dataset")) == 2  # the repo's initial commit + ours


def test_a_push_keeps_the_configs_it_does_not_carry(hub_server, tmp_path):
    repo = _repo(hub_server, "partial")
    build_to_disk(SyntheticShapes, str(tmp_path / "a"), configs=["caption"], num_images=2, num_eval_images=1,
                  image_size=32)
    build_to_disk(SyntheticShapes, str(tmp_path / "b"), configs=["vqa"], num_images=2, num_eval_images=1,
                  image_size=32, seed=1)
    push_dataset_main([str(tmp_path / "a"), repo, "--token", hub_server.token])
    push_dataset_main([str(tmp_path / "b"), repo, "--token", hub_server.token])
    for name, config in (("a", "caption"), ("b", "vqa")):
        _same(datasets.load_from_disk(str(tmp_path / name / config))["train"],
              datasets.load_dataset(repo, config, split="train"))


def _engine_output(folder, tmp_path):
    """A data-engine run folder as `hf-llava generate-data` writes it (write_outputs), images referenced by path."""
    paths = []
    for k in range(3):
        path = tmp_path / "coco" / f"{k:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(k).save(path)
        paths.append(str(path))
    rows = [{"id": f"{k}-detail", "images": [paths[k]], "image_id": str(k), "type": "detail", "prompt_version": "v1",
             "teacher_model": "teacher", "messages": [
                 {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Describe."}]},
                 {"role": "assistant", "content": [{"type": "text", "text": f"Image {k}."}]}]} for k in range(3)]
    stats = {"model": "teacher", "base_url": None, "prompt_version": "v1", "prompt_fingerprint": "abc", "mode": "live",
             "images": 3, "rows": 3, "tokens": {"prompt": 30, "completion": 9}, "cost_usd": None,
             "by_type": {"detail": {"requested": 3, "rows": 3, "rejected": 0, "failed": 0, "pending": 0}},
             "rejects_by_reason": {}, "config": {"image_dir": str(tmp_path / "coco")}}
    folder.mkdir()
    write_outputs(folder, rows, [], stats, with_dataset=True)
    return paths


def test_data_engine_output_round_trips_with_the_images_embedded(hub_server, tmp_path):
    out = tmp_path / "run"
    paths = _engine_output(out, tmp_path)
    repo = _repo(hub_server, "instruct")
    push_dataset_main([str(out), repo, "--token", hub_server.token])
    back = datasets.load_dataset(repo, split="train")
    _same(datasets.load_from_disk(str(out / "dataset"))["train"], back)
    # the local dataset references the image files; the pushed one holds their bytes
    assert [row["images"][0]["bytes"] for row in _raw(back)] == [open(p, "rb").read() for p in paths]
    files = HfApi().list_repo_files(repo, repo_type="dataset")
    assert {"llava_instruct.json", "generation_stats.json", "data/train-00000-of-00001.parquet"} <= set(files)
    stats = json.loads(open(HfApi().hf_hub_download(repo, "generation_stats.json", repo_type="dataset")).read())
    assert "config" not in stats  # the run's local settings stay local
    card = DatasetCard.load(repo)
    assert "teacher" in card.text and card.data.license == "other" and "synthetic" in card.data.tags


def test_dry_run_writes_the_repo_folder_and_prints_the_card(shapes, hub_server, tmp_path, capsys):
    start = len(hub_server.requests)
    push_dataset_main([str(shapes), "me/shapes", "--dry-run", str(tmp_path / "dry")])
    assert "config_name: caption" in capsys.readouterr().out
    assert (tmp_path / "dry" / "caption" / "train-00000-of-00001.parquet").is_file()
    assert (tmp_path / "dry" / "README.md").is_file() and (tmp_path / "dry" / "build_report.json").is_file()
    assert hub_server.requests[start:] == []


def test_folders_that_are_not_datasets_are_named(tmp_path, hub_server):
    with pytest.raises(UserError, match="neither a dataset builder's output"):
        push_dataset_main([str(tmp_path), "me/x", "--dry-run", str(tmp_path / "d")])
    (tmp_path / "stats.json").write_text("{}")
    with pytest.raises(UserError, match="without images .* --image-dir"):
        push_dataset_main([str(tmp_path), "me/x", "--dry-run", str(tmp_path / "d")])
    with pytest.raises(UserError, match="FOLDER .*missing: no such folder"):
        push_dataset_main([str(tmp_path / "missing"), "me/x"])
