"""Training mixtures: `DatasetSpec`s -> one `datasets.Dataset` of canonical rows.

Design notes
- Sources: a `save_to_disk` folder (`load_from_disk`), a Hub id or local data folder (`load_dataset`), or a LLaVA
  JSON file (converted with `hf_llava.data.llava_json`, cached by `Dataset.from_generator`; images are read and
  verified once, bad records raise or are counted with `skip_bad`).
- Only the canonical columns are kept and cast to the canonical features, so sources built by different builders
  concatenate. Weights are row multiplicities (see `DatasetSpec`), drawn with a seeded RNG: the mixture is the
  same on every rank and every resume. The trainer's sampler shuffles it.
"""

import logging
import random
from pathlib import Path

from ..data.schema import CANONICAL_COLUMNS
from ..errors import UserError
from .arguments import DatasetSpec

logger = logging.getLogger(__name__)


def _llava_json_rows(path: str, image_root: str | None, skip_bad: bool):
    from ..data.errors import SkipReport
    from ..data.llava_json import iter_llava_json

    report = SkipReport(skip_bad=skip_bad)
    rows = 0
    for rows, row in enumerate(iter_llava_json(path, image_root, report), 1):
        yield row
    if report.total:
        logger.warning("%s: %s", path, report.summary())
    if not rows:  # datasets would only say 'Instruction "train" corresponds to no data!'
        if report.total:
            raise UserError(f"llava_json {path}: every record was skipped ({report.summary()}), e.g. "
                            f"{report.examples[0]}; fix that cause (a wrong image_root?)")
        raise UserError(f"llava_json {path}: has no records")


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _load_dataset(spec: DatasetSpec):
    """`load_dataset` for a local data folder or a Hub id, after checking what datasets would misreport: a config
    name that is not there (datasets lists a data folder's configs as ['default']), a multi-config `save_to_disk`
    build given without `name` (datasets would read every config's files as one dataset), a path that is neither
    a folder nor a Hub dataset."""
    import datasets

    folder = Path(spec.path)
    if folder.is_dir():
        configs = sorted(sub.name for sub in folder.iterdir() if _is_saved_dataset(sub))
        if configs and spec.name is None:
            raise UserError(f"dataset path {spec.path} holds the configs {configs} (built with save_to_disk): set "
                            f"`name` to one of them, e.g. {{path: {spec.path}, name: {configs[0]}}}")
        if not configs and spec.name is not None:
            configs = datasets.get_dataset_config_names(spec.path)
        if spec.name is not None and spec.name not in configs:
            raise UserError(f"dataset path {spec.path} has no config {spec.name!r}; its configs: {configs}")
    elif folder.exists():
        raise UserError(f"dataset path {spec.path}: is a file; use `llava_json` for a LLaVA JSON file, or give the "
                        "folder a builder wrote")
    try:
        if spec.name is not None and not folder.is_dir():
            configs = datasets.get_dataset_config_names(spec.path)
            if spec.name not in configs:
                raise UserError(f"dataset {spec.path} (Hub) has no config {spec.name!r}; its configs: {configs}")
        return datasets.load_dataset(spec.path, spec.name, split=spec.split)
    except FileNotFoundError as error:  # datasets' DatasetNotFoundError and "Couldn't find any data file" are these
        raise UserError(f"dataset path {spec.path}: no such folder, and no such Hub dataset ({error})") from error
    except ConnectionError as error:  # most often a mistyped local path, looked up on an unreachable Hub
        raise UserError(f"dataset path {spec.path}: no such folder, and the Hub could not be reached to look for a "
                        f"dataset of that name ({error})") from error


