"""Publishing to the Hugging Face Hub: model cards, dataset cards and uploads for every producer.

Every path that writes a card or uploads goes through here: `save_checkpoint` (build, convert, training), the
training recipe's `push_to_hub`, the dataset builders' and the data engine's `--push-to-hub`, and the `hub/` scripts
(push_model.py, push_dataset.py, collection.py). Cards are huggingface_hub's own `ModelCard`/`ModelCardData`/
`EvalResult` and `DatasetCard`/`DatasetCardData`; uploads are `HfApi`.

Design notes
- A checkpoint keeps what its card says in `hf_llava_card.json` (the card's inputs: architecture facts, parameter
  count, the parts it was made from with their licences where known, how it was trained). The card can then be
  rendered again at push time, with a repo id, eval results and a licence, without loading the model; and a
  training run started from a checkpoint inherits its parts and training history. A folder without that file
  (made before it existed) is described from config.json and the safetensors headers.
- `model-index` comes only from the `hub_results` entries of the `results.json` files that `hf-llava eval` writes
  (each entry is `EvalResult`'s keyword arguments), so no benchmark is special-cased here.
- Licence: the stricter of the parts' licences where every part's is known and they are comparable; otherwise a
  push asks for `--license` and names the parts it could not place. A local save never fails on it.
- An upload is one commit: the folder to publish is assembled first (staging; hard links, not copies, for weights),
  then `upload_folder` pre-uploads every LFS file and commits them together. An interruption leaves the repo as it
  was, and a rerun sends only the files the Hub does not have yet (LFS objects are content-addressed).
  `upload_large_folder` is not used: it commits in pieces, so an interruption would leave a half-published repo.
- Every check that can fail (token, target repo, folder kind, licence, native export) runs before the first byte
  is uploaded. `--dry-run` writes the assembled folder instead of uploading it.
- Datasets are written as parquet shards with the images embedded (the `Image` feature), plus the card's
  `configs`/`dataset_info` metadata, so `load_dataset(repo, config)` and the dataset viewer read them; configs
  already on the Hub that this push does not carry are kept (their files and metadata).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData

from .errors import UserError

CARD_INPUTS = "hf_llava_card.json"
MODEL_TAGS = ["hf-llava", "llava", "vision-language", "image-text-to-text"]
REMOTE_CODE_TAG = "custom_code"
DATASET_TAGS = ["llava", "hf-llava", "image-text-to-text"]
REMOTE_CODE_FILES = ("configuration_hf_llava.py", "modeling_hf_llava.py", "processing_hf_llava.py")
# Training-time artefacts that never belong in a model repo (with the feature cache, hundreds of GB at LLaVA scale).
MODEL_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "demo_stage.json"]
MAX_SHARD_BYTES = 500 * 2**20  # parquet shard size, as datasets' push_to_hub
# From least to most restrictive; each adds conditions to the ones before it.
LICENSE_ORDER = ["cc0-1.0", "unlicense", "mit", "bsd-2-clause", "bsd-3-clause", "apache-2.0", "cc-by-4.0",
                 "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0"]
PERMISSIVE = LICENSE_ORDER[: LICENSE_ORDER.index("cc-by-4.0") + 1]
# Model licences with their own terms: one of them combined with permissive parts is the combined licence.
CUSTOM_LICENSES = {"llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "gemma", "openrail", "openrail++",
                   "creativeml-openrail-m", "bigscience-openrail-m"}
BUNDLED_LLM = ("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")  # `--llm smollm2`


# ----------------------------------------------------------------------------------------------------- card inputs
def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def _local_license(path: Path) -> str | None:
    """The licence in the front matter of a local folder's README.md (our builders' and checkpoints' cards); for
    one config of a builder's output, the builder's card one level up."""
    builder_config = (path.parent / "build_report.json").is_file()
    for folder in (path, path.parent) if builder_config else (path,):
        readme = folder / "README.md"
        if readme.is_file():
            try:
                return ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict().get("license")
            except Exception:  # a README that is not a card says nothing about a licence
                return None
    return None


def part(kind: str, role: str, name: str, license: str | None = None) -> dict:
    """One thing a checkpoint was made from: kind "model" or "dataset", `name` a Hub id or a local path."""
    if name in BUNDLED_LLM[:2]:  # `--llm smollm2`, or the same model named by its Hub id
        return {"kind": kind, "role": role, "name": BUNDLED_LLM[1], "hub": True, "license": license or BUNDLED_LLM[2]}
    local = _is_local(name)
    if local and license is None:
        license = _local_license(Path(name).expanduser())
    return {"kind": kind, "role": role, "name": str(Path(name).expanduser().resolve()) if local else name,
            "hub": not local, "license": license}


def _architecture(config: dict, num_parameters: int) -> dict:
    vision, text = config["vision_config"], config["text_config"]
    return {"vision_model_type": vision["model_type"], "text_model_type": text["model_type"],
            "projector_type": config["projector_type"], "image_size": vision["image_size"],
            "patch_size": vision["patch_size"], "vision_feature_layer": config["vision_feature_layer"],
            "vision_feature_select_strategy": config["vision_feature_select_strategy"],
            "image_seq_length": config["image_seq_length"],
            "image_position_embedding": config.get("image_position_embedding_std", 0.0) > 0,
            "num_parameters": num_parameters}


def card_inputs(model, *, vision_tower: str | None = None, llm: str | None = None, chat_template: str | None = None,
                description: str = "", training: str | None = None, parts: Iterable[dict] = (),
                datasets: Iterable[str] = (), license: str | None = None, model_name: str | None = None,
                repo_id: str | None = None) -> dict:
    """What a checkpoint's card says about `model`, as saved in `hf_llava_card.json`. `vision_tower`/`llm` (Hub ids
    or paths) and `datasets` (Hub ids or paths) become parts; `parts` adds ready-made ones (e.g. inherited)."""
    all_parts = list(parts)
    named = {(p["kind"], p["name"]) for p in all_parts}
    for kind, role, name in [("model", "vision tower", vision_tower), ("model", "language model", llm),
                             *[("dataset", "training data", d) for d in datasets]]:
        if name:
            new = part(kind, role, name)
            if (kind, new["name"]) not in named:
                all_parts.append(new)
                named.add((kind, new["name"]))
    return {"format": 1, "model_name": model_name, "repo_id": repo_id,
            "architecture": _architecture(model.config.to_dict(), model.num_parameters()),
            "chat_template": chat_template, "description": description, "training": training,
            "parts": all_parts, "license": license}


def _safetensors_parameters(folder: Path) -> int:
    """Parameter count from the safetensors headers (8-byte length + JSON), without loading any tensor."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def read_card_inputs(folder: str | Path) -> dict:
    """A checkpoint's card inputs: its hf_llava_card.json, else what config.json and the weights' headers say."""
    folder = Path(folder)
    saved = folder / CARD_INPUTS
    if saved.is_file():
        try:
            return json.loads(saved.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise UserError(f"{saved}: not valid JSON ({error}); delete it to describe the checkpoint from "
                            "config.json alone") from error
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    parts = []
    if (folder / "README.md").is_file():  # a card from before hf_llava_card.json: its metadata names the parts
        data = ModelCard.load(folder / "README.md", ignore_metadata_errors=True).data.to_dict()
        listed = [("model", "base model", data.get("base_model")), ("dataset", "training data", data.get("datasets"))]
        for kind, role, names in listed:
            parts += [part(kind, role, name) for name in ([names] if isinstance(names, str) else names or [])]
    return {"format": 1, "model_name": None, "repo_id": None,
            "architecture": _architecture(config, _safetensors_parameters(folder)), "chat_template": None,
            "description": "", "training": None, "parts": parts, "license": None}


def write_card_inputs(inputs: dict, folder: str | Path) -> Path:
    path = Path(folder) / CARD_INPUTS
    path.write_text(json.dumps(inputs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- eval results
def read_eval_results(paths: Iterable[str | Path]) -> list[dict]:
    """The `hub_results` entries of results.json files: each path is such a file, or a folder searched for them.
    An entry that `EvalResult` refuses is an error naming the file."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.rglob("results.json"))
            if not found:
                raise UserError(f"--eval-results {path}: no results.json in this folder (run `hf-llava eval ...` "
                                "with --output-dir there)")
            files += found
        else:
            raise UserError(f"--eval-results {path}: no such file or folder")
    entries = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{file}: not valid JSON ({error})") from error
        results = data.get("hub_results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not results:
            raise UserError(f"{file}: no `hub_results` list (written by `hf-llava eval`; rerun the evaluation with "
                            "this version to get it)")
        for k, entry in enumerate(results):
            try:
                EvalResult(**entry)
            except (TypeError, ValueError) as error:
                raise UserError(f"{file}: hub_results[{k}] is not a valid EvalResult ({error})") from error
            entries.append({**entry, "benchmark": data.get("benchmark")})
    return entries


def _eval_section(results: list[dict]) -> str:
    if not results:
        return "Not evaluated yet."
    lines = ["| benchmark | dataset | split | metric | value |", "|---|---|---|---|---|"]
    for entry in results:
        dataset = entry["dataset_name"] + (f" ({entry['dataset_config']})" if entry.get("dataset_config") else "")
        lines.append(f"| {entry.get('benchmark') or entry['task_type']} | {dataset} | {entry.get('dataset_split', '')}"
                     f" | {entry.get('metric_name') or entry['metric_type']} | {entry['metric_value']} |")
    note = "Measured with `hf-llava eval` (greedy decoding); the same numbers are in the `model-index` metadata."
    return "\n".join(lines) + "\n\n" + note


# --------------------------------------------------------------------------------------------------------- licence
def combined_license(parts: list[dict]) -> tuple[str | None, str]:
    """(licence, "") when every part's licence is known and one of them is at least as strict as all others; else
    (None, why)."""
    if not parts:
        return None, "the checkpoint does not record what it was made from"
    unknown = [p for p in parts if not p.get("license") or p["license"] == "other"]
    if unknown:
        return None, "unknown licence for " + ", ".join(f"{p['role']} {p['name']}" for p in unknown)
    licenses = {p["license"] for p in parts}
    custom = licenses - set(LICENSE_ORDER)
    if not custom:
        return max(licenses, key=LICENSE_ORDER.index), ""
    if len(custom) == 1 and next(iter(custom)) in CUSTOM_LICENSES and licenses - custom <= set(PERMISSIVE):
        return next(iter(custom)), ""
    return None, "licences that do not combine into one: " + ", ".join(
        f"{p['role']} {p['name']} ({p['license']})" for p in parts)


def _hub_license(api: HfApi, p: dict) -> str | None:
    """A Hub part's licence from its card metadata (None when the Hub does not say or cannot be reached)."""
    try:
        info = (api.model_info if p["kind"] == "model" else api.dataset_info)(p["name"])
    except Exception:  # offline, gated, deleted: the licence stays unknown and the push asks for --license
        return None
    data = info.card_data.to_dict() if info.card_data else {}
    return data.get("license")


def resolve_license(inputs: dict, explicit: str | None, api: HfApi | None = None) -> str:
    """The licence a push publishes under: `explicit`, else the stricter of the parts' (Hub parts looked up)."""
    if explicit:
        return explicit
    parts = [dict(p) for p in inputs["parts"]]
    if api is not None:
        for p in parts:
            if p["hub"] and not p.get("license"):
                p["license"] = _hub_license(api, p)
    license, why = combined_license(parts)
    if license is None:
        raise UserError(f"cannot choose the licence: {why}; pass --license ID (a Hub licence id, at least as strict "
                        "as every part's)")
    return license


# ------------------------------------------------------------------------------------------------------ model card
def render_model_card(inputs: dict, *, repo_id: str | None = None, eval_results: list[dict] = (),
                      license: str | None = None, datasets: Iterable[str] = (), llava_hf_repo: str | None = None,
                      model_name: str | None = None) -> ModelCard:
    """The README.md of a checkpoint from its card inputs (`card_inputs`/`read_card_inputs`) and, for a push, its
    repo id, eval results (`read_eval_results`), licence and extra Hub dataset ids."""
    arch = inputs["architecture"]
    parts = inputs["parts"]
    repo_id = repo_id or inputs.get("repo_id")
    model_name = model_name or inputs.get("model_name") or repo_id or "hf-llava model"

    def display(role: str, fallback: str) -> str:
        return next((p["name"] if p["hub"] else Path(p["name"]).name for p in parts if p["role"] == role), fallback)

    base_model = [p["name"] for p in parts if p["kind"] == "model" and p["hub"]]
    data_ids = list(dict.fromkeys([*(p["name"] for p in parts if p["kind"] == "dataset" and p["hub"]), *datasets]))
    if license is None:
        license = inputs.get("license") or combined_license(parts)[0]
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text", tags=[*MODEL_TAGS, REMOTE_CODE_TAG],
        base_model=base_model or None, datasets=data_ids or None, license=license,
        model_name=model_name if eval_results else None,
        eval_results=[EvalResult(**{k: v for k, v in e.items() if k != "benchmark"}) for e in eval_results] or None,
    )
    parts_table = "\n".join(
        f"| {p['role']} | {'`' + p['name'] + '`' if p['hub'] else Path(p['name']).name + ' (local)'} | "
        f"{p.get('license') or 'not recorded'} |" for p in parts) or "| not recorded | | |"
    license_note = (f"This model's licence: `{license}`, at least as strict as each part's." if license
                    else "No licence chosen yet (the parts' licences above decide what it can be).")
    template = (resources.files("hf_llava") / "model_card_template.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data, template_str=template, model_name=model_name, repo_id=repo_id or "path/to/this/folder",
        vision_tower=display("vision tower", arch["vision_model_type"]),
        llm=display("language model", arch["text_model_type"]),
        chat_template=inputs.get("chat_template") or "see chat_template.jinja",

        description=inputs.get("description") or "",
        training=inputs.get("training") or "Not trained by hf-llava yet (composed or converted checkpoint).",
        evaluation=_eval_section(list(eval_results)), parts=parts_table, license_note=license_note,
        llava_hf_repo=llava_hf_repo, native_exportable=native_exportable(arch),
        **{**arch, "num_parameters": f"{arch['num_parameters'] / 1e6:,.1f} M"},
    )


def native_exportable(architecture: dict) -> bool:
    """Whether `hf-llava convert --to llava-hf` can export it: native llava has only the mlp2x_gelu projector and no
    per-position image embedding."""
    return architecture["projector_type"] == "mlp2x_gelu" and not architecture.get("image_position_embedding")


NATIVE_CARD = """---
{{ card_data }}
---

# {{ model_name }}

The transformers-native `llava` export of [{{ source }}](https://huggingface.co/{{ source }}) (same weights, same
outputs), made with `hf-llava convert --to llava-hf`. It needs no remote code, so vLLM, SGLang, lmms-eval and
`LlavaForConditionalGeneration` load it directly:

```python
from transformers import AutoProcessor, LlavaForConditionalGeneration

model = LlavaForConditionalGeneration.from_pretrained("{{ repo_id }}")
processor = AutoProcessor.from_pretrained("{{ repo_id }}")
```

See [{{ source }}](https://huggingface.co/{{ source }}) for the architecture, training, evaluation and limitations.
"""


def render_native_card(source_card: ModelCard, source_repo: str, repo_id: str) -> ModelCard:
    """The card of the native-llava sibling: the source's metadata (licence, datasets, results), based on it."""
    metadata = {k: v for k, v in source_card.data.to_dict().items() if k not in ("model-index", "model_name")}
    data = ModelCardData(**{**metadata, "base_model": [source_repo],
                            "tags": [t for t in source_card.data.tags or [] if t != REMOTE_CODE_TAG]})
    if source_card.data.eval_results:
        data.model_name, data.eval_results = repo_id, source_card.data.eval_results
    return ModelCard.from_template(data, template_str=NATIVE_CARD, model_name=repo_id, repo_id=repo_id,
                                   source=source_repo)


# -------------------------------------------------------------------------------------------------------- datasets
def dataset_card(text: str, *, pretty_name: str, license: str, tags: Iterable[str] = ()) -> DatasetCard:
    """A dataset card: our metadata (licence, name, tags) above `text` (markdown)."""
    data = DatasetCardData(license=license, pretty_name=pretty_name, tags=list(dict.fromkeys([*DATASET_TAGS, *tags])))
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text.strip()}\n")


def dataset_kind(folder: Path) -> str:
    """"builder" (datasets_scripts/ output), "engine" (`hf-llava generate-data` output) or an error saying what
    the folder is not."""
    if (folder / "build_report.json").is_file():
        return "builder"
    if (folder / "stats.json").is_file() and (folder / "dataset").is_dir():
        return "engine"
    if (folder / "stats.json").is_file():
        raise UserError(f"{folder}: a data-engine run without images (no dataset/ folder); rerun `hf-llava "
                        "generate-data` with --image-dir COCO_IMAGES (sends no request) to write it, then push")
    if (folder / "config.json").is_file():
        raise UserError(f"{folder}: a model checkpoint, not a dataset; publish it with hub/push_model.py")
    raise UserError(f"{folder}: neither a dataset builder's output (no build_report.json) nor a data-engine output "
                    "(no stats.json + dataset/)")


def _dataset_configs(folder: Path, kind: str) -> dict[str, Path]:
    """config name -> its save_to_disk folder."""
    if kind == "engine":
        return {"default": folder / "dataset"}
    report = json.loads((folder / "build_report.json").read_text(encoding="utf-8"))
    names = list(report["configs"])
    single = (folder / "dataset_dict.json").is_file()
    return {name: folder if single else folder / name for name in names}


def _write_parquet(dataset_dict, data_dir: str, staging: Path) -> tuple[dict, dict]:
    """Parquet shards `<data_dir>/<split>-0000k-of-0000n.parquet` with the images embedded; returns the split
    infos and the bytes written per split."""
    from datasets import config as ds_config
    from datasets.splits import SplitInfo
    from datasets.table import embed_table_storage
    from tqdm.auto import tqdm

    infos, sizes = {}, {}
    for split, dataset in dataset_dict.items():
        num_shards = max(1, math.ceil(dataset.data.nbytes / MAX_SHARD_BYTES))
        sizes[split] = 0
        for index in tqdm(range(num_shards), desc=f"{data_dir}/{split} parquet", leave=False):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format("arrow")
            # like datasets' push_to_hub: image files referenced by path become bytes inside the parquet file
            shard = shard.map(embed_table_storage, batched=True, batch_size=ds_config.DEFAULT_MAX_BATCH_SIZE,
                              keep_in_memory=True)
            path = staging / data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            shard.to_parquet(str(path))
            sizes[split] += path.stat().st_size
        infos[split] = SplitInfo(name=split, num_bytes=dataset.data.nbytes, num_examples=len(dataset))
    return infos, sizes


def _data_dir(config: str) -> str:
    return "data" if config == "default" else config  # push_to_hub's layout


def assemble_dataset(folder: str | Path, staging: Path, card: DatasetCard | None = None) -> DatasetCard:
    """Write into `staging` what publishing `folder` uploads: parquet shards per config and split, README.md (our
    card + `configs`/`dataset_info` metadata) and the producer's extra files. Returns the card."""
    import datasets
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict
    from datasets.utils.metadata import MetadataConfigs

    folder = Path(folder)
    kind = dataset_kind(folder)
    if card is None:
        if kind == "engine":
            from .datagen.hub import render_card

            card = render_card(json.loads((folder / "stats.json").read_text(encoding="utf-8")))
        else:
            card = DatasetCard.load(folder / "README.md")
    configs, infos = {}, {}
    for name, path in _dataset_configs(folder, kind).items():
        try:
            dataset_dict = datasets.load_from_disk(str(path))
        except FileNotFoundError as error:
            raise UserError(f"{path}: config {name!r} of {folder} is missing or not a saved dataset ({error})") \
                from error
        if isinstance(dataset_dict, datasets.Dataset):
            dataset_dict = datasets.DatasetDict({"train": dataset_dict})
        splits, sizes = _write_parquet(dataset_dict, _data_dir(name), staging)
        features = next(iter(dataset_dict.values())).features
        info = DatasetInfo(config_name=name, features=features, splits=SplitDict(),
                           download_size=sum(sizes.values()), dataset_size=sum(s.num_bytes for s in splits.values()))
        for split in splits.values():
            info.splits.add(split)
        info.size_in_bytes = info.download_size + info.dataset_size
        infos[name] = info
        configs[name] = {"data_files": [{"split": s, "path": f"{_data_dir(name)}/{s}-*"} for s in dataset_dict]}
    DatasetInfosDict(infos).to_dataset_card_data(card.data)
    MetadataConfigs(configs).to_dataset_card_data(card.data)
    (staging / "README.md").write_text(str(card), encoding="utf-8")
    if kind == "builder":
        shutil.copyfile(folder / "build_report.json", staging / "build_report.json")
    else:
        stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
        public = {k: v for k, v in stats.items() if k != "config"}  # the run's settings may hold local paths, keys
        (staging / "generation_stats.json").write_text(json.dumps(public, indent=2, ensure_ascii=False) + "\n")
        if (folder / "llava_instruct.json").is_file():
            _link_or_copy(folder / "llava_instruct.json", staging / "llava_instruct.json")
    return card


def merge_dataset_card(ours: DatasetCard, remote: DatasetCard | None) -> tuple[DatasetCard, list[str]]:
    """`ours` plus the configs (metadata and files) of the card already on the Hub that this push does not carry;
    returns the card and the data folders to replace (ours)."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    our_configs = MetadataConfigs.from_dataset_card_data(ours.data)
    if remote is not None:
        remote_configs = MetadataConfigs.from_dataset_card_data(remote.data)
        remote_infos = DatasetInfosDict.from_dataset_card_data(remote.data)
        kept = {name: value for name, value in remote_configs.items() if name not in our_configs}
        if kept:
            infos = DatasetInfosDict.from_dataset_card_data(ours.data)
            infos.update({name: info for name, info in remote_infos.items() if name in kept})
            MetadataConfigs({**kept, **our_configs}).to_dataset_card_data(ours.data)
            DatasetInfosDict(infos).to_dataset_card_data(ours.data)
    return ours, [_data_dir(name) for name in our_configs]


# --------------------------------------------------------------------------------------------------------- uploads
def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # weights: no second copy on disk
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def staging_folder(dry_run: str | Path | None) -> Iterator[Path]:
    """The folder a push is assembled in: `dry_run` (created; must be empty) or a temporary one."""
    if dry_run is not None:
        from .checkpoint import check_output_dir

        path = check_output_dir(dry_run, overwrite=False, name="--dry-run")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hf-llava-push-") as tmp:
        yield Path(tmp)


def hub_api(token: str | None = None) -> HfApi:
    """An HfApi whose token was checked: a missing or refused token is a UserError before anything is prepared."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=token)
    try:
        api.whoami()
    except LocalTokenNotFoundError:
        raise UserError("no Hugging Face token: set HF_TOKEN, pass --token or run `hf auth login` (a token with "
                        "write access)") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise UserError(f"the Hub at {api.endpoint} refused the token (401): check HF_TOKEN / --token") from None
        raise UserError(f"cannot reach the Hub at {api.endpoint} ({error})") from None
    except OSError as error:  # connection refused, DNS
        raise UserError(f"cannot reach the Hub at {api.endpoint} ({error})") from None
    return api


def check_model_repo(api: HfApi, repo_id: str, model_type: str, revision: str | None = None) -> None:
    """Refuse a model repo that already holds another kind of model (its config.json's model_type)."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "config.json", revision=revision)
    except RevisionNotFoundError:  # a new branch starts from main
        return check_model_repo(api, repo_id, model_type) if revision not in (None, "main") else None
    except (RepositoryNotFoundError, EntryNotFoundError):
        return  # a new repo, or one without a model yet
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8")).get("model_type")
    except (UnicodeDecodeError, json.JSONDecodeError):
        found = "unreadable"
    if found != model_type:
        raise UserError(f"{repo_id} already holds a model of type {found!r} (expected {model_type!r}); choose another "
                        "repo id, or delete that repo first")


def upload(api: HfApi, staging: Path, repo_id: str, *, repo_type: str = "model", revision: str | None = None,
           private: bool = False, commit_message: str, delete_patterns: list[str] | None = None) -> str:
    """Upload `staging` as one commit (see module notes); returns the commit URL. A failure is a UserError saying
    that nothing was committed and that a rerun resumes."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        commit = api.upload_folder(folder_path=staging, repo_id=repo_id, repo_type=repo_type, revision=revision,
                                   commit_message=commit_message, delete_patterns=delete_patterns)
    except Exception as error:
        cause = error.__cause__ if isinstance(error, RuntimeError) else error  # LFS failures come wrapped
        transfer = (isinstance(cause, (HfHubHTTPError, OSError))
                    or type(cause).__module__.startswith(("httpx", "httpcore")))  # connection errors
        if not transfer:
            raise
        reason = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise UserError(f"upload to {repo_type} {repo_id} stopped ({reason}); nothing was committed: run the same "
                        "command again, files already sent are not sent again") from error
    return commit.commit_url


