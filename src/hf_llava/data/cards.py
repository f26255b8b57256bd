"""Dataset cards for built datasets: Hub metadata (license, pretty name, tags; through hf_llava.hub.dataset_card)
plus a body that states the source, the licence, the schema, row counts per config/split and what was skipped as
bad input. Publishing adds the `configs`/`dataset_info` metadata (hf_llava.hub.push_dataset)."""

from __future__ import annotations

import datasets

from .schema import CANONICAL_COLUMNS

_SCHEMA_NOTE = """Every row follows hf-llava's canonical schema (the format TRL and `apply_chat_template` read):

- `id` (string)
- `images` (list of images; empty for text-only rows)
- `messages` (list of `{role: system|user|assistant, content: [{type: "image"|"text", text: string|null}]}`);
  the i-th `{type: "image"}` block refers to `images[i]`."""


def _feature_lines(features: datasets.Features) -> list[str]:
    return [f"- `{name}`: `{feature!r}`" for name, feature in features.items() if name not in CANONICAL_COLUMNS]


def render_card(builder_cls, info: datasets.DatasetInfo, built: dict, report: dict, multi: bool) -> str:
    from ..hub import dataset_card

    title = getattr(builder_cls, "PRETTY_NAME", builder_cls.__name__)
    lines = [f"# {title}", "", (builder_cls.__doc__ or "").strip().split("\n\n")[0], "",
             "## Source", "", builder_cls.SOURCE or "(not stated)", "",
             "## License", "", f"`{builder_cls.LICENSE}`. {builder_cls.LICENSE_NOTE}".strip(), "",
             "## Schema", "", _SCHEMA_NOTE, ""]
    for name, dd in built.items():
        split = next(iter(dd.values()))
        extra = _feature_lines(split.features)
        if extra:
            lines += [f"Additional columns{f' in config `{name}`' if multi else ''}:", "", *extra, ""]
    lines += ["## Counts", "", "| config | split | rows | skipped as bad input |", "|---|---|---|---|"]
    for name, cfg in report["configs"].items():
        for split, s in cfg["splits"].items():
            skipped = str(s["skipped"]) + (f" ({', '.join(f'{k}: {v}' for k, v in s['by_problem'].items())})"
                                           if s["skipped"] else "")
            lines.append(f"| {name} | {split} | {s['rows']} | {skipped} |")
    lines += ["", "Bad records are never dropped silently: without `--skip-bad` the build stops at the first one "
              "with an error naming it; with `--skip-bad` they are counted above."]
    examples = [e for cfg in report["configs"].values() for s in cfg["splits"].values() for e in s["examples"]]
    if examples:
        lines += ["", "First skipped records:", "", *[f"- {e}" for e in examples[:10]]]
    load = ("load_dataset(REPO_ID, CONFIG)" if multi else "load_dataset(REPO_ID)")
    lines += ["", "## Use", "", "```python", "from datasets import load_dataset", f"ds = {load}", "```"]
    if report.get("command"):
        lines += ["", f"Built with: `{report['command']}`"]
    return str(dataset_card("\n".join(lines), pretty_name=title, license=builder_cls.LICENSE))
