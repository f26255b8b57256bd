"""The loopback Hub server (tests/servers/hub_server.py) driven by the real clients: huggingface_hub, datasets and
transformers, exactly as the package's push/load features use them."""

import hashlib
import importlib.util
import sys
import uuid

import numpy as np
import pytest
from huggingface_hub import HfApi, HfFileSystem, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from servers.hub_server import HubServer


@pytest.fixture
def api(hub_server):
    return HfApi(endpoint=hub_server.url, token=hub_server.token)


@pytest.fixture(autouse=True)
def _server_stays_healthy(hub_server):
    """Every client call must land on a route the server has and must not crash it."""
    unknown, errors = len(hub_server.unknown_routes), len(hub_server.errors)
    yield
    assert hub_server.unknown_routes[unknown:] == []
    assert hub_server.errors[errors:] == []


def _repo_id(hub_server, name: str) -> str:
    return f"{hub_server.user}/{name}-{uuid.uuid4().hex[:8]}"


def _since(hub_server, start: int, method: str, fragment: str) -> list[str]:
    return [path for m, path in hub_server.requests[start:] if m == method and fragment in path]


def test_clients_point_at_the_loopback_server(hub_server):
    assert constants.ENDPOINT == hub_server.url == HfApi().endpoint
    assert hub_server.url.startswith("http://127.0.0.1:")


def test_whoami_checks_the_token(api, hub_server):
    assert api.whoami()["name"] == hub_server.user
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_the_test_token").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_twice_with_exist_ok(api, hub_server):
    repo_id = _repo_id(hub_server, "model")
    url = api.create_repo(repo_id)
    assert (url.repo_id, url.repo_type) == (repo_id, "model")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo_id)
    assert err.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True) == url
    # a dataset of the same name is another repo; each starts with the Hub's initial .gitattributes commit
    dataset_url = api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    assert dataset_url.repo_type == "dataset" and dataset_url != url
    info = api.model_info(repo_id)
    assert len(info.sha) == 40 and [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert api.list_repo_commits(repo_id)[0].title == "initial commit"
    api.delete_repo(repo_id, repo_type="dataset")
    assert not api.repo_exists(repo_id, repo_type="dataset") and api.repo_exists(repo_id)
    space_id = api.create_repo(_repo_id(hub_server, "space"), repo_type="space", space_sdk="static").repo_id
    assert api.space_info(space_id).sdk == "static"


def test_writes_need_the_token_and_private_repos_stay_hidden(api, hub_server):
    repo_id = _repo_id(hub_server, "private")
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_repo(repo_id)
    assert err.value.response.status_code == 401
    api.create_repo(repo_id, private=True)
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{hub_server.user}/never-created")


def test_upload_folder_regular_and_lfs_files_download_identical(api, hub_server, tmp_path):
    files = {
        "README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n",  # small text: regular git blob
        "notes/long.txt": b"0123456789abcdef" * 200,  # 3200 bytes >= the 1 KiB LFS threshold
        "notes/tiny.dat": bytes(range(64)),  # small but binary: LFS
        "weights.safetensors": b"{}",  # tiny but an LFS pattern of .gitattributes
    }
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    repo_id = _repo_id(hub_server, "upload")
    api.create_repo(repo_id)
    start = len(hub_server.requests)
    commit = api.upload_folder(folder_path=tmp_path, repo_id=repo_id, commit_message="add files")

    lfs_paths = {"notes/long.txt", "notes/tiny.dat", "weights.safetensors"}
    # each LFS file went through the batch API and a PUT to this server, then one commit referenced them all
    assert len(_since(hub_server, start, "PUT", "/lfs/")) == len(lfs_paths)
    assert len(_since(hub_server, start, "POST", "/commit/main")) == 1
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *files])
    tree = {item.path: item for item in api.list_repo_tree(repo_id, recursive=True)}
    assert {path for path, item in tree.items() if getattr(item, "lfs", None)} == lfs_paths
    assert tree["notes/long.txt"].lfs.sha256 == hashlib.sha256(files["notes/long.txt"]).hexdigest()
    assert type(tree["notes"]).__name__ == "RepoFolder"
    assert api.model_info(repo_id).card_data["license"] == "apache-2.0"

    for path, data in files.items():
        assert open(hf_hub_download(repo_id, path, revision=commit.oid), "rb").read() == data
    snapshot = snapshot_download(repo_id)
    for path, data in files.items():
        assert open(f"{snapshot}/{path}", "rb").read() == data

    # HfFileSystem (what datasets reads through) lists folders and reads slices with HTTP ranges
    fs = HfFileSystem(token=hub_server.token)
    assert sorted(fs.glob(f"{repo_id}/notes/*")) == [f"{repo_id}/notes/long.txt", f"{repo_id}/notes/tiny.dat"]
    with fs.open(f"{repo_id}/notes/long.txt", "rb") as file:
        file.seek(1000)
        assert file.read(20) == files["notes/long.txt"][1000:1020]
    url = f"{hub_server.url}/{repo_id}/resolve/main/notes/long.txt"
    ranged = get_session().get(url, headers={"Range": "bytes=3190-"})
    assert (ranged.status_code, ranged.content) == (206, files["notes/long.txt"][3190:])
    assert ranged.headers["Content-Range"] == "bytes 3190-3199/3200"
    assert get_session().get(url, headers={"Range": "bytes=3200-"}).status_code == 416