# ---------------------------------------------------------------------------------------------------------- models
def check_checkpoint_folder(folder: str | Path) -> Path:
    """A hf_llava checkpoint folder with everything a Hub repo needs, or a UserError naming what is missing."""
    from .checkpoint import check_hf_llava_checkpoint

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"CHECKPOINT {folder}: no such folder")
    check_hf_llava_checkpoint(str(folder), what="CHECKPOINT")
    missing = [name for name in (*REMOTE_CODE_FILES, "processor_config.json", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise UserError(f"CHECKPOINT {folder}: incomplete checkpoint, missing {', '.join(missing)} (save it with "
                        "hf_llava's save_checkpoint, or `hf-llava convert`)")
    return folder


def assemble_model(folder: Path, staging: Path, card: ModelCard, inputs: dict) -> None:
    """The checkpoint's files (weights hard-linked) with `card` as README.md and the card inputs next to it."""
    from huggingface_hub.utils import filter_repo_objects

    from .training.feature_cache import CACHE_DIR

    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    ignore = [*MODEL_IGNORE, f"{CACHE_DIR}/**", "README.md", CARD_INPUTS]
    for name in filter_repo_objects(files, ignore_patterns=ignore):
        _link_or_copy(folder / name, staging / name)
    card.save(staging / "README.md")
    write_card_inputs(inputs, staging)


def push_checkpoint(folder: str | Path, repo_id: str, *, token: str | None = None, revision: str | None = None,
                    private: bool = False, eval_results: Iterable[str | Path] = (), license: str | None = None,
                    datasets: Iterable[str] = (), llava_hf_repo: str | None = None, dry_run: str | Path | None = None,
                    require_license: bool = True, commit_message: str | None = None) -> dict:
    """Publish a hf_llava checkpoint folder (see hub/push_model.py); returns {"card", "url", "llava_hf_url",
    "staging"}. Every check runs before the upload; with `dry_run` the files go to that folder instead."""
    folder = check_checkpoint_folder(folder)
    results = read_eval_results(eval_results)
    api = None if dry_run is not None else hub_api(token)
    inputs = read_card_inputs(folder)
    if require_license:
        license = resolve_license(inputs, license, api)
    inputs = {**inputs, "repo_id": repo_id, "license": license or inputs.get("license")}
    card = render_model_card(inputs, repo_id=repo_id, eval_results=results, license=license, datasets=datasets,
                             llava_hf_repo=llava_hf_repo)
    if api is not None:
        check_model_repo(api, repo_id, "hf_llava", revision)
        if llava_hf_repo:
            check_model_repo(api, llava_hf_repo, "llava", revision)
    outcome = {"card": card, "url": None, "llava_hf_url": None, "staging": None}
    with staging_folder(dry_run) as staging:
        model_dir = staging / "model" if llava_hf_repo else staging
        assemble_model(folder, model_dir, card, inputs)
        native_dir = None
        if llava_hf_repo:
            from .convert import to_llava_hf

            native_dir = staging / "llava-hf"
            to_llava_hf(folder, native_dir)  # a model that cannot be exported fails here, before any upload
            render_native_card(card, repo_id, llava_hf_repo).save(native_dir / "README.md")
        outcome["staging"] = staging if dry_run is not None else None
        if api is None:
            return outcome
        message = commit_message or "Upload hf_llava checkpoint (hf-llava hub/push_model.py)"
        # weights left over from an earlier push with other sharding would not match the new index
        stale = ["*.safetensors", "model.safetensors.index.json"]
        outcome["url"] = upload(api, model_dir, repo_id, revision=revision, private=private, commit_message=message,
                                delete_patterns=stale)
        if native_dir is not None:
            outcome["llava_hf_url"] = upload(api, native_dir, llava_hf_repo, revision=revision, private=private,
                                             commit_message=f"Native llava export of {repo_id}",
                                             delete_patterns=stale)
    return outcome


# -------------------------------------------------------------------------------------------------------- datasets
def push_dataset(folder: str | Path, repo_id: str, *, token: str | None = None, revision: str | None = None,
                 private: bool = False, dry_run: str | Path | None = None, card: DatasetCard | None = None) -> dict:
    """Publish a builder's or the data engine's output folder (see hub/push_dataset.py): every config and split as
    parquet with embedded images, the card and the producer's report, in one commit. Returns {"card", "url",
    "staging"}."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"FOLDER {folder}: no such folder")
    dataset_kind(folder)
    api = None if dry_run is not None else hub_api(token)
    with staging_folder(dry_run) as staging:
        card = assemble_dataset(folder, staging, card)
        if api is None:
            return {"card": card, "url": None, "staging": staging}
        remote = None
        if api.repo_exists(repo_id, repo_type="dataset"):
            for rev in dict.fromkeys([revision or "main", "main"]):  # a new branch starts from main's card
                try:
                    remote = DatasetCard.load(api.hf_hub_download(repo_id, "README.md", repo_type="dataset",
                                                                  revision=rev))
                    break
                except Exception:  # no README (yet) on that revision: nothing to keep from it
                    continue
        card, replaced = merge_dataset_card(card, remote)
        (staging / "README.md").write_text(str(card), encoding="utf-8")
        url = upload(api, staging, repo_id, repo_type="dataset", revision=revision, private=private,
                     commit_message=f"Upload {folder.name} (hf-llava)",
                     delete_patterns=[f"{data_dir}/*" for data_dir in replaced])
    return {"card": card, "url": url, "staging": None}


# ------------------------------------------------------------------------------------------------------ collections
def collection_items(api: HfApi, model_repo: str, extra: Iterable[tuple[str, str]] = (),
                     revision: str | None = None) -> list[tuple[str, str, str]]:
    """(item type, repo id, note) for a model, the Hub datasets its card names (training data and evaluation
    benchmarks, with their numbers) and any `extra` (type, id) items; repos the Hub does not have are left out
    (and logged)."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        card = ModelCard.load(api.hf_hub_download(model_repo, "README.md", revision=revision))
    except (RepositoryNotFoundError, EntryNotFoundError) as error:
        raise UserError(f"MODEL_REPO {model_repo}: no such model repo with a README.md on {api.endpoint} "
                        f"({type(error).__name__}); publish it first with hub/push_model.py") from None
    data = card.data
    results = data.eval_results or []
    headline = "; ".join(f"{r.dataset_name} {r.metric_name or r.metric_type} {r.metric_value}" for r in results)
    items = [("model", model_repo, headline[:500])]
    for dataset in data.datasets or []:
        items.append(("dataset", dataset, "training data"))
    by_dataset: dict[str, list[str]] = {}
    for r in results:
        by_dataset.setdefault(r.dataset_type, []).append(f"{r.metric_name or r.metric_type} {r.metric_value}")
    for dataset, numbers in by_dataset.items():
        items.append(("dataset", dataset, f"evaluation: {'; '.join(numbers)}"[:500]))
    items += [(kind, repo, "") for kind, repo in extra]
    seen, kept = set(), []
    for kind, repo, note in items:
        if (kind, repo) in seen:
            continue
        if not api.repo_exists(repo, repo_type=kind):
            print(f"{kind} {repo} is not on {api.endpoint}: left out of the collection", file=sys.stderr)
            continue
        seen.add((kind, repo))
        kept.append((kind, repo, note))
    return kept


# ---------------------------------------------------------------------------------------------- the reference card
# The top-level MODEL_CARD.md is the card of the demo's stage-2 model (hf-llava demo) with its measured results,
# rendered from the inputs checked in under hub/reference/ with these publishing settings. The demo writes the same
# card into its output folder; `python hub/reference_card.py outputs/demo` copies a run's inputs in and rewrites it.
REFERENCE_REPO = "hf-llava/shapes-smollm2-llava"
REFERENCE_LICENSE = "apache-2.0"  # the demo's parts: its own tower, SmolLM2 (apache-2.0), synthetic shapes (apache-2.0)
REFERENCE_DATASETS = ["hf-llava/synthetic-shapes"]  # where hub/README.md publishes the demo's data
REFERENCE_DESCRIPTION = (
    "The reference model of hf-llava, made by `hf-llava demo` on a CPU: a small CLIP vision tower (`tower`) trained "
    "contrastively on the captions of synthetic scenes of coloured shapes, SmolLM2-135M-Instruct, a projector "
    "trained in stage 1 (feature alignment) and LoRA + projector in stage 2 (instruction tuning). It answers "
    "questions about such scenes (colour, shape, count, position, existence); it is a demonstration of the "
    "pipeline, not a general assistant. See docs/demo.md in the hf-llava repository.")


def reference_card(inputs: dict, results_files: Iterable[str | Path]) -> ModelCard:
    """The demo model's card: its card inputs, the results.json files of its evaluation, the reference settings."""
    inputs = {**inputs, "description": REFERENCE_DESCRIPTION}
    return render_model_card(inputs, repo_id=REFERENCE_REPO, eval_results=read_eval_results(results_files),
                             license=REFERENCE_LICENSE, datasets=REFERENCE_DATASETS,
                             model_name="hf-llava shapes-smollm2 (demo model)")


def write_demo_card(demo_dir: str | Path) -> Path:
    """The demo's hook: its model's card (stage2-finetune + eval/results.json) as DEMO_DIR/MODEL_CARD.md."""
    demo_dir = Path(demo_dir)
    card = reference_card(read_card_inputs(demo_dir / "stage2-finetune"), [demo_dir / "eval" / "results.json"])
    path = demo_dir / "MODEL_CARD.md"
    path.write_text(str(card), encoding="utf-8")
    return path


def portable_inputs(inputs: dict) -> dict:
    """Card inputs without the machine's paths: local parts are named by their folder name only."""
    parts = [{**p, "name": p["name"] if p["hub"] else Path(p["name"]).name} for p in inputs["parts"]]
    return {**inputs, "parts": parts}
