"""Publishing models on the loopback Hub (tests/servers/hub_server.py) with the real clients: a tiny model trained by
recipes/sft.py from a dataset pulled from that Hub and pushed by its `push_to_hub`, then published again by
hub/push_model.py with eval results and the native-llava sibling; loaded back where hf_llava is not importable; the
collection; and the bad cases, each a clear error with nothing half-published."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from hf_llava.checkpoint import save_checkpoint
from hf_llava.data.builder import build_to_disk
from hf_llava.data.synthetic_shapes import SyntheticShapes
from hf_llava.errors import UserError
from hf_llava.hub import CARD_INPUTS, push_dataset
from hf_llava.hub_scripts import collection_main, push_model_main
from hf_llava.testing import random_image, run_without_hf_llava, tiny_llava
from hf_llava.training import sft

sys.path.insert(0, str(Path(__file__).parent))
from tiny_checkpoints import save_clip_vision, save_llama  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Two benchmarks' results.json as `hf-llava eval` writes them (docs: /tmp/team contract; hub_results entries are
# EvalResult keyword arguments); the numbers are made up, the test checks that they reach the card unchanged.
RESULTS = {
    "shapes": {"benchmark": "shapes-vqa", "model": "x", "settings": {}, "hub_results": [
        {"task_type": "visual-question-answering", "dataset_type": "hf-llava/synthetic-shapes",
         "dataset_name": "Synthetic shapes VQA", "dataset_config": "vqa", "dataset_split": "test",
         "metric_type": "accuracy", "metric_name": "accuracy (overall)", "metric_value": 41.5},
        {"task_type": "visual-question-answering", "dataset_type": "hf-llava/synthetic-shapes",
         "dataset_name": "Synthetic shapes VQA", "dataset_config": "vqa", "dataset_split": "test",
         "metric_type": "accuracy", "metric_name": "accuracy (color)", "metric_value": 37.25}]},
    "pope": {"benchmark": "pope", "model": "x", "settings": {}, "hub_results": [
        {"task_type": "visual-question-answering", "dataset_type": "lmms-lab/POPE", "dataset_name": "POPE",
         "dataset_config": "adversarial", "dataset_split": "test", "metric_type": "f1", "metric_name": "F1",
         "metric_value": 66.7}]},
}

LOAD_AND_GENERATE = '''
import json, sys, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration
repo, native_repo, image = sys.argv[1], sys.argv[2], Image.open(sys.argv[3])
conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
report = {}
for name, load in (("remote", lambda r: AutoModelForImageTextToText.from_pretrained(r, trust_remote_code=True)),
                   ("native", LlavaForConditionalGeneration.from_pretrained)):
    target = repo if name == "remote" else native_repo
    model = load(target).eval()
    processor = AutoProcessor.from_pretrained(target, trust_remote_code=name == "remote")
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [image]})
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    report[name] = {"module": type(model).__module__, "tokens": out[0].tolist()}
print(json.dumps(report))
'''


def _repo(hub_server, name: str) -> str:
    return f"{hub_server.user}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def trained(hub_server, tmp_path_factory):
    """recipes/sft.py's entry point trains 2 steps from a synthetic-shapes config pulled from the Hub
    (`{path: user/repo, name: caption}`) and pushes the final folder with push_to_hub."""
    root = tmp_path_factory.mktemp("trained")
    build_to_disk(SyntheticShapes, str(root / "shapes"), configs=["caption", "vqa"], num_images=4,
                  num_eval_images=2, image_size=32)
    data_repo = _repo(hub_server, "shapes")
    push_dataset(root / "shapes", data_repo, token=hub_server.token)
    model_repo = _repo(hub_server, "sft")
    out = root / "run"
    sft.main(["--datasets", json.dumps({"path": data_repo, "name": "caption"}), "--output_dir", str(out),
              "--vision_tower", str(save_clip_vision(root / "tower")), "--llm", str(save_llama(root / "llm")),
              "--chat_template", "plain", "--stage", "1", "--learning_rate", "1e-2", "--max_steps", "2",
              "--per_device_train_batch_size", "2", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
              "--save_strategy", "no", "--seed", "0", "--disable_tqdm", "true", "--activation_checkpointing", "false",
              "--push_to_hub", "true", "--hub_model_id", model_repo, "--hub_token", hub_server.token])
    for name, results in RESULTS.items():
        (root / "eval" / name).mkdir(parents=True)
        (root / "eval" / name / "results.json").write_text(json.dumps(results))
    return {"root": root, "out": out, "data_repo": data_repo, "model_repo": model_repo, "eval": root / "eval"}


def test_sft_trains_from_a_hub_dataset_and_pushes_the_final_folder(trained, hub_server):
    api = HfApi(token=hub_server.token)
    files = set(api.list_repo_files(trained["model_repo"]))
    assert {"model.safetensors", "config.json", "modeling_hf_llava.py", "chat_template.jinja", "README.md",
            CARD_INPUTS} <= files
    inputs = json.loads(Path(api.hf_hub_download(trained["model_repo"], CARD_INPUTS)).read_text())
    # the Hub dataset it trained on is a part of the model, and named in the card's metadata
    assert {"kind": "dataset", "role": "training data", "name": trained["data_repo"], "hub": True,
            "license": None} in inputs["parts"]
    card = ModelCard.load(trained["model_repo"])
    assert card.data.datasets == [trained["data_repo"]] and card.data.pipeline_tag == "image-text-to-text"
    assert f"data: {trained['data_repo']}/caption[train]" in card.text
    # what was pushed is the local final folder, byte for byte
    local = (trained["out"] / "model.safetensors").read_bytes()
    assert Path(api.hf_hub_download(trained["model_repo"], "model.safetensors")).read_bytes() == local


def test_push_model_loads_without_hf_llava_and_carries_the_eval_results(trained, hub_server, tmp_path, capsys):
    repo, native = _repo(hub_server, "published"), _repo(hub_server, "published-llava-hf")
    code = push_model_main([str(trained["out"]), repo, "--eval-results", str(trained["eval"]), "--license", "mit",
                            "--also-llava-hf", native, "--token", hub_server.token])
    assert code == 0 and f"published {repo}" in capsys.readouterr().out

    card = ModelCard.load(repo)
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert card.data.base_model is None  # tower and LLM are local folders here, not Hub models
    values = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert values == {("hf-llava/synthetic-shapes", "accuracy (overall)"): 41.5,
                      ("hf-llava/synthetic-shapes", "accuracy (color)"): 37.25, ("lmms-lab/POPE", "F1"): 66.7}
    assert f'from_pretrained("{repo}", trust_remote_code=True)' in card.text and native in card.text
    native_card = ModelCard.load(native)
    assert native_card.data.base_model == [repo] and "custom_code" not in native_card.data.tags
    assert {r.metric_value for r in native_card.data.eval_results} == {41.5, 37.25, 66.7}

    image = tmp_path / "image.png"
    random_image(5).save(image)
    report = json.loads(run_without_hf_llava(LOAD_AND_GENERATE, repo, native, str(image)).stdout.splitlines()[-1])
    assert report["remote"]["module"].startswith("transformers_modules.")  # the repo's own remote code
    assert report["native"]["module"].startswith("transformers.models.llava")

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(trained["out"], trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(trained["out"], trust_remote_code=True)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", processor_kwargs={"images": [Image.open(image)]})
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0].tolist()
    assert report["remote"]["tokens"] == expected
    assert report["native"]["tokens"] == expected

    # the collection: the model (with its headline numbers), its training data, the benchmark datasets of its
    # model-index that the Hub has (with their numbers; lmms-lab/POPE is not on this Hub, so it is left out), and
    # the native sibling
    api = HfApi(token=hub_server.token)
    api.create_repo("hf-llava/synthetic-shapes", repo_type="dataset", exist_ok=True)
    assert collection_main([repo, "--item", f"model:{native}", "--token", hub_server.token]) == 0
    slug = capsys.readouterr().out.strip().splitlines()[-1].rsplit("/collections/", 1)[1]
    items = api.get_collection(slug).items
    assert [(i.item_type, i.item_id) for i in items] == [
        ("model", repo), ("dataset", trained["data_repo"]), ("dataset", "hf-llava/synthetic-shapes"), ("model", native)]
    assert "accuracy (overall) 41.5" in items[0].note and "POPE F1 66.7" in items[0].note
    assert items[2].note == "evaluation: accuracy (overall) 41.5; accuracy (color) 37.25"


def test_dry_run_writes_the_repo_folder_and_sends_nothing(trained, hub_server, tmp_path, capsys):
    start = len(hub_server.requests)
    repo = _repo(hub_server, "dry")
    push_model_main([str(trained["out"]), repo, "--eval-results", str(trained["eval"] / "pope" / "results.json"),
                     "--license", "apache-2.0", "--dry-run", str(tmp_path / "dry")])
    printed = capsys.readouterr().out
    assert "model-index:" in printed and "66.7" in printed
    written = {p.name for p in (tmp_path / "dry").iterdir()}
    assert {"model.safetensors", "README.md", CARD_INPUTS, "modeling_hf_llava.py", "tokenizer.json"} <= written
    assert not any(path.startswith(f"/api/models/{repo}") for _, path in hub_server.requests[start:])


def test_missing_token_is_refused_before_anything_is_sent(trained, hub_server, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    repo = _repo(hub_server, "no-token")
    with pytest.raises(UserError, match="no Hugging Face token: set HF_TOKEN"):
        push_model_main([str(trained["out"]), repo, "--license", "mit"])
    with pytest.raises(UserError, match="refused the token"):
        push_model_main([str(trained["out"]), repo, "--license", "mit", "--token", "hf_wrong"])
    assert not HfApi(token=hub_server.token).repo_exists(repo)


def test_script_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "hub" / "push_model.py"), str(tmp_path), "me/x",
                             "--license", "mit"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"hub/push_model.py: error: CHECKPOINT {tmp_path}: no config.json, so not a checkpoint folder; expected a "
        "hf_llava checkpoint"]


def test_repo_with_another_model_type_is_refused(trained, hub_server, tmp_path):
    api = HfApi(token=hub_server.token)
    repo = _repo(hub_server, "llama")
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=json.dumps({"model_type": "llama"}).encode(), path_in_repo="config.json",
                    repo_id=repo)
    before = api.list_repo_commits(repo)
    with pytest.raises(UserError, match=f"{repo} already holds a model of type 'llama'"):
        push_model_main([str(trained["out"]), repo, "--license", "mit", "--token", hub_server.token])
    assert api.list_repo_commits(repo) == before
    # the same check for the native sibling, before the main repo gets anything
    main_repo = _repo(hub_server, "main")
    with pytest.raises(UserError, match="expected 'llava'"):
        push_model_main([str(trained["out"]), main_repo, "--license", "mit", "--also-llava-hf", repo,
                         "--token", hub_server.token])
    assert not api.repo_exists(main_repo)


def test_folders_that_are_not_checkpoints_are_named(trained, tmp_path):
    with pytest.raises(UserError, match="a saved dataset, so not a checkpoint folder"):
        push_model_main([str(trained["root"] / "shapes" / "caption"), "me/x", "--dry-run", str(tmp_path / "d")])
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text((trained["out"] / "config.json").read_text())
    with pytest.raises(UserError, match="incomplete checkpoint, missing configuration_hf_llava.py"):
        push_model_main([str(incomplete), "me/x", "--dry-run", str(tmp_path / "d")])
    llama = trained["root"] / "llm"
    with pytest.raises(UserError, match="found a language model"):
        push_model_main([str(llama), "me/x", "--dry-run", str(tmp_path / "d")])


def test_licence_is_the_stricter_of_the_parts_or_must_be_given(trained, tmp_path):
    # the tower and LLM are local folders without a card: their licences are unknown
    with pytest.raises(UserError, match="cannot choose the licence: unknown licence for vision tower .*pass --license"):
        push_model_main([str(trained["out"]), "me/x", "--dry-run", str(tmp_path / "d")])
    from hf_llava.hub import combined_license

    def parts(*licenses):
        return [{"role": "part", "name": str(k), "license": lic} for k, lic in enumerate(licenses)]

    assert combined_license(parts("apache-2.0", "cc-by-nc-4.0", "mit")) == ("cc-by-nc-4.0", "")
    assert combined_license(parts("llama2", "apache-2.0", "cc-by-4.0")) == ("llama2", "")
    assert combined_license(parts("llama2", "cc-by-nc-4.0"))[0] is None
    assert combined_license(parts("apache-2.0", "other"))[0] is None


def test_interrupted_upload_changes_nothing_and_a_rerun_completes(hub_server, tmp_path):
    # weights no other test uploads: the Hub stores LFS objects by content, so known ones are never sent again
    model, processor = tiny_llava(seed=23)
    checkpoint = save_checkpoint(model, processor, tmp_path / "ckpt")
    api = HfApi(token=hub_server.token)
    repo = _repo(hub_server, "interrupted")
    weights = (checkpoint / "model.safetensors").stat().st_size
    hub_server.max_request_bytes = weights // 2  # the weights' upload fails; the smaller LFS files get through
    start = len(hub_server.requests)
    try:
        with pytest.raises(UserError, match="nothing was committed: run the same command again"):
            push_model_main([str(checkpoint), repo, "--license", "mit", "--token", hub_server.token])
    finally:
        hub_server.max_request_bytes = 256 * 2**20
    first = [path for method, path in hub_server.requests[start:] if method == "PUT" and path.startswith("/lfs/")]
    assert api.list_repo_files(repo) == [".gitattributes"]  # nothing half-published
    start = len(hub_server.requests)
    assert push_model_main([str(checkpoint), repo, "--license", "mit", "--token", hub_server.token]) == 0
    second = [path for method, path in hub_server.requests[start:] if method == "PUT" and path.startswith("/lfs/")]
    assert "model.safetensors" in api.list_repo_files(repo)
    assert 0 < len(second) < len(first)  # the files that got through before are not sent again


def test_revision_publishes_to_a_branch_and_leaves_main_alone(trained, hub_server):
    api = HfApi(token=hub_server.token)
    repo = _repo(hub_server, "branch")
    assert push_model_main([str(trained["out"]), repo, "--license", "mit", "--revision", "stage1", "--private",
                            "--token", hub_server.token]) == 0
    assert api.model_info(repo).private is True
    assert api.list_repo_files(repo) == [".gitattributes"]
    assert "model.safetensors" in api.list_repo_files(repo, revision="stage1")


def test_a_later_stage_inherits_the_parts_and_history_of_its_start(trained, tmp_path):
    out = tmp_path / "stage2"
    sft.main(["--model_name_or_path", str(trained["out"]), "--datasets",
              json.dumps({"path": trained["data_repo"], "name": "vqa"}), "--output_dir", str(out), "--stage", "2",
              "--max_steps", "1", "--per_device_train_batch_size", "2", "--use_cpu", "true", "--bf16", "false",
              "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
              "--activation_checkpointing", "false"])
    inputs = json.loads((out / CARD_INPUTS).read_text())
    first = json.loads((trained["out"] / CARD_INPUTS).read_text())
    assert [p for p in inputs["parts"] if p["kind"] == "model"] == [p for p in first["parts"] if p["kind"] == "model"]
    assert any(p["name"] == trained["data_repo"] for p in inputs["parts"])  # stage 1's and stage 2's data: one part
    assert inputs["training"].startswith(first["training"]) and "stage 2" in inputs["training"]
    assert ModelCard.load(out / "README.md").data.datasets == [trained["data_repo"]]