def test_multipart_lfs_upload(api, hub_server):
    repo_id = _repo_id(hub_server, "multipart")
    api.create_repo(repo_id)
    data = np.random.default_rng(0).bytes(2500)
    hub_server.multipart_chunk_size = 1000
    try:
        start = len(hub_server.requests)
        api.upload_file(path_or_fileobj=data, path_in_repo="blob.bin", repo_id=repo_id)
    finally:
        hub_server.multipart_chunk_size = None
    assert len(_since(hub_server, start, "PUT", "/part/")) == 3
    assert open(hf_hub_download(repo_id, "blob.bin"), "rb").read() == data


def test_commits_revisions_branches_and_deletes(api, hub_server):
    repo_id = _repo_id(hub_server, "history")
    api.create_repo(repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"keep", path_in_repo="dir/b.txt", repo_id=repo_id)
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id=repo_id)
    api.create_tag(repo_id, tag="v1.0", revision=first.oid)
    api.create_branch(repo_id, branch="dev", revision=first.oid)
    api.delete_folder("dir", repo_id=repo_id)

    assert open(hf_hub_download(repo_id, "a.txt"), "rb").read() == b"v2"
    for revision in (first.oid, "v1.0", "dev"):
        assert open(hf_hub_download(repo_id, "a.txt", revision=revision), "rb").read() == b"v1"
    assert open(hf_hub_download(repo_id, "dir/b.txt", revision=second.oid), "rb").read() == b"keep"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "dir/b.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "a.txt", revision="no-such-branch")

    assert api.model_info(repo_id, revision="v1.0").sha == first.oid
    commits = api.list_repo_commits(repo_id)  # newest first
    assert [c.title for c in commits] == ["Delete folder dir with huggingface_hub", "Upload a.txt with huggingface_hub",
                                          "Upload dir/b.txt with huggingface_hub", "Upload a.txt with huggingface_hub",
                                          "initial commit"]
    assert (commits[1].commit_id, commits[3].commit_id) == (second.oid, first.oid)
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and refs.tags[0].target_commit == first.oid
    # a commit on a stale parent is refused (datasets relies on this to retry)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"v3", path_in_repo="a.txt", repo_id=repo_id, parent_commit=first.oid)
    assert err.value.response.status_code == 412


