"""What every builder in datasets_scripts/ shares: a `GeneratorBasedBuilder` base, the build-to-disk step, the
Hub push and the command line.

Design notes
- A builder subclasses `CanonicalBuilder` and only says which columns it adds, which splits it has, and how to
  generate rows (library code does the converting). Its config is a dataclass whose fields made with `option()`
  become command-line flags, so a builder's inputs are declared once for Python and CLI alike.
- Every yielded row is checked with `schema.validate_row`; bad records raise `BadRecordError` or, with
  `skip_bad`, are counted per split in `builder.skip_reports` and written to build_report.json and the card.
- datasets 5 has no loading scripts: builders are instantiated directly (`download_and_prepare`, `as_dataset`).
  The CLI prepares into a staging folder next to the output and renames it into place only when everything
  succeeded, so an interrupted build never leaves a half-written dataset that looks complete.
- A config that ends with zero rows (an empty input, or every record skipped) is an error naming the cause and the
  counted skip reasons: `load_from_disk` could not open what would be written.
- A builder with several configs (different columns per config, e.g. synthetic shapes) writes one
  `DatasetDict` per config into OUT/<config>; a single-config builder writes its `DatasetDict` into OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import datasets
import datasets.exceptions

from ..errors import DEBUG_ENV, UserError, run_command
from .cards import render_card
from .errors import BadRecordError, SkipReport
from .schema import features, validate_row

logger = logging.getLogger(__name__)


def option(default=None, help: str = "", *, required: bool = False, type=None, choices=None):
    """A config field that is also a command-line flag (`--field-name`)."""
    return dataclasses.field(default=default, metadata={"help": help, "required": required, "type": type,
                                                        "choices": choices})


@dataclasses.dataclass
class CanonicalConfig(datasets.BuilderConfig):
    skip_bad: bool = option(False, "skip bad records (missing/corrupt image, malformed record, wrong number of "
                                   "<image> markers, unknown category, box outside the image) instead of stopping "
                                   "at the first one; skips are counted and reported at the end and in the card")


class CanonicalBuilder(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = CanonicalConfig
    SOURCE = ""  # card: where the data comes from
    LICENSE = "other"  # card metadata (Hub license id)
    LICENSE_NOTE = ""  # card: licence details

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_reports: dict[str, SkipReport] = {}

    # --- what a subclass provides ---
    def extra_features(self) -> dict:
        return {}

    def split_names(self) -> list[str]:
        return ["train"]

    def generate_rows(self, split: str, report: SkipReport) -> Iterator[dict]:
        raise NotImplementedError

    # --- datasets plumbing ---
    def _info(self):
        return datasets.DatasetInfo(description=(self.__doc__ or "").strip(), license=self.LICENSE,
                                    features=features(self.extra_features()))

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s}) for s in self.split_names()]

    def _generate_examples(self, split):
        report = self.skip_reports[split] = SkipReport(skip_bad=self.config.skip_bad)
        # progress: datasets shows a "Generating <split> split" bar for what we yield
        for key, row in enumerate(self.generate_rows(split, report)):
            try:
                validate_row(row, f"{self.dataset_name} {split}")
            except BadRecordError as e:
                report.bad(e)
                continue
            yield key, row
        if report.total:
            logger.warning("%s[%s] %s: %s", self.dataset_name, self.config.name, split, report.summary())


def _prepared(builder_cls, config_name, cache_dir, **config_kwargs) -> CanonicalBuilder:
    builder = builder_cls(config_name=config_name, cache_dir=cache_dir, dataset_name=builder_cls.__name__,
                          **config_kwargs)
    try:
        # always regenerate: a cached copy would come without its skip report
        builder.download_and_prepare(download_mode=datasets.DownloadMode.FORCE_REDOWNLOAD)
    except datasets.exceptions.DatasetGenerationError as e:
        if isinstance(e.__cause__, (BadRecordError, OSError, ValueError)):  # ours: show it, not the wrapper
            raise e.__cause__ from None
        raise
    return builder


def _dataset_dict(builder: CanonicalBuilder) -> datasets.DatasetDict:
    """`as_dataset()`, except that an empty split (e.g. every record skipped) becomes an empty Dataset instead of
    an error from datasets."""
    features = builder.info.features
    return datasets.DatasetDict({
        split: builder.as_dataset(split=split) if info.num_examples
        else datasets.Dataset.from_dict({name: [] for name in features}, features=features)
        for split, info in builder.info.splits.items()})


def _require_rows(builder: CanonicalBuilder, dd: datasets.DatasetDict) -> None:
    if any(len(split) for split in dd.values()):
        return
    config = builder.config
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if "help" in f.metadata}
    inputs = [f"--{name.replace('_', '-')} {value}" for name, value in values.items()
              if isinstance(value, str) and os.path.isfile(value)]  # the input files, to name them
    what = f"{type(builder).__name__} ({config.name})" + (f" from {', '.join(inputs)}" if inputs else "")
    skipped = [report for report in builder.skip_reports.values() if report.total]
    if not skipped:
        raise UserError(f"{what}: the input has no records (an empty file, or an empty list): nothing to write")
    summary = "; ".join(report.summary() for report in skipped)
    raise UserError(f"{what}: every record was skipped ({summary}), e.g. {skipped[0].examples[0]}; fix that "
                    "cause (a wrong --image-root?) and build again")


def build(builder_cls: type[CanonicalBuilder], config_name: str | None = None, cache_dir: str | None = None,
          **config_kwargs) -> tuple[datasets.DatasetDict, dict[str, SkipReport]]:
    """Build one config from Python; returns the DatasetDict and the per-split skip reports."""
    builder = _prepared(builder_cls, config_name, cache_dir, **config_kwargs)
    return _dataset_dict(builder), builder.skip_reports


def config_names(builder_cls) -> list[str]:
    return [c.name for c in builder_cls.BUILDER_CONFIGS] or ["default"]


def build_to_disk(builder_cls, output_dir: str, configs: list[str] | None = None, overwrite: bool = False,
                  command: str | None = None, **config_kwargs) -> dict:
    """Build the given configs (default: all) into `output_dir` (see module notes for the layout), with README.md
    (the dataset card) and build_report.json. Returns the report dict."""
    from ..checkpoint import check_output_dir

    output_dir = str(check_output_dir(output_dir, overwrite=overwrite, name="--output-dir"))
    multi = len(config_names(builder_cls)) > 1
    configs = configs or config_names(builder_cls)
    try:
        os.makedirs(os.path.dirname(output_dir), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=os.path.basename(output_dir) + ".partial-", dir=os.path.dirname(output_dir))
    except OSError as e:  # a parent that is a file, a read-only folder
        raise UserError(f"--output-dir {output_dir}: cannot write there ({e.strerror or e})") from e
    final = os.path.join(staging, "out")
    try:
        report = {"builder": builder_cls.__name__, "command": command, "configs": {}}
        built, info = {}, None
        for name in configs:
            builder = _prepared(builder_cls, name if multi else None, os.path.join(staging, ".cache", name),
                                **config_kwargs)
            dd, info = _dataset_dict(builder), builder.info
            _require_rows(builder, dd)
            report["configs"][name] = {
                "splits": {s: {"rows": len(dd[s]), **builder.skip_reports[s].to_dict()} for s in dd}}
            # an empty split is left out: datasets' load_from_disk cannot open a saved split with no rows
            dd = datasets.DatasetDict({split: rows for split, rows in dd.items() if len(rows)})
            dd.save_to_disk(os.path.join(final, name) if multi else final)
            built[name] = dd
        with open(os.path.join(final, "README.md"), "w", encoding="utf-8") as f:
            f.write(render_card(builder_cls, info, built, report, multi=multi))
        with open(os.path.join(final, "build_report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        del built  # release the memory-mapped cache files before deleting them
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.rename(final, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def push_to_hub(output_dir: str, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Push a folder written by `build_to_disk` (every config and split, the card and build_report.json) to a Hub
    dataset repo in one commit (hf_llava.hub.push_dataset); returns the commit URL."""
    from ..hub import push_dataset

    return push_dataset(output_dir, repo_id, private=private, token=token)["url"]