def load_source(spec: DatasetSpec, skip_bad: bool = False):
    """The rows of one source (one split), canonical columns only."""
    import datasets

    from ..data.schema import features

    if spec.llava_json is not None:
        if not Path(spec.llava_json).is_file():
            raise UserError(f"dataset llava_json {spec.llava_json}: no such file")
        try:
            dataset = datasets.Dataset.from_generator(
                _llava_json_rows, features=features(),
                gen_kwargs={"path": spec.llava_json, "image_root": spec.image_root, "skip_bad": skip_bad},
            )
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, UserError):  # a bad record, or no rows: show it, not the wrapper
                raise error.__cause__ from None
            raise
    else:
        local = Path(spec.path, spec.name or "")
        if _is_saved_dataset(local):
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                if spec.split not in dataset:
                    raise UserError(f"{local} has no split {spec.split!r} (it has {list(dataset)})")
                dataset = dataset[spec.split]
        else:
            dataset = _load_dataset(spec)
    if spec.where:
        absent = [column for column in spec.where if column not in dataset.column_names]
        if absent:
            raise UserError(f"dataset {spec.describe()} has no column {absent[0]!r} to filter on (`where`); it has "
                             f"{dataset.column_names}")
        # indices from the filter columns alone: no image decoded, no cache file written into the data folder
        allowed = [set(values) for values in spec.where.values()]
        columns = zip(*(dataset[column] for column in spec.where))
        dataset = dataset.select([k for k, row in enumerate(columns) if all(map(set.__contains__, allowed, row))])
    missing = [column for column in CANONICAL_COLUMNS if column not in dataset.column_names]
    if missing:
        raise UserError(
            f"dataset {spec.describe()} lacks the canonical column(s) {missing} (it has {dataset.column_names}); "
            "convert it with a datasets_scripts/ builder first"
        )
    return dataset.select_columns(list(CANONICAL_COLUMNS)).cast(features())


def weighted_indices(num_rows: int, weight: float, rng: random.Random) -> list[int]:
    """round(weight * num_rows) row indices: whole copies for the integer part, a random subset for the rest."""
    copies, fraction = divmod(weight, 1)
    extra = round(fraction * num_rows)
    return list(range(num_rows)) * int(copies) + sorted(rng.sample(range(num_rows), extra))


def load_mixture(specs: list[DatasetSpec], seed: int = 0, skip_bad: bool = False):
    """One Dataset of every source, each repeated/subsampled by its weight."""
    import datasets

    if not specs:
        raise UserError("no datasets given: set `datasets` (a list of sources) in the recipe or on the command line")
    rng = random.Random(seed)
    parts = []
    for spec in specs:
        dataset = load_source(spec, skip_bad)
        if len(dataset) == 0:
            matching = f" (no row matches where={spec.where})" if spec.where else ""
            raise UserError(f"dataset {spec.describe()} is empty{matching}")
        if spec.weight != 1:
            dataset = dataset.select(weighted_indices(len(dataset), spec.weight, rng))
        logger.info("dataset %s: %d rows (weight %g)", spec.describe(), len(dataset), spec.weight)
        parts.append(dataset)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def require_images(dataset, skip_bad: bool = False):
    """Stage 1 trains only the projector (and a tuned tower): a text-only row gives them no gradient, and a batch of
    such rows (likely with `group_by_modality_length`) would fail in backward with an obscure error. So text-only
    rows are an error naming them, or with `skip_bad` are dropped and counted."""
    from .sampler import modality_lengths  # negative for text-only rows, read from `messages` only

    text_only = [i for i, length in enumerate(modality_lengths(dataset, image_seq_length=1)) if length < 0]
    if not text_only:
        return dataset
    ids = ", ".join(map(str, dataset.select(text_only[:3])["id"]))
    message = (f"{len(text_only)} of {len(dataset)} stage-1 rows have no image (e.g. {ids}): stage 1 trains only "
               "the projector, which text-only rows cannot teach")
    if not skip_bad:
        raise UserError(f"{message}. Remove them from the stage-1 mixture (train them in stage 2), or set "
                         "skip_bad_samples to drop them")
    if len(text_only) == len(dataset):
        raise UserError(f"{message}: skipping them (skip_bad_samples) would leave no row to train on")
    logger.warning("%s; skipped (skip_bad_samples)", message)
    keep = sorted(set(range(len(dataset))) - set(text_only))
    return dataset.select(keep)
