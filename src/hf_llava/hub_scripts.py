"""The command lines of the top-level `hub/` scripts (push_model.py, push_dataset.py, collection.py); the work is
hf_llava.hub's. Each script is `script_main(prog, <main>)`: a user error is one line and exit code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UserError

TOKEN_HELP = "Hub token with write access (default: HF_TOKEN, or the one saved by `hf auth login`)"


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--private", action="store_true", help=f"create the {what} as private (an existing repo "
                        "keeps its visibility)")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="commit to this branch (created from main if missing); default main")
    parser.add_argument("--dry-run", metavar="DIR", default=None,
                        help="write what would be uploaded into DIR (a new or empty folder) and print the card; "
                             "nothing is sent and no token is needed")
    parser.add_argument("--token", default=None, help=TOKEN_HELP)


def push_model_main(argv: list[str] | None = None) -> int:
    from .hub import push_checkpoint

    parser = argparse.ArgumentParser(
        prog="hub/push_model.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Publish a hf_llava checkpoint to a Hub model repo in one commit: weights, processor, chat "
        "template, remote code and a model card whose metadata has library_name, pipeline_tag, base_model (tower "
        "and LLM), datasets, license and model-index (the results of `hf-llava eval`). Every check runs before the "
        "upload; an interrupted upload changes nothing on the Hub and a rerun sends only what is missing.",
        epilog="example:\n  python hub/push_model.py outputs/demo/stage2-finetune me/shapes-smollm2-llava \\\n"
               "      --eval-results outputs/demo/eval --license apache-2.0\nnaming conventions: hub/README.md")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a hf_llava checkpoint folder (build, convert, train)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the model repo, namespace/name")
    parser.add_argument("--eval-results", nargs="+", action="extend", default=[], metavar="PATH",
                        help="results.json files written by `hf-llava eval`, or folders holding them (searched "
                             "recursively); their hub_results become the card's model-index")
    parser.add_argument("--license", default=None,
                        help="Hub licence id; default: the stricter of the parts' licences (tower, LLM, data) where "
                             "all are known and combine, else this flag is required")
    parser.add_argument("--datasets", nargs="+", action="extend", default=[], metavar="ID",
                        help="Hub dataset ids to list as training data besides those the checkpoint records (e.g. "
                             "where it was trained from a local copy)")
    parser.add_argument("--also-llava-hf", metavar="REPO_ID", default=None,
                        help="also publish the transformers-native llava export (`hf-llava convert --to llava-hf`) "
                             "to this sibling repo, for vLLM/SGLang without remote code")
    _common(parser, "repo")
    args = parser.parse_args(argv)
    outcome = push_checkpoint(args.checkpoint, args.repo_id, token=args.token, revision=args.revision,
                              private=args.private, eval_results=args.eval_results, license=args.license,
                              datasets=args.datasets, llava_hf_repo=args.also_llava_hf, dry_run=args.dry_run)
    print(outcome["card"])
    if args.dry_run:
        print(f"dry run: the files to upload are in {outcome['staging']}")
    else:
        print(f"published {args.repo_id}: {outcome['url']}")
        if outcome["llava_hf_url"]:
            print(f"published {args.also_llava_hf}: {outcome['llava_hf_url']}")
    return 0


def push_dataset_main(argv: list[str] | None = None) -> int:
    from .hub import push_dataset

    parser = argparse.ArgumentParser(
        prog="hub/push_dataset.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Publish a dataset builder's output (datasets_scripts/*.py --output-dir) or a data-engine run "
        "(`hf-llava generate-data` OUT, with images) to a Hub dataset repo in one commit: every config and split as "
        "parquet with the images embedded, the card with the configs metadata the dataset viewer reads, and the "
        "build report (or llava_instruct.json + generation stats). Configs already in the repo that this folder "
        "does not have are kept.",
        epilog="example:\n  python hub/push_dataset.py data/shapes me/synthetic-shapes\n"
               "  load: datasets.load_dataset('me/synthetic-shapes', 'vqa')\nnaming conventions: hub/README.md")
    parser.add_argument("folder", metavar="FOLDER", help="a builder's --output-dir or a generate-data OUT folder")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the dataset repo, namespace/name")
    _common(parser, "repo")
    args = parser.parse_args(argv)
    outcome = push_dataset(args.folder, args.repo_id, token=args.token, revision=args.revision,
                           private=args.private, dry_run=args.dry_run)
    print(outcome["card"])
    print(f"dry run: the files to upload are in {outcome['staging']}" if args.dry_run
          else f"published {args.repo_id}: {outcome['url']}")
    return 0


def collection_main(argv: list[str] | None = None) -> int:
    from huggingface_hub import HfApi

    from .hub import collection_items, hub_api

    parser = argparse.ArgumentParser(
        prog="hub/collection.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Gather a published model, the datasets its card names (training data, and the benchmarks of "
        "its model-index with their numbers as notes) and any extra repos into a Hub collection. Repos the Hub "
        "does not have are left out and named.",
        epilog="example:\n  python hub/collection.py me/shapes-smollm2-llava --item model:me/shapes-smollm2-llava-hf")
    parser.add_argument("model", metavar="MODEL_REPO", help="the published hf_llava model repo")
    parser.add_argument("--title", default=None, help="collection title (default: the model's name + ' (hf-llava)')")
    parser.add_argument("--description", default=None, help="collection description")
    parser.add_argument("--namespace", default=None, help="user or organisation owning it (default: the token's user)")
    parser.add_argument("--item", nargs="+", action="extend", default=[], metavar="TYPE:ID",
                        help="extra items, e.g. model:me/x-llava-hf dataset:me/data")
    parser.add_argument("--private", action="store_true", help="create the collection as private")
    parser.add_argument("--revision", default=None, help="read the model card at this revision (default main)")
    parser.add_argument("--dry-run", metavar="DIR", default=None,
                        help="write the collection that would be made (collection.json) into DIR and print it")
    parser.add_argument("--token", default=None, help=TOKEN_HELP)
    args = parser.parse_args(argv)
    extra = []
    for item in args.item:
        kind, _, repo = item.partition(":")
        if kind not in ("model", "dataset", "space") or not repo:
            raise UserError(f"--item {item}: expected TYPE:ID with TYPE model, dataset or space")
        extra.append((kind, repo))
    api = HfApi(token=args.token) if args.dry_run else hub_api(args.token)  # reading public cards needs no token
    items = collection_items(api, args.model, extra, revision=args.revision)
    title = args.title or f"{args.model.split('/')[-1]} (hf-llava)"
    plan = {"title": title, "namespace": args.namespace, "description": args.description,
            "items": [{"type": kind, "id": repo, "note": note} for kind, repo, note in items]}
    print(json.dumps(plan, indent=2))
    if args.dry_run:
        from .checkpoint import check_output_dir

        out = check_output_dir(args.dry_run, overwrite=False, name="--dry-run")
        out.mkdir(parents=True, exist_ok=True)
        (Path(out) / "collection.json").write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
        print(f"dry run: nothing created; the plan is in {out / 'collection.json'}")
        return 0
    from huggingface_hub.errors import HfHubHTTPError

    try:
        collection = api.create_collection(title, namespace=args.namespace, description=args.description,
                                           private=args.private, exists_ok=True)
        for kind, repo, note in items:
            api.add_collection_item(collection.slug, repo, kind, note=note or None, exists_ok=True)
    except HfHubHTTPError as error:  # e.g. a namespace the token may not write to; a rerun adds what is missing
        raise UserError(f"collection {title!r}: the Hub refused it ({str(error).splitlines()[0]})") from error
    print(f"collection: {collection.url}")
    return 0


def reference_card_main(argv: list[str] | None = None) -> int:
    from .hub import CARD_INPUTS, portable_inputs, read_card_inputs, reference_card

    parser = argparse.ArgumentParser(
        prog="hub/reference_card.py",
        description="Render the top-level MODEL_CARD.md (the demo model's card) from hub/reference/ "
        "(hf_llava_card.json + results.json); with DEMO_DIR, first copy those two files from a finished "
        "`hf-llava demo` run (DEMO_DIR/stage2-finetune, DEMO_DIR/eval).")
    parser.add_argument("demo_dir", metavar="DEMO_DIR", nargs="?", default=None,
                        help="a finished demo's --output-dir (default: only re-render from hub/reference/)")
    parser.add_argument("--root", default=".", help="the repository checkout (default: the current folder)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when MODEL_CARD.md differs from what the inputs render")
    args = parser.parse_args(argv)
    root = Path(args.root)
    reference = root / "hub" / "reference"
    if args.demo_dir:
        demo = Path(args.demo_dir)
        for needed in (demo / "stage2-finetune" / "config.json", demo / "eval" / "results.json"):
            if not needed.is_file():
                raise UserError(f"DEMO_DIR {demo}: no {needed.relative_to(demo)}; run `hf-llava demo` to the end first")
        inputs = portable_inputs(read_card_inputs(demo / "stage2-finetune"))
        reference.mkdir(parents=True, exist_ok=True)
        (reference / CARD_INPUTS).write_text(json.dumps(inputs, indent=2, ensure_ascii=False) + "\n")
        results = json.loads((demo / "eval" / "results.json").read_text(encoding="utf-8"))
        results["model"] = "stage2-finetune"  # not the machine's path
        (reference / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    card = str(reference_card(read_card_inputs(reference), [reference / "results.json"]))
    target = root / "MODEL_CARD.md"
    if args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != card:
            print(f"{target} differs from the card rendered from {reference}; run `python hub/reference_card.py`")
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(card, encoding="utf-8")
    print(f"wrote {target}")
    return 0