def _add_option_arguments(parser: argparse.ArgumentParser, config_cls) -> list[str]:
    base = {f.name for f in dataclasses.fields(datasets.BuilderConfig)}
    names = []
    for f in dataclasses.fields(config_cls):
        if f.name in base or "help" not in f.metadata:
            continue
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", help=meta["help"])
        else:
            kind = meta["type"] or (type(f.default) if f.default is not None else str)
            default_note = "" if f.default is None else f" (default: {f.default})"
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default, required=meta["required"],
                                choices=meta["choices"], help=meta["help"] + default_note)
        names.append(f.name)
    return names


def main(builder_cls: type[CanonicalBuilder], argv: list[str] | None = None) -> dict:
    """The command line of a builder script: build to --output-dir, optionally push to the Hub."""
    doc = (builder_cls.__doc__ or "").strip()
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=getattr(builder_cls, "EPILOG", None))
    names = _add_option_arguments(parser, builder_cls.BUILDER_CONFIG_CLASS)
    parser.add_argument("--output-dir", required=True,
                        help="where to write the dataset (save_to_disk layout) with README.md and build_report.json")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    if len(config_names(builder_cls)) > 1:
        parser.add_argument("--configs", nargs="+", choices=config_names(builder_cls), default=None,
                            help="configs to build (default: all), each written to OUTPUT_DIR/<config>")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                        help="also push every config and the dataset card to this Hub dataset repo "
                             "(token from HF_TOKEN or `hf auth login`; endpoint from HF_ENDPOINT)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of user errors too (as does {DEBUG_ENV}=1)")
    args = parser.parse_args(argv)
    kwargs = {n: getattr(args, n) for n in names}
    command = " ".join([os.path.basename(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])
    reports = []

    def build_reporting_input_errors():
        try:
            reports.append(build_to_disk(builder_cls, args.output_dir, configs=getattr(args, "configs", None),
                                         overwrite=args.overwrite, command=command, **kwargs))
        except BadRecordError as e:
            raise UserError(f"{e} (or pass --skip-bad to count and skip bad records)") from e
        except OSError as e:  # an input that is missing, a folder, unreadable: named by its flag
            flag = next((f"--{n.replace('_', '-')} " for n in names if kwargs[n] and kwargs[n] == e.filename), "")
            raise UserError(f"{flag}{e.filename}: {e.strerror}" if e.filename else str(e)) from e
        except ValueError as e:  # the source readers' own errors name their input file
            if isinstance(e, UserError):
                raise
            raise UserError(str(e)) from e

    code = run_command(parser.prog, build_reporting_input_errors, args.debug)
    if code:
        parser.exit(code)
    report = reports[0]
    for name, info in report["configs"].items():
        for split, s in info["splits"].items():
            skipped = f", {s['skipped']} skipped {s['by_problem']}" if s["skipped"] else ""
            print(f"{name}/{split}: {s['rows']} rows{skipped}")
    print(f"written to {os.path.abspath(args.output_dir)}")
    if args.push_to_hub:  # a missing token or an interrupted upload ends in one line too
        code = run_command(parser.prog, lambda: push_to_hub(args.output_dir, args.push_to_hub, private=args.private),
                           args.debug)
        if code:
            parser.exit(code)
        print(f"pushed to {args.push_to_hub}")
    return report


def load_builder_script(path: str | os.PathLike):
    """Import a datasets_scripts/<name>.py file as module `datasets_scripts.<name>` (datasets re-imports a
    builder's module by name, so it must be registered in sys.modules)."""
    import importlib.util

    name = "datasets_scripts." + os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