def test_request_size_limit(api, hub_server):
    repo_id = _repo_id(hub_server, "limit")
    api.create_repo(repo_id)
    hub_server.max_request_bytes = 500
    try:
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_file(path_or_fileobj=b"x" * 600, path_in_repo="big.txt", repo_id=repo_id)
    finally:
        hub_server.max_request_bytes = 256 * 2**20
    assert err.value.response.status_code == 413
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_unknown_routes_answer_404_and_are_recorded(tmp_path):
    with HubServer(tmp_path) as server:  # its own server: this test makes an unknown call on purpose
        response = get_session().get(f"{server.url}/api/models/a/b/discussions")
    assert response.status_code == 404 and "no route for GET /api/models/a/b/discussions" in response.text
    assert server.unknown_routes == [("GET", "/api/models/a/b/discussions")]


def test_dataset_with_images_push_to_hub_and_load_dataset(hub_server):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8) for i in range(5)]
    features = datasets.Features(
        {"id": datasets.Value("string"), "image": datasets.Image(), "caption": datasets.Value("string")}
    )

    def split(indices):
        rows = {"id": [f"row-{i}" for i in indices], "image": [Image.fromarray(pixels[i]) for i in indices],
                "caption": [f"a {i}-pixel-tall square" for i in indices]}
        return datasets.Dataset.from_dict(rows, features=features)

    repo_id = _repo_id(hub_server, "images")
    datasets.DatasetDict({"train": split([0, 1, 2]), "test": split([3, 4])}).push_to_hub(
        repo_id, token=hub_server.token
    )
    loaded = datasets.load_dataset(repo_id, token=hub_server.token)

    assert set(loaded) == {"train", "test"} and loaded["train"].features == features
    for name, indices in {"train": [0, 1, 2], "test": [3, 4]}.items():
        assert loaded[name]["id"] == [f"row-{i}" for i in indices]
        assert loaded[name]["caption"] == [f"a {i}-pixel-tall square" for i in indices]
        for row, i in zip(loaded[name], indices):
            np.testing.assert_array_equal(np.asarray(row["image"]), pixels[i])


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    sentences = ["a red square on a blue image", "the cat sat on the mat", "what colour is the circle ?"]
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"])
    tokenizer.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>"
    )


def test_transformers_push_to_hub_and_from_pretrained_by_revision(hub_server):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    repo_id = _repo_id(hub_server, "tiny-llama")
    first = model.push_to_hub(repo_id, token=hub_server.token)
    tokenizer.push_to_hub(repo_id, token=hub_server.token)
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model.model.norm.weight.fill_(2.0)
    model.push_to_hub(repo_id, token=hub_server.token, commit_message="second")

    latest = AutoModelForCausalLM.from_pretrained(repo_id)
    old = AutoModelForCausalLM.from_pretrained(repo_id, revision=first.oid)
    assert torch.equal(latest.model.norm.weight, torch.full((16,), 2.0))
    for name, tensor in model.state_dict().items():
        assert torch.equal(latest.state_dict()[name], tensor), name
    for name, tensor in original.items():
        assert torch.equal(old.state_dict()[name], tensor), name
    loaded_tokenizer = AutoTokenizer.from_pretrained(repo_id)
    text = "the red cat sat on a circle"
    assert loaded_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()


REMOTE_CODE = '''
import torch
from transformers import PreTrainedConfig, PreTrainedModel


class TinyRemoteConfig(PreTrainedConfig):
    model_type = "tiny_remote"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
'''


def test_remote_code_model_loads_with_trust_remote_code(api, hub_server, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModel

    (tmp_path / "tiny_remote_code.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("tiny_remote_code", tmp_path / "tiny_remote_code.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tiny_remote_code", module)  # transformers copies the class's source file
    spec.loader.exec_module(module)
    module.TinyRemoteConfig.register_for_auto_class()
    module.TinyRemoteModel.register_for_auto_class("AutoModel")
    model = module.TinyRemoteModel(module.TinyRemoteConfig())
    repo_id = _repo_id(hub_server, "remote-code")
    model.push_to_hub(repo_id, token=hub_server.token)

    assert "tiny_remote_code.py" in api.list_repo_files(repo_id)
    loaded = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    assert type(loaded).__name__ == "TinyRemoteModel" and type(loaded) is not module.TinyRemoteModel
    assert torch.equal(loaded.proj.weight, model.proj.weight)
